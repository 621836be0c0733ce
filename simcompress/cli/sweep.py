"""``simcompress sweep``: compress a generator over a grid and draw the Pareto front."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import GateFailed, app, console
from ._options import CALIBRATION_EVENTS_OPT, FINETUNE_EVENTS_OPT, MEASURE_SECONDS_OPT


@app.command("sweep")
def sweep_cmd(
    model: str | None = typer.Option(None, "--model", "-m", help="Generator bundle or zoo name (or 'model:' in the sweep file)."),
    method: str | None = typer.Option(None, "--method", help="Method to sweep (with --grid), e.g. ptq."),
    grid: list[str] = typer.Option([], "--grid", help="KEY=V1,V2,... (repeatable; Cartesian product), e.g. bits=16,8,6,4."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Sweep YAML (configs/sweeps/*.yaml): several methods and grids."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: sweep.json, sweep.html, points/, picked/."),
    reference: Path | None = typer.Option(None, "--reference", help="Reference showers: fine-tuning data and the incident energies."),
    pick: str | None = typer.Option(None, "--pick", help="Condition on the figures, e.g. 'auc_vs_teacher<=0.55'; writes the chosen bundle to OUT/picked."),
    pick_by: str | None = typer.Option(None, "--pick-by", help="Among the points satisfying --pick: 'storage' (smallest, default) or 'speed' (fastest)."),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="Fine-tuning steps after the step (--method/--grid sweeps)."),
    finetune_lr: float = typer.Option(5e-5, "--finetune-lr"),
    n_events: int = typer.Option(10_000, "--n-events", help="Teacher and student showers per damage measurement."),
    finetune_events: int = FINETUNE_EVENTS_OPT,
    calibration_events: int = CALIBRATION_EVENTS_OPT,
    gate_spec: str = typer.Option("compression", "--gate-spec", help="Validation spec of the damage measurement (preset or YAML)."),
    workers: int = typer.Option(2, "--workers", help="Processes compressing and validating points in parallel."),
    speed_batch: int = typer.Option(10_000, "--speed-batch", help="Batch of the end-to-end showers/s measurement (1 torch thread)."),
    measure_seconds: float = MEASURE_SECONDS_OPT,
    validation_html: bool = typer.Option(True, "--validation-html/--no-validation-html", help="Per-point validation HTML pages."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Sweep compression settings; write the JSON table, the Pareto page and (with --pick) the chosen bundle.

    Exit 1 when no point satisfies --pick (table and page written), 2 on bad input (nothing written).
    """
    from ..compress.sweep import load_sweep, parse_grid, sweep_from_grid
    from ..errors import ConfigError
    from ..workflows import run_sweep

    if (config is None) == (method is None):
        msg = "sweep: give either --config SWEEP.yaml or --method M --grid KEY=V1,V2,..."
        raise ConfigError(msg)
    if config is not None:
        if grid:
            msg = "sweep: --grid goes with --method, not with --config (the file holds the grids)"
            raise ConfigError(msg)
        spec = load_sweep(config)
    else:
        if not grid:
            msg = f"sweep --method {method}: empty grid; give --grid KEY=V1,V2,..."
            raise ConfigError(msg)
        ft = {"steps": finetune_steps, "lr": finetune_lr} if finetune_steps else None
        spec = sweep_from_grid(str(method), parse_grid(grid), finetune=ft)
    model = model or spec.model
    if not model:
        msg = "sweep: --model is required (or 'model:' in the sweep file)"
        raise ConfigError(msg)
    res = run_sweep(
        model, spec, out, reference=reference, n_events=n_events, finetune_events=finetune_events,
        calibration_events=calibration_events, gate_spec=gate_spec, workers=workers, seed=seed,
        speed_batch=speed_batch, measure_seconds=measure_seconds, validation_html=validation_html,
        pick=pick, pick_by=pick_by, progress=lambda m: console.print(m, highlight=False),
    )
    for r in res.records:
        console.print(
            f"  {r['label']:<34} storage x{r['storage_ratio']:6.2f}  speed-up x{r['speedup']:5.2f} ({r['deploy_form']})  "
            f"AUC vs teacher {r['auc_vs_teacher'] if r['auc_vs_teacher'] is None else round(r['auc_vs_teacher'], 3)}",
            highlight=False,
        )
    console.print(f"wrote {out / 'sweep.json'} and {out / 'sweep.html'} ({len(res.records)} points, {res.reused} reused)")
    cond = res.table.get("pick")
    if cond:
        if res.picked is None:
            msg = f"no point satisfies {cond['condition']!r}; see {out / 'sweep.html'}"
            raise GateFailed(msg)
        console.print(f"picked {res.picked['label']} ({cond['condition']}, by {cond['by']}): bundle {out / 'picked'}")
