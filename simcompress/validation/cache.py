"""Cached reference: what :class:`~simcompress.validation.core.PreparedReference` computes, on disk.

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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .core import PreparedReference
    from .gate import GateSpec

__all__ = [
    "CACHE_FORMAT",
    "cache_file",
    "calibrations",
    "default_cache_dir",
    "load_reference",
    "reference_key",
    "save_reference",
]

log = logging.getLogger(__name__)

#: bumped whenever what is stored, or how it is computed, changes
CACHE_FORMAT = 2
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
        files = sorted(p for p in root.glob("*.py") if p.name != "report.py")
        files += [root.parent / "showers" / n for n in ("io.py", "data.py", "geometry.py")]
        h = hashlib.sha256()
        for f in files:
            if f.is_file():
                h.update(f.name.encode() + b"\0" + f.read_bytes())
        _CODE = h.hexdigest()[:12]
    from .. import __version__

    return f"{__version__}+{_CODE}"


# ------------------------------------------------------------------ write


def save_reference(prep: PreparedReference, path: Path, key: dict[str, Any]) -> bool:
    """Write ``prep`` to ``path`` atomically; a failure (read-only folder, full disk) only logs a warning."""
    from .core import _FloorStats

    t = prep.features
    arrays: dict[str, np.ndarray] = {
        "values": t.values,
        "incident_energy": t.incident_energy,
        "voxel_hist": t.voxel_hist,
        "image_sum": t._image_sum,
        "image_sumsq": t._image_sumsq,
        "radial_sum": t._radial_sum,
        "radial_sumsq": t._radial_sumsq,
        "radial_norm_sum": t._radial_norm_sum,
        "radial_norm_sumsq": t._radial_norm_sumsq,
    }
    if prep.sample.voxels is not None and prep.sample.voxel_einc is not None:
        arrays["voxels"], arrays["voxel_einc"] = prep.sample.voxels, prep.sample.voxel_einc
    if prep.hlv is not None:
        arrays["hlv"] = prep.hlv
    ref_batches = []
    for i, ((fsz, kbs, ny), rb) in enumerate(prep.ref_batches.items()):
        ra = rb.arrays()
        arrays.update({f"refbatch{i}_{k}": v for k, v in ra.items()})
        ref_batches.append({"fpd_sizes": list(fsz) if fsz else None, "kpd_batch": kbs, "n_candidate": ny, "arrays": sorted(ra)})
    bin_floors: dict[str, Any] = {}
    for label, fl in prep.bin_floors.items():
        bin_floors[label] = {"n_half": fl.n_half, "stats": fl.stats} if isinstance(fl, _FloorStats) else {"skipped": fl}
    header = {
        "magic": _MAGIC,
        "format": CACHE_FORMAT,
        "simcompress": _version(),
        "key": key,
        "key_digest": _key_digest(key),
        "name": prep.sample.name,
        "source": prep.sample.source,
        "geometry": prep.geometry.to_dict(),
        "threshold_mev": t.threshold_mev,
        "names": t.names,
        "floor": {"n_half": prep.floor.n_half, "stats": prep.floor.stats},
        "bins": [{"label": b.label, "lo": b.lo, "hi": b.hi} for b in prep.bins],
        "bin_floors": bin_floors,
        "multivariate_floor": prep.multivariate_floor,
        "ref_batches": ref_batches,
        "classifier_floor": prep.classifier_floor,
        "notes": prep.notes,
        # the gate's family-wise false-alarm calibrations (simcompress.validation.calibration), by gate settings
        "false_alarm_calibrations": {k: c.to_dict() for k, c in calibrations(prep).items()},
        "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()},
    }
    blob = np.frombuffer(json.dumps(header, default=float).encode(), dtype=np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, header=blob, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        log.warning("reference cache %s not written (%s); validation goes on without it", path, err)
        return False
    return True


# ------------------------------------------------------------------ read


class _Stale(Exception):
    """The cache entry exists but must not be used (the message says why)."""


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if "header" not in names:
                msg = "no header (not a simcompress reference cache)"
                raise _Stale(msg)
            header = json.loads(z["header"].tobytes().decode())
            if not isinstance(header, dict) or header.get("magic") != _MAGIC:
                msg = "not a simcompress reference cache"
                raise _Stale(msg)
            if header.get("format") != CACHE_FORMAT or header.get("simcompress") != _version():
                msg = (
                    f"written by simcompress {header.get('simcompress')} (cache format {header.get('format')}), "
                    f"this is {_version()} (format {CACHE_FORMAT})"
                )
                raise _Stale(
                    msg
                )
            want = header.get("arrays", {})
            if set(want) | {"header"} != names:
                msg = f"arrays {sorted(names - {'header'})} do not match the header's {sorted(want)}"
                raise _Stale(msg)
            arrays = {k: z[k] for k in want}  # reads every member fully (zip CRC checked)
    except _Stale:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f"unreadable ({type(err).__name__}: {err}); truncated or corrupt"
        raise _Stale(msg) from None
    for k, (shape, dtype) in want.items():
        if list(arrays[k].shape) != list(shape) or str(arrays[k].dtype) != dtype:
            msg = f"array {k!r} has shape {arrays[k].shape} {arrays[k].dtype}, header says {tuple(shape)} {dtype}"
            raise _Stale(msg)
    return header, arrays


def load_reference(path: Path, key: dict[str, Any], spec: GateSpec) -> PreparedReference | None:
    """The cached :class:`PreparedReference` at ``path`` if it exists and matches ``key`` exactly.

    A missing file returns None silently; a file that exists but is stale (another reference,
    other settings, another simcompress version or cache format, truncated or corrupt) returns
    None after a one-line notice, so the caller recomputes (and overwrites it).
    """
    if not path.is_file():
        return None
    try:
        header, arrays = _read(path)
        if header.get("key_digest") != _key_digest(key) or header.get("key") != json.loads(json.dumps(key, default=str)):
            old = header.get("key", {})
            what = "another reference" if isinstance(old, dict) and old.get("reference") != key["reference"] else "other settings"
            msg = f"written for {what} (key differs)"
            raise _Stale(msg)
        prep = _rebuild(header, arrays, spec)
    except _Stale as why:
        log.warning("reference cache %s not used: %s; recomputing", path, why)
        return None
    log.info("reference cache %s used (%d events)", path, prep.n_events)
    return prep


def _rebuild(header: dict[str, Any], a: dict[str, np.ndarray], spec: GateSpec) -> PreparedReference:
    from ..showers.geometry import Geometry
    from .core import PreparedReference, Sample, _FloorStats, _RefBatches
    from .features import EnergyBin, FeatureTable

    try:
        geom = Geometry.from_dict(header["geometry"], source="reference cache")
        if geom.fingerprint != header["key"]["geometry"]:
            msg = "geometry does not match the key"
            raise _Stale(msg)
        names = list(header["names"])
        if a["values"].ndim != 2 or a["values"].shape[1] != len(names) or a["incident_energy"].shape != (a["values"].shape[0],):
            msg = "feature table shape does not match its names"
            raise _Stale(msg)
        table = FeatureTable(
            names, a["values"], a["incident_energy"], geom, float(header["threshold_mev"]), a["voxel_hist"],
            a["image_sum"], a["image_sumsq"], a["radial_sum"], a["radial_sumsq"], a["radial_norm_sum"], a["radial_norm_sumsq"],
        )
        sample = Sample(header["name"], header["source"], table, a.get("voxels"), a.get("voxel_einc"))
        fl = header["floor"]
        floor = _FloorStats(int(fl["n_half"]), fl["stats"])
        if set(floor.stats) != set(names):
            msg = "noise floor features do not match the feature table"
            raise _Stale(msg)
        bin_floors: dict[str, _FloorStats | str] = {}
        for label, v in header["bin_floors"].items():
            bin_floors[label] = v["skipped"] if "skipped" in v else _FloorStats(int(v["n_half"]), v["stats"])
        prep = PreparedReference(
            sample=sample,
            spec=spec,
            sorted_cols={f: np.sort(table[f].astype(np.float64)) for f in names},
            floor=floor,
            hlv=a.get("hlv"),
            multivariate_floor=header["multivariate_floor"],
            classifier_floor=header["classifier_floor"],
            bins=[EnergyBin(b["label"], float(b["lo"]), float(b["hi"])) for b in header["bins"]],
            bin_floors=bin_floors,
            notes=list(header["notes"]),
        )
        for i, rbh in enumerate(header["ref_batches"]):
            fsz = tuple(int(v) for v in rbh["fpd_sizes"]) if rbh["fpd_sizes"] else None
            kbs = int(rbh["kpd_batch"]) if rbh["kpd_batch"] is not None else None
            rb = _RefBatches(**{k: a[f"refbatch{i}_{k}"] for k in rbh["arrays"]})
            prep.ref_batches[(fsz, kbs, int(rbh["n_candidate"]))] = rb
        cals = header.get("false_alarm_calibrations") or {}
        if cals:
            from .calibration import FamilyCalibration

            vars(prep)[_CAL_ATTR] = {k: FamilyCalibration.from_dict(d) for k, d in cals.items()}
    except _Stale:
        raise
    except (KeyError, TypeError, ValueError, ImportError) as err:
        msg = f"inconsistent content ({type(err).__name__}: {err})"
        raise _Stale(msg) from None
    return prep


_CAL_ATTR = "_false_alarm_calibrations"  # where simcompress.validation.calibration keeps them on a PreparedReference


def calibrations(prep: PreparedReference) -> dict[str, Any]:
    """The false-alarm calibrations computed so far on ``prep`` (gate-settings key -> calibration)."""
    return dict(vars(prep).get(_CAL_ATTR, {}))
