"""``simcompress merge``: the shards of a finished run concatenated into one file."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, console
from ._options import PROGRESS_OPT

__all__ = ["merge_command"]


@app.command("merge")
def merge_command(
    run: Path = typer.Argument(..., help="Run directory of a finished sharded run (holds manifest.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="Merged file (.root or .h5), outside the run directory."),
    format: str | None = typer.Option(None, "--format", help="root or hdf5 (default: from the suffix)."),
    progress: bool = PROGRESS_OPT,
) -> None:
    """Concatenate the shards of a run into one file, checking each shard against the manifest."""
    from ..batch import merge_shards

    result = merge_shards(run, out, format=format, progress=progress)
    console.print(f"merged {result['n_shards']} shards, {result['n_events']:,} showers -> {result['out']}")
