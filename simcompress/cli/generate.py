"""``simcompress generate``: showers from a generator, into one file or as a sharded (resumable) run."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..errors import ConfigError
from ._app import app, console, err_console
from ._options import PROGRESS_OPT

__all__ = ["generate_command"]

_SHARD_DEFAULT = 100_000


def _print_summary(summary: dict, title: str) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    for key in ("out", "n_events", "n_shards", "generated_shards", "kept_shards", "regenerated_shards",
                "generated_events", "seconds", "overhead_seconds", "showers_per_second", "executor", "n_workers", "model_hash",
                "root_seed", "sha256"):
        if key in summary and summary[key] is not None:
            value = summary[key]
            if isinstance(value, float):
                value = f"{value:,.1f}"
            elif isinstance(value, int) and not isinstance(value, bool):
                value = f"{value:,}"
            table.add_row(key.replace("_", " "), str(value))
    console.print(table)


@app.command("generate")
def generate_command(
    model: str = typer.Option(..., "--model", "-m", help="Model bundle directory or shipped name (ds1-photons-gan, ...)."),
    events: int = typer.Option(..., "--events", "-n", help="Exact number of showers (10_000_000 is accepted)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file, or the run directory of a sharded run."),
    energies: str = typer.Option("ds1", "--energies", "-e", help="ds1 | log-uniform:1e3,1e6 | fixed:65536 | file:ref.root"),
    seed: int = typer.Option(0, "--seed", help="Root seed; the same seed gives the same showers on any executor."),
    format: str | None = typer.Option(None, "--format", help="root (TTree, default) or hdf5 (CaloChallenge)."),
    shard_size: int | None = typer.Option(
        None, "--shard-size", help=f"Showers per shard file; makes a sharded run in --out/ (default {_SHARD_DEFAULT:,} "
        "when --executor/--workers/--scheduler/--cluster is given)."),
    executor: str | None = typer.Option(None, "--executor", help="local (process pool) or dask (LocalCluster, --scheduler or --cluster)."),
    workers: int | None = typer.Option(None, "--workers", "-j", help="Local worker processes (default: CPU count)."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Address of a running Dask scheduler, tcp://host:8786."),
    cluster: Path | None = typer.Option(None, "--cluster", help="Batch-site config, configs/cluster/<site>.yaml (dask-jobqueue)."),
    chunk_size: int = typer.Option(10_000, "--chunk-size", help="Showers per generation/write chunk."),
    torch_threads: int | None = typer.Option(None, "--torch-threads", help="Torch threads per task (default 1 in sharded runs)."),
    backend: str | None = typer.Option(None, "--backend", help="(advanced) module:attribute of another generator/file backend."),
    progress: bool = PROGRESS_OPT,
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse incident energies outside the model's trained range (default: warn and go on)."
    ),
) -> None:
    """Generate showers with a model: one file on this machine, or shards in a run directory.

    A sharded run (--shard-size or any executor option) writes shard_00000.root, ...
    and manifest.json into --out; running the same command again resumes it.
    """
    from ..batch import generate_to_file, run_generation

    if backend is None:
        _check_energy_range(model, energies, strict)
    sharded = any(v is not None for v in (shard_size, executor, workers, scheduler, cluster))
    if sharded:
        if out.suffix.lower() in (".root", ".h5", ".hdf5"):
            msg = f"--out {out}: a sharded run writes a directory, not a {out.suffix} file"
            raise ConfigError(msg)
        fmt = format or "root"
        summary = run_generation(
            model, events, shard_size or _SHARD_DEFAULT, out, seed,
            executor=executor or ("dask" if (scheduler or cluster) else "local"),
            energies=energies, format=fmt, n_workers=workers, scheduler=scheduler, cluster=cluster,
            chunk_size=chunk_size, torch_threads=torch_threads, progress=progress, backend=backend,
        )
        title = f"sharded run {summary.out}"
    else:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        summary = generate_to_file(model, events, out, seed, energies=energies, format=format,
                                   chunk_size=chunk_size, progress=progress, backend=backend)
        title = f"wrote {summary.out}"
    data = summary.to_dict()
    data.pop("shard_seconds", None)
    data.pop("shard_cpu_seconds", None)
    if json_out:
        console.print_json(json.dumps(data))
    else:
        _print_summary(data, title)


def _check_energy_range(model: str, energies: str, strict: bool) -> None:
    """One line ``warning: ...`` (or, with --strict, an error) when --energies leaves the trained range."""
    import warnings

    from ..errors import ExtrapolationWarning, SimcompressError
    from ..generators import load_generator
    from ..showers.energies import parse_energy_spec

    try:
        spec = parse_energy_spec(energies)
        gen = load_generator(model)
    except (SimcompressError, OSError):  # bad --model/--energies: the generation itself reports them, in its own words
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExtrapolationWarning)
        gen.check_energy_range(spec.low_mev, spec.high_mev, strict=strict, source=f"--energies {energies}")
    for w in caught:
        err_console.print(f"[yellow]warning:[/yellow] {w.message} (--strict refuses)", highlight=False, soft_wrap=True)
    if caught:  # said once here; not again for every chunk of this process
        warnings.simplefilter("ignore", ExtrapolationWarning)
