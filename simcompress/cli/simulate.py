"""``simcompress simulate``: reference showers from the built-in GFlash simulator."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, console
from ._options import PROGRESS_OPT

__all__ = ["simulate_command"]


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
    progress: bool = PROGRESS_OPT,
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
