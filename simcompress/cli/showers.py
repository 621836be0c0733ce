"""``simcompress simulate`` and ``simcompress info`` (reference showers and shower files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ._app import app, console, err_console

__all__ = [
    "ENERGY_BRANCH_OPT",
    "ENERGY_UNIT_OPT",
    "TREE_OPT",
    "VOXELS_OPT",
    "VOXEL_UNIT_OPT",
    "convert_command",
    "describe_file",
    "file_statistics",
    "info_command",
    "plot_layers_command",
    "read_options",
    "simulate_command",
]

# Options naming where the showers are in a user's file (simcompress.showers.layout.ReadOptions);
# every command that reads shower files takes them.
TREE_OPT = typer.Option(None, "--tree", help="TTree/RNTuple holding the showers (default: 'showers' or the file's only tree).")
ENERGY_BRANCH_OPT = typer.Option(
    None, "--energy-branch", help="Incident-energy branch/dataset (default: incident_energy, TotalEnergy, energy, E0, ...)."
)
VOXELS_OPT = typer.Option(
    None, "--voxels",
    help="Voxel branches/datasets: comma-separated names or glob patterns, e.g. cells | 'cell_*' | layer_0,layer_1,layer_2.",
)
ENERGY_UNIT_OPT = typer.Option(None, "--energy-unit", help="Unit of the incident energy in the file: eV, keV, MeV (default), GeV, TeV.")
VOXEL_UNIT_OPT = typer.Option(None, "--voxel-unit", help="Unit of the voxel energies in the file (default MeV).")


def read_options(
    tree: str | None = None,
    energy_branch: str | None = None,
    voxels: str | None = None,
    energy_unit: str | None = None,
    voxel_unit: str | None = None,
) -> Any:
    """The CLI's file-layout options as a ``ReadOptions``."""
    from ..showers.layout import ReadOptions

    return ReadOptions.make(tree=tree, energy_branch=energy_branch, voxels=voxels, energy_unit=energy_unit,
                            voxel_unit=voxel_unit)


@app.command("simulate")
def simulate_command(
    out: Path = typer.Option(..., "--out", "-o", help="Output file (.root, .h5 or .hdf5); written atomically."),
    geometry: str = typer.Option(
        "ds1-photons", "--geometry", "-g", help="Built-in geometry (ds1-photons, ds1-pions, ds2, ds3) or a YAML path."
    ),
    events: int = typer.Option(10_000, "--events", "-n", help="Number of showers."),
    seed: int = typer.Option(0, "--seed", help="Random seed (non-negative); results do not depend on --chunk-size."),
    energies: str = typer.Option(
        "ds1", "--energies", "-e", help="Incident energies (MeV): ds1 | log-uniform:LO,HI | fixed:E | discrete:E1,E2 | file:PATH."
    ),
    format: str | None = typer.Option(
        None, "--format", "-f", help="root or hdf5 (CaloChallenge); default from the --out suffix."
    ),
    layout: str = typer.Option("auto", "--layout", help="ROOT layout: auto (dense up to 2048 voxels), dense, sparse."),
    chunk_size: int = typer.Option(
        0, "--chunk-size", help="Showers simulated per chunk (memory bound); 0 = about 64 MB of voxels per chunk."
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file with reference-simulator options (step_x0, sampling_term, spot_scale, ...)."
    ),
    step_x0: float | None = typer.Option(
        None, "--step-x0", help="Longitudinal step inside a layer (radiation lengths); overrides --config."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Simulate reference showers with the GFlash parametrisation and write them to a file.

    The reference is a parametrised electromagnetic stand-in for Geant4 (Grindhammer-Peters),
    not Geant4 itself; it has no hadronic showers.
    """
    from ..errors import ConfigError
    from ..showers.io import file_format, write_showers
    from ..showers.reference import GFlashConfig, iter_simulate

    if events < 1:
        msg = f"--events must be >= 1, got {events}"
        raise ConfigError(msg)
    if format is None:
        format = file_format(out)
    elif format.lower() in ("root", "hdf5"):
        format = format.lower()
    else:
        msg = f"--format {format!r} is not allowed; allowed: root, hdf5"
        raise ConfigError(msg)
    from .._config import load_yaml, parse_config
    from ..showers.geometry import Geometry

    cfg = load_yaml(GFlashConfig, config) if config is not None else GFlashConfig()
    if step_x0 is not None:
        cfg = parse_config(GFlashConfig, {**cfg.model_dump(), "step_x0": step_x0}, source="--step-x0")
    geo = Geometry.from_name(geometry)
    if chunk_size < 0:
        msg = f"--chunk-size must be >= 0, got {chunk_size}"
        raise ConfigError(msg)
    if chunk_size == 0:
        chunk_size = max(256, (64 << 20) // (4 * geo.n_voxels))
    chunks = iter_simulate(geo, events, energies, seed, chunk_size, progress, config=cfg)
    meta = {"command": "simcompress simulate", "config_file": str(config) if config else None}
    path = write_showers(out, chunks, format=format, layout=layout, metadata=meta)
    console.print(f"wrote {events} showers ({geometry}, energies {energies}, seed {seed}) to {path}", highlight=False)


def _layer_shapes(geometry: Any) -> str:
    """``"3x96 12x12 12x6"``, or ``"25 x 25x25"`` when all layers match; empty for cylinders."""
    if geometry.kind != "cartesian":
        return ""
    shapes = [f"{a}x{b}" for a, b in (layer.shape for layer in geometry.layers)]
    return f"{len(shapes)} x {shapes[0]}" if len(set(shapes)) == 1 and len(shapes) > 2 else " ".join(shapes)


def describe_file(path: str, geometry: str | None = None, options: Any = None) -> dict[str, Any]:
    """Summary of a shower file (or folder/glob): geometry, events, energy range, layout, provenance."""
    from ..showers.io import open_showers

    r = open_showers(path, geometry=geometry, options=options)
    e = r.incident_energy()
    m = r.metadata
    return {
        "path": str(path),
        "files": [str(f) for f in r.files],
        "format": ",".join(r.formats),
        "layout": r.layout,
        "source": r.source_layout,
        "geometry": r.geometry.name,
        "geometry_fingerprint": r.geometry.fingerprint,
        "n_layers": r.geometry.n_layers,
        "geometry_kind": r.geometry.kind,
        "layer_shapes": _layer_shapes(r.geometry),
        "n_voxels": r.geometry.n_voxels,
        "n_events": r.n_events,
        "incident_energy_mev": {"min": float(e.min()), "max": float(e.max()), "mean": float(e.mean())},
        "n_distinct_energies": len(set(e[: min(len(e), 1_000_000)].tolist())),
        "provenance": m,
    }


def file_statistics(path: str, progress: bool = False, geometry: str | None = None, options: Any = None) -> dict[str, Any]:
    """Stream a shower file once: mean and spread of E_dep/E_inc and the mean energy fraction per layer."""
    import numpy as np

    from ..showers.io import open_showers

    r = open_showers(path, geometry=geometry, options=options)
    n = 0
    s1 = s2 = 0.0
    layer_sum = np.zeros(r.geometry.n_layers)
    total = 0.0
    nonzero = 0
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(console=err_console, transient=True)
        bar.start()
        task = bar.add_task("reading", total=r.n_events)
    try:
        for chunk in r.iterate():
            ratio = chunk.total_energy / chunk.incident_energy
            n += len(chunk)
            s1 += float(ratio.sum())
            s2 += float((ratio**2).sum())
            layer_sum += chunk.layer_energies().sum(axis=0)
            total += float(chunk.total_energy.sum())
            nonzero += int(np.count_nonzero(chunk.showers))
            if bar is not None:
                bar.advance(task, len(chunk))
    finally:
        if bar is not None:
            bar.stop()
    mean = s1 / n
    return {
        "e_dep_over_e_inc_mean": mean,
        "e_dep_over_e_inc_std": float(np.sqrt(max(s2 / n - mean**2, 0.0))),
        "layer_energy_fraction": {
            str(layer.id): float(x / total) if total > 0 else 0.0 for layer, x in zip(r.geometry.layers, layer_sum, strict=False)
        },
        "voxel_occupancy": nonzero / (n * r.geometry.n_voxels),
    }


@app.command("info")
def info_command(
    files: list[str] = typer.Argument(..., help="Shower files (.root, .h5), folders or glob patterns."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
    full: bool = typer.Option(False, "--full", help="Print the complete provenance (software versions, config)."),
    stats: bool = typer.Option(False, "--stats", help="Also read all showers: E_dep/E_inc, layer fractions, occupancy."),
    geometry: str | None = typer.Option(
        None, "--geometry", "-g", help="Geometry of files that do not record one (name or YAML/XML path)."
    ),
    tree: str | None = TREE_OPT,
    energy_branch: str | None = ENERGY_BRANCH_OPT,
    voxels: str | None = VOXELS_OPT,
    energy_unit: str | None = ENERGY_UNIT_OPT,
    voxel_unit: str | None = VOXEL_UNIT_OPT,
) -> None:
    """Describe shower files: geometry, event count, energy range, layout and provenance.

    Files written by other tools are read too: name the tree, branches and units with
    --tree, --energy-branch, --voxels, --energy-unit, --voxel-unit (see docs/showers.md).
    """
    opts = read_options(tree, energy_branch, voxels, energy_unit, voxel_unit)
    summaries = [describe_file(f, geometry, opts) for f in files]
    if stats:
        for s in summaries:
            s["statistics"] = file_statistics(s["path"], progress=not as_json, geometry=geometry, options=opts)
    if as_json:
        console.print_json(json.dumps(summaries if len(summaries) > 1 else summaries[0], default=str))
        return
    for s in summaries:
        prov = s["provenance"]
        e = s["incident_energy_mev"]
        lines = [
            f"[bold]{s['path']}[/bold]" + (f" ({len(s['files'])} files)" if len(s["files"]) > 1 else ""),
            f"  format      {s['format']} ({s['layout']})",
            "  read from   " + ", ".join(f"{k} {v}" for k, v in s["source"].items()),
            f"  geometry    {s['geometry']}: {s['n_layers']} layers, {s['n_voxels']} voxels (fingerprint {s['geometry_fingerprint']})"
            + (f", Cartesian {s['layer_shapes']}" if s.get("layer_shapes") else ""),
            f"  events      {s['n_events']}",
            f"  E_inc       {e['min']:.6g} .. {e['max']:.6g} MeV (mean {e['mean']:.6g}, {s['n_distinct_energies']} distinct)",
        ]
        if prov:
            for key in ("generator", "seed", "energies", "created", "content_hash"):
                if key in prov:
                    lines.append(f"  {key:<11} {prov[key]}")
            soft = prov.get("software", {})
            if soft:
                lines.append("  software    " + ", ".join(f"{k} {v}" for k, v in soft.items() if k in ("simcompress", "numpy", "uproot")))
            if full:
                lines.append("  provenance  " + json.dumps(prov, indent=2, sort_keys=True, default=str).replace("\n", "\n  "))
        else:
            lines.append("  provenance  (none: plain CaloChallenge file, geometry inferred from the voxel count)")
        if "statistics" in s:
            st = s["statistics"]
            lines.append(
                f"  E_dep/E_inc {st['e_dep_over_e_inc_mean']:.4f} +- {st['e_dep_over_e_inc_std']:.4f} (std), "
                f"voxel occupancy {st['voxel_occupancy']:.3f}"
            )
            lines.append(
                "  layers      " + ", ".join(f"{k}: {v:.3f}" for k, v in st["layer_energy_fraction"].items())
            )
        console.print("\n".join(lines), highlight=False, soft_wrap=True)


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
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
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
    meta = {"converted_from": [str(f) for f in reader.files]}
    if not opts.is_default:
        meta["converted_with"] = reader.source_layout
    n = reader.n_events if stop is None else min(stop, reader.n_events)

    def chunks() -> Any:
        from rich.progress import Progress

        with Progress(console=err_console, transient=True, disable=not progress) as bar:
            task = bar.add_task("converting", total=n)
            for chunk in reader.iterate(stop=stop):
                yield chunk
                bar.advance(task, len(chunk))

    path = write_showers(out, chunks(), format=format.lower() if format else None, layout=layout,
                         geometry=reader.geometry, metadata=meta)
    console.print(f"converted {n} showers from {len(reader.files)} file(s) to {path}", highlight=False)


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
    path = save_layer_images(out, mean_images(readers, stop=events), geo, max_layers=max_layers)
    console.print(f"wrote layer images of {len(readers)} sample(s) ({geo.name}) to {path}", highlight=False)
