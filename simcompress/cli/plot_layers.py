"""``simcompress plot-layers``: the mean shower of each file, layer by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._app import app, console
from ._options import ENERGY_BRANCH_OPT, ENERGY_UNIT_OPT, TREE_OPT, VOXEL_UNIT_OPT, VOXELS_OPT, read_options

__all__ = ["plot_layers_command"]


@app.command("plot-layers")
def plot_layers_command(
    files: list[str] = typer.Argument(..., help="Shower files (NAME=PATH to label them); one row of layer images each."),
    out: Path = typer.Option(..., "--out", "-o", help="Image file (.png, .pdf, .svg); written atomically."),
    events: int | None = typer.Option(None, "--events", "-n", help="Average over the first N events (default all)."),
    max_layers: int = typer.Option(8, "--max-layers", help="Draw at most this many layers (evenly spread)."),
    geometry: str | None = typer.Option(None, "--geometry", "-g", help="Geometry of files that do not record one."),
    tree: str | None = TREE_OPT,
    energy_branch: str | None = ENERGY_BRANCH_OPT,
    voxels: str | None = VOXELS_OPT,
    energy_unit: str | None = ENERGY_UNIT_OPT,
    voxel_unit: str | None = VOXEL_UNIT_OPT,
) -> None:
    """Draw the mean shower of each file layer by layer (Cartesian cell grids or polar bins)."""
    from ..errors import ConfigError
    from ..showers.io import open_showers
    from ..showers.plots import mean_images, save_layer_images

    if events is not None and events < 1:
        msg = f"--events must be >= 1, got {events}"
        raise ConfigError(msg)
    if max_layers < 1:
        msg = f"--max-layers must be >= 1, got {max_layers}"
        raise ConfigError(msg)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        msg = f"{out}: image suffix {out.suffix or '(none)'!r} is not allowed; allowed: .png, .pdf, .svg"
        raise ConfigError(msg)
    opts = read_options(tree, energy_branch, voxels, energy_unit, voxel_unit)
    readers: dict[str, Any] = {}
    for f in files:
        from ..showers.layout import split_source

        head = f.split("=", 1)[0]
        name, path = (f.split("=", 1) if "=" in f and ";" not in head and not Path(f).exists()
                      else (Path(split_source(f)[0]).stem, f))
        readers[name] = open_showers(path, geometry=geometry, options=opts)
    geo = next(iter(readers.values())).geometry
    for name, r in readers.items():
        if not r.geometry.same_binning(geo):
            msg = f"{name}: geometry {r.geometry.name!r} differs from {geo.name!r}; plot one geometry at a time"
            raise ConfigError(msg)
    written = save_layer_images(out, mean_images(readers, stop=events), geo, max_layers=max_layers)
    console.print(f"wrote layer images of {len(readers)} sample(s) ({geo.name}) to {written}", highlight=False)
