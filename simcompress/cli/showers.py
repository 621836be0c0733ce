"""``simcompress simulate`` and ``simcompress info`` (reference showers and shower files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ._app import app, console

__all__ = ["simulate_command", "info_command", "describe_file"]


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
    format: Optional[str] = typer.Option(  # noqa: A002, UP007 - typer needs Optional
        None, "--format", "-f", help="root or hdf5 (CaloChallenge); default from the --out suffix."
    ),
    layout: str = typer.Option("auto", "--layout", help="ROOT layout: auto (dense up to 2048 voxels), dense, sparse."),
    chunk_size: int = typer.Option(
        0, "--chunk-size", help="Showers simulated per chunk (memory bound); 0 = about 64 MB of voxels per chunk."
    ),
    config: Optional[Path] = typer.Option(  # noqa: UP007
        None, "--config", "-c", help="YAML file with reference-simulator options (step_x0, sampling_term, spot_scale, ...)."
    ),
    step_x0: Optional[float] = typer.Option(  # noqa: UP007
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
        raise ConfigError(f"--events must be >= 1, got {events}")
    if format is None:
        format = file_format(out)  # noqa: A001
    elif format.lower() in ("root", "hdf5"):
        format = format.lower()  # noqa: A001
    else:
        raise ConfigError(f"--format {format!r} is not allowed; allowed: root, hdf5")
    from .._config import load_yaml, parse_config
    from ..showers.geometry import Geometry

    cfg = load_yaml(GFlashConfig, config) if config is not None else GFlashConfig()
    if step_x0 is not None:
        cfg = parse_config(GFlashConfig, {**cfg.model_dump(), "step_x0": step_x0}, source="--step-x0")
    geo = Geometry.from_name(geometry)
    if chunk_size < 0:
        raise ConfigError(f"--chunk-size must be >= 0, got {chunk_size}")
    if chunk_size == 0:
        chunk_size = max(256, (64 << 20) // (4 * geo.n_voxels))
    chunks = iter_simulate(geo, events, energies, seed, chunk_size, progress, config=cfg)
    meta = {"command": "simcompress simulate", "config_file": str(config) if config else None}
    path = write_showers(out, chunks, format=format, layout=layout, metadata=meta)
    console.print(f"wrote {events} showers ({geometry}, energies {energies}, seed {seed}) to {path}", highlight=False)


def describe_file(path: str) -> dict[str, Any]:
    """Summary of a shower file (or folder/glob): geometry, events, energy range, layout, provenance."""
    from ..showers.io import open_showers

    r = open_showers(path)
    e = r.incident_energy()
    m = r.metadata
    return {
        "path": str(path),
        "files": [str(f) for f in r.files],
        "format": ",".join(r.formats),
        "layout": r.layout,
        "geometry": r.geometry.name,
        "geometry_fingerprint": r.geometry.fingerprint,
        "n_layers": r.geometry.n_layers,
        "n_voxels": r.geometry.n_voxels,
        "n_events": r.n_events,
        "incident_energy_mev": {"min": float(e.min()), "max": float(e.max()), "mean": float(e.mean())},
        "n_distinct_energies": int(len(set(e[: min(len(e), 1_000_000)].tolist()))),
        "provenance": m,
    }


@app.command("info")
def info_command(
    files: list[str] = typer.Argument(..., help="Shower files (.root, .h5), folders or glob patterns."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
    full: bool = typer.Option(False, "--full", help="Print the complete provenance (software versions, config)."),
) -> None:
    """Describe shower files: geometry, event count, energy range, layout and provenance."""
    summaries = [describe_file(f) for f in files]
    if as_json:
        console.print_json(json.dumps(summaries if len(summaries) > 1 else summaries[0], default=str))
        return
    for s in summaries:
        prov = s["provenance"]
        e = s["incident_energy_mev"]
        lines = [
            f"[bold]{s['path']}[/bold]" + (f" ({len(s['files'])} files)" if len(s["files"]) > 1 else ""),
            f"  format      {s['format']} ({s['layout']})",
            f"  geometry    {s['geometry']}: {s['n_layers']} layers, {s['n_voxels']} voxels (fingerprint {s['geometry_fingerprint']})",
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
        console.print("\n".join(lines), highlight=False, soft_wrap=True)
