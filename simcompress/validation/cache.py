"""Cached reference: what :class:`~simcompress.validation.prepared.PreparedReference` computes, on disk.

Everything validation derives from the reference alone (per-event features and streaming
summaries, the voxel subsample of the low-level classifier, the classifier's high-level inputs,
energy bins, the reference-versus-reference noise floor inclusive and per energy bin, the FPD/KPD
and classifier floors, the reference side of FPD/KPD (its resampled batch means, covariances and
kernel sums) and the gate's false-alarm calibrations once computed) is written once to a small ``.npz`` file (numpy arrays plus one JSON
header; no pickles) and reused by every later ``validate``, compression gate, sweep or batch
validation against the same reference.

The **key** is the reference's content (SHA-256 of its files' bytes, or of the decoded arrays of
an in-memory :class:`~simcompress.showers.data.ShowerSet`), the reader options, the geometry,
the voxel threshold and every gate setting except its name and description. The file name is
derived from the key, and the header repeats the key, the cache format and the simcompress
version (with a digest of the validation code, so another development tree counts as another
version): a file whose key, format or version differs, or that cannot be read completely
(truncated, corrupt), is never used. It is recomputed with a one-line notice and overwritten.

Location: ``$SIMCOMPRESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/simcompress/validation``, else
``~/.cache/simcompress/validation``; or any folder or ``.npz`` path passed as ``cache=``. The files
are safe to delete at any time.

This module is the file layer (key, location, format, version, atomic write, staleness); what a
:class:`~simcompress.validation.prepared.PreparedReference` stores in an entry, and how it is
rebuilt from one, is :func:`simcompress.validation.prepared.save_reference` /
:func:`~simcompress.validation.prepared.load_reference`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .._atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from ..showers.geometry import Geometry
    from .spec import GateSpec

__all__ = [
    "CACHE_FORMAT",
    "StaleEntry",
    "cache_file",
    "calibrations",
    "default_cache_dir",
    "read_entry",
    "reference_key",
    "write_entry",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

#: bumped whenever what is stored, or how it is computed, changes
CACHE_FORMAT = 3  # 3: the sorted reference columns (inclusive and per energy bin) are stored
_MAGIC = "simcompress-reference-cache"
_BLOCK = 8 << 20


def default_cache_dir() -> Path:
    """``$SIMCOMPRESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/simcompress/validation``, else ``~/.cache/...``."""
    env = os.environ.get("SIMCOMPRESS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "simcompress" / "validation"


def _file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            h.update(f"{p.stat().st_size}:".encode())
            while True:
                b = fh.read(_BLOCK)
                if not b:
                    break
                h.update(b)
    return h.hexdigest()


def _options_repr(reader: Any) -> Any:
    """How the files are decoded (tree, branches, units per file): part of the key, the bytes alone are not enough."""
    infos = getattr(reader, "_infos", None)
    if infos and all(callable(getattr(i, "describe", None)) for i in infos):
        return [i.describe() for i in infos]
    opts = getattr(reader, "options", None)
    if opts is None:
        return None
    dump = getattr(opts, "model_dump", None)
    return dump(mode="json") if callable(dump) else repr(opts)


def reference_key(reference: Any, spec: GateSpec, threshold_mev: float | None) -> dict[str, Any] | None:
    """The cache key of ``reference`` under ``spec`` (None: this kind of source is not cached).

    Paths (files, folders, globs) and readers are keyed by their files' bytes, a
    :class:`ShowerSet` by its decoded content; chunk iterables are not cached.
    """
    from ..showers.data import ShowerSet
    from .features import default_threshold_mev

    geom: Geometry | None
    if isinstance(reference, ShowerSet):
        from ..showers.io import content_hash

        digest, geom, opts = "showers:" + content_hash(reference), reference.geometry, None
    else:
        reader = reference
        if isinstance(reference, (str, os.PathLike)):
            from ..showers.io import open_showers

            reader = open_showers(reference)
        files = getattr(reader, "files", None)
        geom = getattr(reader, "geometry", None)
        if not files or geom is None:
            return None
        digest, opts = "files:" + _file_digest([Path(f) for f in files]), _options_repr(reader)
    thr = float(threshold_mev) if threshold_mev is not None else default_threshold_mev(geom)
    gate = spec.model_dump(mode="json", exclude={"name", "description"})
    return {"reference": digest, "reader_options": opts, "geometry": geom.fingerprint, "threshold_mev": thr, "gate": gate}


def _key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def cache_file(key: dict[str, Any], cache: Any = None) -> Path | None:
    """Where the entry for ``key`` lives: ``cache`` is None/True/"auto" (default folder), False (off),
    a folder, or a ``.npz`` file path."""
    if cache is False or cache == "off":
        return None
    if cache is None or cache is True or cache == "auto":
        folder = default_cache_dir()
    else:
        p = Path(cache).expanduser()
        if p.suffix == ".npz":
            return p
        folder = p
    return folder / f"reference-{_key_digest(key)[:32]}.npz"


_CODE: str | None = None


def _version() -> str:
    """simcompress's version plus a digest of the code that computes what is cached.

    Development trees keep one version number across many commits; the digest makes a cache
    written by any other code of the validation (or of shower decoding) count as another version.
    """
    global _CODE
    if _CODE is None:
        root = Path(__file__).resolve().parent
        files = sorted(p for p in root.glob("*.py") if p.name not in ("report.py", "figures.py"))
        showers = root.parent / "showers"
        files += [showers / n for n in ("io.py", "data.py", "geometry.py")] + sorted((showers / "io").glob("*.py"))
        h = hashlib.sha256()
        for f in files:
            if f.is_file():
                h.update(f.name.encode() + b"\0" + f.read_bytes())
        _CODE = h.hexdigest()[:12]
    from .. import __version__

    return f"{__version__}+{_CODE}"


# ------------------------------------------------------------------ write


def write_entry(path: Path, key: dict[str, Any], header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bool:
    """Write one entry (``header`` plus ``arrays``, keyed by ``key``) to ``path`` atomically.

    A failure (read-only folder, full disk) only logs a warning and returns False.
    """
    full = {
        "magic": _MAGIC,
        "format": CACHE_FORMAT,
        "simcompress": _version(),
        "key": key,
        "key_digest": _key_digest(key),
        **header,
        "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()},
    }
    blob = np.frombuffer(json.dumps(full, default=float).encode(), dtype=np.uint8)
    try:
        members: dict[str, Any] = {"header": blob, **arrays}
        with atomic_path(path, fsync=False) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **members)
    except OSError as err:
        log.warning("reference cache %s not written (%s); validation goes on without it", path, err)
        return False
    return True


# ------------------------------------------------------------------ read


class StaleEntry(Exception):
    """The cache entry exists but must not be used (the message says why)."""


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if "header" not in names:
                msg = "no header (not a simcompress reference cache)"
                raise StaleEntry(msg)
            header = json.loads(z["header"].tobytes().decode())
            if not isinstance(header, dict) or header.get("magic") != _MAGIC:
                msg = "not a simcompress reference cache"
                raise StaleEntry(msg)
            if header.get("format") != CACHE_FORMAT or header.get("simcompress") != _version():
                msg = (
                    f"written by simcompress {header.get('simcompress')} (cache format {header.get('format')}), "
                    f"this is {_version()} (format {CACHE_FORMAT})"
                )
                raise StaleEntry(msg)
            want = header.get("arrays", {})
            if set(want) | {"header"} != names:
                msg = f"arrays {sorted(names - {'header'})} do not match the header's {sorted(want)}"
                raise StaleEntry(msg)
            arrays = {k: z[k] for k in want}  # reads every member fully (zip CRC checked)
    except StaleEntry:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f"unreadable ({type(err).__name__}: {err}); truncated or corrupt"
        raise StaleEntry(msg) from None
    for k, (shape, dtype) in want.items():
        if list(arrays[k].shape) != list(shape) or str(arrays[k].dtype) != dtype:
            msg = f"array {k!r} has shape {arrays[k].shape} {arrays[k].dtype}, header says {tuple(shape)} {dtype}"
            raise StaleEntry(msg)
    return header, arrays


def read_entry(path: Path, key: dict[str, Any], rebuild: Callable[[dict[str, Any], dict[str, np.ndarray]], T]) -> T | None:
    """``rebuild(header, arrays)`` of the entry at ``path`` if it exists and matches ``key`` exactly.

    A missing file returns None silently; a file that exists but is stale (another reference,
    other settings, another simcompress version or cache format, truncated or corrupt, or content
    ``rebuild`` rejects with :class:`StaleEntry`) returns None after a one-line notice, so the
    caller recomputes (and overwrites it).
    """
    if not path.is_file():
        return None
    try:
        header, arrays = _read(path)
        if header.get("key_digest") != _key_digest(key) or header.get("key") != json.loads(json.dumps(key, default=str)):
            old = header.get("key", {})
            what = "another reference" if isinstance(old, dict) and old.get("reference") != key["reference"] else "other settings"
            msg = f"written for {what} (key differs)"
            raise StaleEntry(msg)
        return rebuild(header, arrays)
    except StaleEntry as why:
        log.warning("reference cache %s not used: %s; recomputing", path, why)
        return None


_CAL_ATTR = "_false_alarm_calibrations"  # where simcompress.validation.calibration keeps them on a PreparedReference


def calibrations(prep: Any) -> dict[str, Any]:
    """The false-alarm calibrations computed so far on ``prep`` (gate-settings key -> calibration)."""
    return dict(vars(prep).get(_CAL_ATTR, {}))
