"""``simcompress train``: train a GAN or flow generator into a bundle (:func:`simcompress.workflows.train.train_on_reference`)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import IO

import typer

from ._app import app, console
from ._options import PROGRESS_OPT

__all__ = ["train"]


@app.command()
def train(
    kind: str = typer.Argument(..., help="Generator kind: gan or flow."),
    data: Path | None = typer.Option(None, "--data", help="Reference shower file(s) (ROOT/HDF5/folder/glob)."),
    reference_events: int = typer.Option(
        0, "--reference-events", help="Instead of --data: simulate this many reference showers with the built-in GFlash simulator (energies: --reference-energies)."
    ),
    reference_seed: int = typer.Option(1, "--reference-seed", help="Seed of the simulated reference sample."),
    reference_energies: str = typer.Option("ds1", "--reference-energies", help="Energy spec of the simulated reference sample."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Training recipe YAML (configs/generators/*.yaml)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output bundle directory (checkpoints go to OUT/checkpoints)."),
    steps: int | None = typer.Option(None, "--steps", help="Override the recipe's number of steps."),
    seed: int | None = typer.Option(None, "--seed", help="Override the recipe's seed."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda (default: the recipe's, auto)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/checkpoints if present."),
    progress: bool = PROGRESS_OPT,
    log_file: Path | None = typer.Option(None, "--log", help="Append JSON monitor lines to this file."),
) -> None:
    """Train a generator (gan|flow) on reference showers and write its bundle to OUT."""
    from ..workflows.train import train_on_reference

    overrides = {k: v for k, v in {"steps": steps, "seed": seed, "device": device}.items() if v is not None}
    command = "simcompress " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if Path(sys.argv[0]).name == "simcompress" else None
    logf: IO[str] | None = None

    def monitor(line: str, path: Path) -> None:  # the file opens with the first line: a run refused before training leaves none
        nonlocal logf
        if logf is None:
            logf = open(path, "a")  # noqa: SIM115 (closed below)
        logf.write(line + "\n")
        logf.flush()

    try:
        gen = train_on_reference(
            kind, out, data=data, reference_events=reference_events, reference_seed=reference_seed,
            reference_energies=reference_energies, config=config, overrides=overrides, resume=resume, progress=progress,
            command=command, log=(lambda line: monitor(line, log_file)) if log_file is not None else None,
        )
    finally:
        if logf is not None:
            logf.close()
    from ..generators.bundle import bundle_hash

    card_fid = json.loads((out / "card.json").read_text()).get("fidelity_heldout", {})
    console.print(f"wrote {out} ({gen.kind}, bundle {bundle_hash(out)[:12]})")
    if card_fid:
        console.print(
            f"held-out: max |Δ<E>/E| {card_fid['max_abs_mean_dev_pct']:.2f} %, max |Δσ/σ| {card_fid['max_abs_resolution_dev_pct']:.1f} %, "
            f"max |Δ layer fraction| {card_fid['max_abs_layer_fraction_dev']:.4f}"
        )
