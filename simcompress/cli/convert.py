"""``simcompress convert``: shower files between ROOT and CaloChallenge HDF5."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from .._progress import progress_bar
from ._app import app, console
from ._options import (
    ENERGY_BRANCH_OPT,
    ENERGY_UNIT_OPT,
    PROGRESS_OPT,
    TREE_OPT,
    VOXEL_UNIT_OPT,
    VOXELS_OPT,
    read_options,
)

__all__ = ["convert_command"]


@app.command("convert")
def convert_command(
    source: list[str] = typer.Argument(..., help="Input shower files, folders or globs (read together, in order)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file (.root, .h5 or .hdf5); written atomically."),
    format: str | None = typer.Option(
        None, "--format", "-f", help="root or hdf5; default from the --out suffix."
    ),
    layout: str = typer.Option("auto", "--layout", help="ROOT layout: auto, dense, sparse."),
    geometry: str | None = typer.Option(
        None, "--geometry", "-g", help="Geometry of input files that do not record one (e.g. sparse files)."
    ),
    stop: int | None = typer.Option(None, "--stop", help="Convert only the first N events."),
    progress: bool = PROGRESS_OPT,
    tree: str | None = TREE_OPT,
    energy_branch: str | None = ENERGY_BRANCH_OPT,
    voxels: str | None = VOXELS_OPT,
    energy_unit: str | None = ENERGY_UNIT_OPT,
    voxel_unit: str | None = VOXEL_UNIT_OPT,
) -> None:
    """Convert shower files between ROOT and CaloChallenge HDF5 (merging several inputs into one file).

    The decoded arrays are unchanged (the content hash in the output equals the input's);
    the provenance of the first input is kept, with ``converted_from`` added.
    """
    from ..errors import ConfigError
    from ..showers.io import open_showers, write_showers

    if format is not None and format.lower() not in ("root", "hdf5"):
        msg = f"--format {format!r} is not allowed; allowed: root, hdf5"
        raise ConfigError(msg)
    if stop is not None and stop < 1:
        msg = f"--stop must be >= 1, got {stop}"
        raise ConfigError(msg)
    opts = read_options(tree, energy_branch, voxels, energy_unit, voxel_unit)
    reader = open_showers(source if len(source) > 1 else source[0], geometry=geometry, options=opts)
    out_resolved = out.resolve()
    if any(f.resolve() == out_resolved for f in reader.files):
        msg = f"{out}: the output is one of the inputs; write to another file"
        raise ConfigError(msg)
    meta: dict[str, Any] = {"converted_from": [str(f) for f in reader.files]}
    if not opts.is_default:
        meta["converted_with"] = reader.source_layout
    n = reader.n_events if stop is None else min(stop, reader.n_events)

    def chunks() -> Iterator[Any]:
        with progress_bar("converting", n, enabled=progress, transient=True) as bar:
            for chunk in reader.iterate(stop=stop):
                yield chunk
                bar.advance(len(chunk))

    path = write_showers(out, chunks(), format=format.lower() if format else None, layout=layout,
                         geometry=reader.geometry, metadata=meta)
    console.print(f"converted {n} showers from {len(reader.files)} file(s) to {path}", highlight=False)
