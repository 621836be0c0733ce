"""``simcompress compress``: run a compression recipe on a shower generator (:func:`simcompress.workflows.run_recipe`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import GateFailed, app, console
from ._options import CALIBRATION_EVENTS_OPT, FINETUNE_EVENTS_OPT, MEASURE_SECONDS_OPT


@app.command("compress")
def compress_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Generator bundle directory or zoo name (e.g. ds1-photons-gan)."),
    recipe: Path = typer.Option(..., "--recipe", "-r", help="Compression recipe YAML (configs/compress/*.yaml)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: compressed bundle, report.json/.md, validation/."),
    reference: Path | None = typer.Option(None, "--reference", help="Reference showers (ROOT/HDF5) for the gate, fine-tuning and validation."),
    gate_spec: str = typer.Option(
        "compression", "--gate-spec",
        help="Validation gate preset or YAML. The default preset 'compression' passes a check when the model is "
        "within the reference noise floor rule or not much worse than the uncompressed model (baseline rule).",
    ),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="Evaluate the fidelity gate after each step (needs --reference)."),
    n_events: int = typer.Option(10_000, "--n-events", help="Showers sampled per gate evaluation and for the validation report."),
    finetune_events: int = FINETUNE_EVENTS_OPT,
    calibration_events: int = CALIBRATION_EVENTS_OPT,
    report_samples: int = typer.Option(2048, "--report-samples", help="Showers per call when counting operations."),
    deploy_batch: int = typer.Option(
        10_000, "--deploy-batch",
        help="Batch at which the execution forms (baked float, torch int8, ONNX Runtime int8, sparse) are measured; "
        "the fastest faithful one is recorded in the bundle and is the throughput figure (end-to-end sample()).",
    ),
    measure_seconds: float = MEASURE_SECONDS_OPT,
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Also measure ONNX Runtime float32 and int8 forms."),
    validation_html: bool = typer.Option(True, "--validation-html/--no-validation-html",
                                         help="Write the validation report's HTML page with plots (metrics.json always)."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(0, "--threads", help="torch threads for compressing and fine-tuning (0: leave as is); the report measures throughput on one thread."),
) -> None:
    """Compress a shower generator with a recipe; write bundle, report and validation report.

    Exit code 1 when the gate fails (report and the rejected student in OUT/rejected-student, marked REJECTED; no bundle), 2 on bad input.
    """
    from ..workflows.recipe import REJECTED_DIR, run_recipe

    if threads:
        import torch

        torch.set_num_threads(threads)
    res = run_recipe(
        model, recipe, reference=reference, gate_spec=gate_spec, gate=gate, n_events=n_events,
        finetune_events=finetune_events, calibration_events=calibration_events, report_samples=report_samples,
        deploy_batch=deploy_batch, measure_seconds=measure_seconds, onnx=onnx, validation_html=validation_html,
        seed=seed, say=console.print, status=console.status,
    )
    res.write(out)
    if not res.passed:
        msg = (
            f"step {res.pipeline.stopped_at} failed the gate; report and rejected student in {out} "
            f"({out / REJECTED_DIR}, marked REJECTED; no bundle written)"
        )
        raise GateFailed(msg)
    r = res.report["ratios"]
    console.print(
        f"wrote {out}: storage {r['storage']:.2f}x smaller, throughput x{r['throughput']:.2f} "
        f"({res.report['throughput_unit']}), bundle {('{:.2f}x'.format(r['bundle'])) if r['bundle'] else 'n/a'} smaller"
    )
    validation_dir = out / "validation"
    console.print(f"report: {out / 'report.html'}" + (f"; validation report: {validation_dir / 'report.html'}" if validation_dir.exists() else ""))
