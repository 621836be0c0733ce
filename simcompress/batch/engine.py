"""Sharded, reproducible, resumable shower generation; single-file generation; merging shards."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._progress import progress_bar
from .._provenance import software_versions, utc_now
from ..errors import ConfigError, ShowerFileError
from ..showers.io.hashing import ContentHasher
from ._backend import DEFAULT_BACKEND, get_backend
from .cluster import ClusterConfig, load_cluster_config
from .executors import make_runner
from .manifest import MANIFEST_NAME, Manifest, shard_filename
from .seeds import check_seed
from .worker import PARTIAL_DIR, ShardJob, generate_shard, verify_shard

__all__ = ["FORMATS", "GenerationSummary", "generate_to_file", "merge_shards", "run_generation"]

log = logging.getLogger(__name__)
FORMATS = ("root", "hdf5")


@dataclass
class GenerationSummary:
    """What a generation run did (returned by :func:`run_generation` and :func:`generate_to_file`).

    ``seconds`` is the generation phase (workers up: model loads, generation, writing, checks);
    ``overhead_seconds`` the worker start-up, connection and shutdown around it.
    ``showers_per_second`` counts only showers generated in this call (not kept shards).
    """

    out: str
    n_events: int
    n_shards: int
    generated_shards: int
    kept_shards: int
    regenerated_shards: int
    generated_events: int
    seconds: float
    executor: str
    n_workers: int
    model_hash: str
    root_seed: int
    sha256: str | None = None
    overhead_seconds: float = 0.0
    shard_seconds: list[float] = field(default_factory=list)
    shard_cpu_seconds: list[float] = field(default_factory=list)
    #: batch-system runs: ``submit_s`` (job submission), ``first_worker_s`` (submission to the first
    #: connected worker, included in ``overhead_seconds``) and ``job_ids``; empty otherwise
    startup: dict[str, Any] = field(default_factory=dict)

    @property
    def showers_per_second(self) -> float:
        return self.generated_events / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "showers_per_second": self.showers_per_second}


def _format_for(out: Path, format: str | None) -> str:
    suffix = out.suffix.lower()
    if format is not None:
        if format not in FORMATS:
            msg = f"--format: {format!r} is not allowed; allowed: {', '.join(FORMATS)}"
            raise ConfigError(msg)
        implied = {".root": "root", ".h5": "hdf5", ".hdf5": "hdf5"}.get(suffix)
        if implied is not None and implied != format:
            msg = f"--out {out}: a {suffix} file cannot hold --format {format}"
            raise ConfigError(msg)
        return format
    if suffix == ".root":
        return "root"
    if suffix in (".h5", ".hdf5"):
        return "hdf5"
    msg = f"--out {out}: cannot tell the format from the suffix {suffix!r}; use .root, .h5 or --format"
    raise ConfigError(msg)


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        msg = f"{name}: must be a positive integer, got {value!r}"
        raise ConfigError(msg)
    return value


# --------------------------------------------------------------------------------------
# sharded runs
# --------------------------------------------------------------------------------------
def run_generation(
    model_path: str | os.PathLike[str],
    n_events: int,
    shard_size: int,
    out_dir: str | os.PathLike[str],
    seed: int,
    executor: str = "local",
    *,
    energies: str = "ds1",
    format: str = "root",
    n_workers: int | None = None,
    scheduler: str | None = None,
    cluster: ClusterConfig | str | os.PathLike[str] | None = None,
    chunk_size: int = 10_000,
    torch_threads: int | None = None,
    retries: int = 2,
    memory_limit: str | None = None,
    progress: bool = False,
    backend: str | None = None,
) -> GenerationSummary:
    """Generate ``n_events`` showers into shard files ``out_dir/shard_00000.root``, ... and ``manifest.json``.

    Shard ``i`` holds ``min(shard_size, n_events - i * shard_size)`` events drawn from
    the seed stream ``numpy.random.SeedSequence(seed).spawn(n_shards)[i]``, so the
    same ``seed`` gives the same arrays whatever the executor or the number of
    workers. Running again on the same directory resumes: shards whose decoded
    content matches the manifest are kept, missing or corrupt ones regenerated.

    Arguments:
        model_path: model bundle directory or shipped model name; workers get the
            path plus its bundle hash and load it once per process.
        n_events: exact total number of showers.
        shard_size: showers per shard file (the last shard may be smaller).
        out_dir: run directory (created).
        seed: root seed.
        executor: ``"local"`` (process pool) or ``"dask"`` (``LocalCluster`` unless
            ``scheduler`` or ``cluster`` is given).
        energies: incident-energy spec (``ds1``, ``log-uniform:1e3,1e6``, ``file:ref.root``).
        format: ``"root"`` (TTree) or ``"hdf5"`` (CaloChallenge layout).
        n_workers: local worker processes (default: CPU count, at most the number of shards).
        scheduler: address of a running Dask scheduler (``tcp://host:8786``).
        cluster: a :class:`ClusterConfig` or the path of its YAML file (dask-jobqueue).
        chunk_size: showers per generation/write chunk inside a shard.
        torch_threads: torch intra-op threads per task (default 1: parallelism comes from processes).
        retries: retries of a failing shard task.
        memory_limit: per-worker memory limit of the local Dask cluster.
        progress: show a progress bar.
        backend: ``"module:attribute"`` of an alternative :class:`~simcompress.batch._backend.Backend`.

    Returns:
        :class:`GenerationSummary`.
    """
    n_events = _positive("--events", n_events)
    shard_size = _positive("--shard-size", shard_size)
    chunk_size = _positive("--chunk-size", chunk_size)
    seed = check_seed(seed)
    if format not in FORMATS:
        msg = f"--format: {format!r} is not allowed; allowed: {', '.join(FORMATS)}"
        raise ConfigError(msg)
    if executor not in ("local", "dask"):
        msg = f"--executor: {executor!r} is not allowed; allowed: dask, local"
        raise ConfigError(msg)
    if cluster is not None and not isinstance(cluster, ClusterConfig):
        cluster = load_cluster_config(cluster)
    backend_spec = backend or DEFAULT_BACKEND
    be = get_backend(backend_spec)

    model_ref = be.model_ref_for_workers(str(model_path))
    model_hash = be.model_hash(model_ref)
    energies = be.check_energies(energies)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        msg = f"--out {out}: exists and is not a directory (sharded runs write a directory)"
        raise ConfigError(msg)
    n_shards = math.ceil(n_events / shard_size)
    if torch_threads is None:
        torch_threads = cluster.task_torch_threads if isinstance(cluster, ClusterConfig) else 1
    torch_threads = _positive("--torch-threads", torch_threads)

    config = {
        "model_hash": model_hash, "n_events": n_events, "shard_size": shard_size, "n_shards": n_shards,
        "energies": energies, "root_seed": seed, "format": format, "chunk_size": chunk_size, "backend": backend_spec,
        "seeding": "numpy.random.SeedSequence(root_seed).spawn(n_shards)[i] -> shard i",
    }
    manifest = Manifest.load(out) if out.is_dir() else None
    if manifest is not None:
        manifest.check_same_run(config)
    else:
        stray = sorted(out.glob("shard_*")) if out.is_dir() else []
        if stray:
            msg = f"--out {out}: holds shard files ({stray[0].name}, ...) but no {MANIFEST_NAME}; use an empty directory"
            raise ConfigError(msg)
    if executor == "local" and (scheduler or cluster is not None):
        msg = "--scheduler and --cluster need --executor dask"
        raise ConfigError(msg)
    if scheduler and cluster is not None:
        msg = "give either --scheduler or --cluster, not both"
        raise ConfigError(msg)
    workers = _positive("--workers", n_workers or min(os.cpu_count() or 1, n_shards))
    t_startup = time.perf_counter()
    verified = _verify_on_client(manifest, out, n_shards, backend_spec) if manifest is not None else {}
    # workers (or the connection to them) before any write: nothing is written if they cannot start
    runner: Any
    if len(verified) == n_shards:
        runner = _NoWorkers()
    else:
        runner = make_runner(executor, n_workers=workers, torch_threads=torch_threads,
                             scheduler=scheduler, cluster=cluster, memory_limit=memory_limit)
    try:
        runner.warm(torch_threads, backend_spec)
        summary = _run_shards(runner, manifest, out, config, model_path, model_ref, model_hash, energies, seed,
                              n_events, shard_size, n_shards, format, chunk_size, torch_threads, backend_spec,
                              executor, workers, retries, progress, verified)
    finally:
        runner.close()
    summary.overhead_seconds = time.perf_counter() - t_startup - summary.seconds
    summary.startup = dict(getattr(runner, "startup", {}) or {})
    return summary


#: a resumed run whose recorded shards total at most this many bytes is verified in the client
#: process (no workers are started when every shard checks out); larger runs verify in the tasks.
CLIENT_VERIFY_BYTES = 256 * 1024**2


class _NoWorkers:
    """Stands in for a runner when every shard was verified on the client."""

    description = "none (every shard verified)"
    n_workers = 0

    def warm(self, torch_threads: int, backend: str | None = None) -> None:
        pass

    def run(self, fn: Any, jobs: list[Any], on_result: Any, retries: int = 2) -> None:
        if jobs:  # pragma: no cover - guarded by the caller
            msg = "no workers for pending shards"
            raise RuntimeError(msg)

    def close(self) -> None:
        pass


def _verify_on_client(manifest: Manifest, out: Path, n_shards: int, backend_spec: str) -> dict[int, dict[str, Any]]:
    """Check recorded shards here when they are small in total; returns ``{index: entry}`` of the good ones."""
    recorded = {i: e for i in range(n_shards) if (e := manifest.shard(i)) is not None}
    size = sum((out / e["file"]).stat().st_size for e in recorded.values() if (out / e["file"]).is_file())
    if not recorded or size > CLIENT_VERIFY_BYTES:
        return {}
    good = {}
    for i, e in recorded.items():
        ok, reason = verify_shard(out / e["file"], e["sha256"], backend_spec)
        if ok:
            good[i] = e
        else:
            log.info("shard %d: %s; it will be regenerated", i, reason)
    return good


def _run_shards(runner: Any, manifest: Manifest | None, out: Path, config: dict[str, Any], model_path: Any,
                model_ref: str, model_hash: str, energies: str, seed: int, n_events: int, shard_size: int,
                n_shards: int, format: str, chunk_size: int, torch_threads: int, backend_spec: str,
                executor: str, n_workers: int, retries: int, progress: bool,
                verified: dict[int, dict[str, Any]]) -> GenerationSummary:
    if manifest is None:
        out.mkdir(parents=True, exist_ok=True)
        manifest = Manifest.new(out, config, {"ref": str(model_path), "path": model_ref, "bundle_hash": model_hash})
    # shards being written by a run that was killed: never final, safe to drop
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    manifest.data["history"].append({"started": utc_now(), "executor": runner.description,
                                     "software_versions": software_versions(),
                                     **({"batch_jobs": list(runner.startup["job_ids"])}
                                        if getattr(runner, "startup", {}).get("job_ids") else {})})
    manifest.write()

    provenance = {
        "model": str(model_path), "bundle_hash": model_hash, "energies": energies, "root_seed": seed,
        "n_events": n_events, "shard_size": shard_size, "n_shards": n_shards, "run": str(out),
        "software_versions": software_versions(),
    }
    jobs = []
    recorded = {}
    for i in range(n_shards):
        entry = manifest.shard(i)
        recorded[i] = entry is not None
        if i in verified:
            continue
        jobs.append(ShardJob(
            out_dir=str(out), shard_index=i, n_events=min(shard_size, n_events - i * shard_size),
            filename=shard_filename(i, format), format=format, model_ref=model_ref, model_hash=model_hash,
            energies=energies, root_seed=seed, chunk_size=chunk_size, torch_threads=torch_threads,
            backend=backend_spec, expected_sha256=entry["sha256"] if entry else None, provenance=provenance,
        ))

    counts = {"generated": 0, "kept": 0, "regenerated": 0, "events": 0}
    shard_seconds: list[float] = []
    shard_cpu: list[float] = []
    bars = contextlib.ExitStack()
    bar = bars.enter_context(progress_bar(f"generating {n_shards} shard{'s' if n_shards > 1 else ''}", n_events,
                                          enabled=progress, rate_unit="showers"))
    last_write = [time.monotonic()]

    def on_result(res: dict[str, Any]) -> None:
        i = int(res["shard"])
        if res["status"] == "kept":
            counts["kept"] += 1
            bar.advance(int(res["n_events"]), rated=False)  # found done: not part of this run's rate
        else:
            counts["generated"] += 1
            counts["events"] += int(res["n_events"])
            shard_seconds.append(float(res["seconds"]))
            shard_cpu.append(float(res.get("cpu_seconds", float("nan"))))
            if recorded[i]:
                counts["regenerated"] += 1
                log.warning("shard %d was %s and has been regenerated", i, res.get("reason", "invalid"))
            bar.advance(int(res["n_events"]))
        manifest.record(res)
        if time.monotonic() - last_write[0] > 2.0:
            manifest.write()
            last_write[0] = time.monotonic()

    for i, entry in verified.items():
        on_result({"shard": i, "status": "kept", "file": entry["file"], "n_events": entry["n_events"],
                   "sha256": entry["sha256"]})
    t_run = time.perf_counter()
    try:
        runner.run(generate_shard, jobs, on_result, retries=retries)
        n_workers_seen = runner.n_workers
    finally:
        bars.close()
        manifest.write()
    seconds = time.perf_counter() - t_run
    if manifest.missing() or manifest.done_events() != n_events:
        msg = f"{manifest.path}: run incomplete ({len(manifest.missing())} shards missing)"
        raise ShowerFileError(msg)
    # half-written files of workers that died: every shard is final now
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    manifest.data["history"][-1].update({"finished": utc_now(), "seconds": round(seconds, 3),
                                         "generated_shards": counts["generated"], "kept_shards": counts["kept"],
                                         "regenerated_shards": counts["regenerated"]})
    manifest.write()
    return GenerationSummary(
        out=str(out), n_events=n_events, n_shards=n_shards, generated_shards=counts["generated"],
        kept_shards=counts["kept"], regenerated_shards=counts["regenerated"], generated_events=counts["events"],
        seconds=seconds, executor=runner.description, n_workers=n_workers_seen if isinstance(runner, _NoWorkers) else (n_workers_seen or n_workers),
        model_hash=model_hash,
        root_seed=seed, shard_seconds=shard_seconds, shard_cpu_seconds=shard_cpu,
    )


# --------------------------------------------------------------------------------------
# one file on this machine
# --------------------------------------------------------------------------------------
def generate_to_file(
    model: str | os.PathLike[str],
    n_events: int,
    out: str | os.PathLike[str],
    seed: int,
    *,
    energies: str = "ds1",
    format: str | None = None,
    chunk_size: int = 10_000,
    progress: bool = False,
    backend: str | None = None,
) -> GenerationSummary:
    """Generate ``n_events`` showers in this process into one file (ROOT or HDF5), in chunks.

    The file's provenance records the bundle hash, the seed, the energy spec, the
    software versions and the content hash of the arrays.
    """
    t0 = time.perf_counter()
    n_events = _positive("--events", n_events)
    chunk_size = _positive("--chunk-size", chunk_size)
    seed = check_seed(seed)
    out_path = Path(out).expanduser()
    fmt = _format_for(out_path, format)
    if out_path.is_dir():
        msg = f"--out {out_path}: is a directory; give a file name, or --shard-size for a sharded run"
        raise ConfigError(msg)
    be = get_backend(backend)
    model_hash = be.model_hash(str(model))
    energies = be.check_energies(energies)
    gen = be.load_model(str(model))
    if hasattr(gen, "eval"):
        gen.eval()
    hasher = ContentHasher()
    bars = contextlib.ExitStack()
    bar = bars.enter_context(progress_bar("generating", n_events, enabled=progress, rate_unit="showers"))

    def chunks() -> Iterator[Any]:
        for chunk in be.iter_showers(gen, n_events, energies, seed, chunk_size):
            hasher.update(chunk.incident_energy, chunk.showers)
            bar.advance(len(chunk))
            yield chunk

    metadata = {
        "generator": {"ref": str(model), "bundle_hash": model_hash, **be.model_info(gen)},
        "seed": seed, "energies": energies, "n_events": n_events, "chunk_size": chunk_size,
        "software_versions": software_versions(), "created": utc_now(),
    }
    import torch

    try:
        with torch.inference_mode():
            be.write(out_path, chunks(), format=fmt, metadata=metadata)
    finally:
        bars.close()
    if hasher.n_events != n_events:
        msg = f"{out_path}: generator produced {hasher.n_events} events, expected {n_events}"
        raise ShowerFileError(msg)
    seconds = time.perf_counter() - t0
    return GenerationSummary(
        out=str(out_path), n_events=n_events, n_shards=1, generated_shards=1, kept_shards=0, regenerated_shards=0,
        generated_events=n_events, seconds=seconds, executor="this process", n_workers=1, model_hash=model_hash,
        root_seed=seed, sha256=hasher.hexdigest(),
    )


# --------------------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------------------
def merge_shards(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    format: str | None = None,
    step: int = 100_000,
    progress: bool = False,
) -> dict[str, Any]:
    """Concatenate the shards of a finished run, in shard order, into one file.

    Each shard's decoded arrays are checked against the manifest while they are
    copied; a mismatch aborts the merge and leaves no output file.
    """
    run = Path(run_dir).expanduser().resolve()
    manifest = Manifest.load(run) if run.is_dir() else None
    if manifest is None:
        msg = f"{run}: no {MANIFEST_NAME}; not a simcompress batch run directory"
        raise ConfigError(msg)
    missing = manifest.missing()
    if missing:
        msg = (
            f"{run}: run incomplete, {len(missing)} of {manifest.n_shards} shards missing (first: {missing[0]}); "
            "rerun the generate command to resume"
        )
        raise ConfigError(msg)
    out_path = Path(out).expanduser().resolve()
    if out_path.parent == run or run in out_path.parents:
        msg = f"--out {out_path}: must be outside the run directory (its shard files are read as a set)"
        raise ConfigError(msg)
    fmt = _format_for(out_path, format)
    backend = get_backend(manifest.config.get("backend"))
    files = manifest.shard_files()
    total = ContentHasher()
    bars = contextlib.ExitStack()
    bar = bars.enter_context(progress_bar(f"merging {len(files)} shards", manifest.done_events(), enabled=progress,
                                          rate_unit="showers"))

    def chunks() -> Iterator[Any]:
        for i, path in enumerate(files):
            entry = manifest.shard(i) or {}
            h = ContentHasher()
            for chunk in backend.iter_file(path, step):
                h.update(chunk.incident_energy, chunk.showers)
                total.update(chunk.incident_energy, chunk.showers)
                bar.advance(len(chunk))
                chunk.metadata = {}  # the merged file's provenance is the run's, not shard 0's
                yield chunk
            if h.hexdigest() != entry.get("sha256") or h.n_events != entry.get("n_events"):
                msg = (
                    f"{path}: content differs from the manifest ({h.n_events} events, hash {h.hexdigest()[:12]}); "
                    "rerun the generate command to regenerate it"
                )
                raise ShowerFileError(msg)

    metadata = {
        "merged_from": str(run), "n_shards": len(files), "n_events": manifest.done_events(),
        "seed": manifest.config.get("root_seed"), "energies": manifest.config.get("energies"),
        "run_config": manifest.config, "generator": manifest.data.get("model", {}),
        "shard_sha256": [manifest.shard(i)["sha256"] for i in range(len(files))],  # type: ignore[index]
        "software_versions": software_versions(), "created": utc_now(),
    }
    try:
        backend.write(out_path, chunks(), format=fmt, metadata=metadata)
    finally:
        bars.close()
    return {"out": str(out_path), "n_events": total.n_events, "n_shards": len(files), "sha256": total.hexdigest()}
