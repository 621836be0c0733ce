"""The shard task that runs on workers: idempotent, seeded per shard, model loaded once per process.

A task receives a small :class:`ShardJob` (paths, hashes, seeds; never a model)
and returns a small dict. It

* skips the work when the final shard file already exists and its decoded
  arrays hash to the checksum the manifest recorded for it,
* otherwise generates the shard from its own seed stream (``SeedSequence(root).spawn(n)[i]``),
  writes it under a unique temporary name in ``<out>/.partial/`` and renames it
  into place with :func:`os.replace`, so a killed worker never leaves a
  half-written file under a final name and a rerun task rewrites identical content,
* loads the generator once per worker process from a path plus bundle hash,
  verifying the hash on the worker (:func:`load_model_cached`),
* sets ``torch.set_num_threads`` explicitly, so threads never multiply with the
  executor's processes.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BundleError, ShowerFileError
from ..showers.io.hashing import ContentHasher
from ._backend import get_backend
from .seeds import shard_seed

__all__ = ["CRASH_ENV", "PARTIAL_DIR", "ShardJob", "generate_shard", "load_model_cached", "verify_shard"]

#: temporary directory (inside the run directory) holding shards being written.
PARTIAL_DIR = ".partial"
#: test hook: path of a marker file; the first task that reaches the second chunk of a shard
#: (or, for one-chunk shards, the rename) while the marker does not exist creates it and kills
#: its own process (``os._exit(1)``), to exercise worker deaths in the middle of a shard.
#: Unset in normal use.
CRASH_ENV = "SIMCOMPRESS_BATCH_CRASH_ONCE"

#: models kept per worker process (a long-lived scheduler may serve runs of several models)
MODEL_CACHE_SIZE = 2
_MODELS: dict[tuple[str, str, str], Any] = {}
_MODELS_LOCK = threading.Lock()
_LOADS = {"count": 0}


@dataclass(frozen=True)
class ShardJob:
    """Everything one shard task needs; small and picklable (no model, no arrays)."""

    out_dir: str
    shard_index: int
    n_events: int
    filename: str
    format: str
    model_ref: str
    model_hash: str
    energies: str
    root_seed: int
    chunk_size: int
    torch_threads: int
    backend: str
    expected_sha256: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def load_model_cached(backend_spec: str, ref: str, expected_hash: str) -> Any:
    """Load a generator once per worker process; the bundle hash is checked on the worker."""
    key = (backend_spec, ref, expected_hash)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            backend = get_backend(backend_spec)
            found = backend.model_hash(ref)
            if found != expected_hash:
                msg = (
                    f"model {ref!r} on worker {socket.gethostname()}: bundle hash {found[:12]} differs from the "
                    f"submitted {expected_hash[:12]}; workers must see the same bundle as the client"
                )
                raise BundleError(msg)
            model = backend.load_model(ref)
            if hasattr(model, "eval"):
                model.eval()
            while len(_MODELS) >= MODEL_CACHE_SIZE:
                _MODELS.pop(next(iter(_MODELS)))
            _MODELS[key] = model
            _LOADS["count"] += 1
    return model


def model_loads_in_this_process() -> int:
    """How many times this process has loaded a model (tests check it is once per worker)."""
    return _LOADS["count"]


def verify_shard(path: Path, expected_sha256: str, backend_spec: str, step: int = 100_000) -> tuple[bool, str]:
    """Decode a shard file and compare its content hash; returns ``(ok, reason)``."""
    if not path.is_file():
        return False, "missing"
    hasher = ContentHasher()
    try:
        for chunk in get_backend(backend_spec).iter_file(path, step):
            hasher.update(chunk.incident_energy, chunk.showers)
    except Exception as err:
        return False, f"unreadable ({type(err).__name__}: {str(err)[:120]})"
    digest = hasher.hexdigest()
    if digest != expected_sha256:
        return False, f"content hash {digest[:12]} != recorded {expected_sha256[:12]}"
    return True, "verified"


def _set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _maybe_crash(partial: Path) -> None:
    marker = os.environ.get(CRASH_ENV)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"pid {os.getpid()} died while writing {partial.name}\n".encode())
    os.close(fd)
    os._exit(1)


def _shard_identity(job: ShardJob) -> dict[str, Any]:
    """What a shard file's provenance must say for the file to belong to this job."""
    return {"index": job.shard_index, "n_events": job.n_events, "root_seed": job.root_seed,
            "spawn_key": [job.shard_index], "seed": shard_seed(job.root_seed, job.shard_index),
            "chunk_size": job.chunk_size, "energies": job.energies, "bundle_hash": job.model_hash}


def _adoptable(path: Path, job: ShardJob) -> tuple[bool, str]:
    """A finished shard file that the manifest does not know yet (the client died before recording it,
    or the scheduler reran a finished task): keep it if its provenance names this very shard and its
    decoded content matches the content hash the writer recorded."""
    try:
        prov = get_backend(job.backend).file_metadata(path)
    except Exception as err:
        return False, f"unreadable ({type(err).__name__})"
    if prov.get("shard") != _shard_identity(job):
        return False, "provenance names another shard or run"
    recorded = prov.get("content_hash")
    if not isinstance(recorded, str):
        return False, "no content hash in provenance"
    return verify_shard(path, recorded, job.backend)


def generate_shard(job: ShardJob) -> dict[str, Any]:
    """Produce (or verify) one shard; returns a small JSON-able dict for the manifest."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    out_dir = Path(job.out_dir)
    final = out_dir / job.filename
    base = {"shard": job.shard_index, "file": job.filename, "host": socket.gethostname(), "pid": os.getpid()}
    reason = "new"
    if final.exists():
        if job.expected_sha256 is not None:
            ok, reason = verify_shard(final, job.expected_sha256, job.backend)
            if ok:
                return {**base, "status": "kept", "n_events": job.n_events, "sha256": job.expected_sha256,
                        "seconds": time.perf_counter() - t0}
        else:
            ok, why = _adoptable(final, job)
            if ok:
                sha = get_backend(job.backend).file_metadata(final)["content_hash"]
                return {**base, "status": "kept", "reason": "adopted", "n_events": job.n_events, "sha256": sha,
                        "seconds": time.perf_counter() - t0}
            reason = f"not in manifest, {why}"

    _set_threads(job.torch_threads)
    backend = get_backend(job.backend)
    model = load_model_cached(job.backend, job.model_ref, job.model_hash)
    identity = _shard_identity(job)
    hasher = ContentHasher()
    partial_dir = out_dir / PARTIAL_DIR
    partial_dir.mkdir(parents=True, exist_ok=True)
    suffix = Path(job.filename).suffix
    partial = partial_dir / f"{Path(job.filename).stem}.{uuid.uuid4().hex[:12]}{suffix}"

    def chunks() -> Any:
        for k, chunk in enumerate(backend.iter_showers(model, job.n_events, job.energies, identity["seed"],
                                                       job.chunk_size)):
            if k == 1:
                _maybe_crash(partial)  # test hook: die with a half-written shard
            hasher.update(chunk.incident_energy, chunk.showers)
            yield chunk

    metadata = {"batch": job.provenance, "shard": identity}
    try:
        with _no_grad():
            backend.write(partial, chunks(), format=job.format, metadata=metadata)
        if hasher.n_events != job.n_events:
            msg = f"shard {job.shard_index}: generator produced {hasher.n_events} events, expected {job.n_events}"
            raise ShowerFileError(msg)
        digest = hasher.hexdigest()
        written = backend.file_metadata(partial).get("content_hash")
        if written is not None and written != digest:
            msg = f"{partial}: the writer recorded content hash {written[:12]}, generated {digest[:12]}"
            raise ShowerFileError(msg)
        _maybe_crash(partial)  # test hook: die after writing, before the rename
        # promote the verified shard; not simcompress._atomic, whose temporary sits beside the target, where a
        # killed worker's half-written file would stay: under .partial/ the engine removes it on the next run
        os.replace(partial, final)
    finally:
        if partial.exists():
            partial.unlink()
    return {**base, "status": "generated", "reason": reason, "n_events": hasher.n_events,
            "sha256": digest, "seed": identity["seed"], "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
            "model_loads": model_loads_in_this_process(), "torch_threads": job.torch_threads}


class _no_grad:
    """``torch.inference_mode`` without importing torch at module import time."""

    def __enter__(self) -> None:
        import torch

        self._ctx = torch.inference_mode()
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
