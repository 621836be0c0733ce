"""The prepared reference: everything computed from the reference alone, reused for every candidate.

:class:`PreparedReference` holds the reference's features, sorted feature columns, energy bins,
the reference-versus-reference noise floor (inclusive and per energy bin), the FPD/KPD and
classifier floors, and the reference side of FPD/KPD, so :func:`~simcompress.validation.validate`
and the model gate evaluate many candidates against it. :meth:`PreparedReference.build` reads it
from the cached reference (:mod:`simcompress.validation.cache`) when one matches;
:func:`save_reference` / :func:`load_reference` write and read that cache entry.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress_bar
from ..errors import ConfigError
from ..showers.geometry import Geometry
from . import cache as C
from . import metrics as M
from .feature_kernel import busy_core
from .features import EnergyBin, FeatureTable, energy_bins, high_level_vector
from .floor import _edges_for, _floor_features, _FloorStats, _half_split
from .multivariate import _multivariate, _RefBatches
from .one_d import reference_quantiles, sorted_columns
from .sources import Sample, _describe, read_sample
from .spec import GateSpec, load_gate_spec

__all__ = ["PreparedReference", "load_reference", "save_reference"]

log = logging.getLogger(__name__)


@dataclass
class PreparedReference:
    """Everything computed from the reference alone, reused for every candidate."""

    sample: Sample
    spec: GateSpec
    sorted_cols: dict[str, np.ndarray]
    floor: _FloorStats
    hlv: np.ndarray | None = None
    multivariate_floor: dict[str, Any] = field(default_factory=dict)
    classifier_floor: dict[str, Any] = field(default_factory=dict)
    bins: list[EnergyBin] = field(default_factory=list)
    bin_floors: dict[str, _FloorStats | str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: where this came from: {"status": "computed" | "loaded" | "written" | "off", "path": ...}
    cache_info: dict[str, Any] = field(default_factory=dict)
    #: seconds per stage when it was computed (read, features, sort, floor, floor_per_bin, fpd_kpd, classifier)
    timings: dict[str, float] = field(default_factory=dict)
    _bin_sorted: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    _quantiles: dict[str | None, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    #: reference side of FPD/KPD per ((fpd min, max sizes), kpd batch size, candidate rows), see :class:`_RefBatches`
    ref_batches: dict[tuple[Any, Any, int], _RefBatches] = field(default_factory=dict, repr=False)

    def bin_sorted(self, b: EnergyBin) -> dict[str, np.ndarray]:
        """The reference's sorted feature columns in energy bin ``b`` (computed once, reused per candidate)."""
        got = self._bin_sorted.get(b.label)
        if got is None:
            got = _sorted_dict(self.features, b.mask(self.features.incident_energy))
            self._bin_sorted[b.label] = got
        return got

    def quantiles(self, label: str | None, ref_sorted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:func:`~.one_d.reference_quantiles` of ``ref_sorted`` (all events: ``label`` None, else that energy bin), kept."""
        got = self._quantiles.get(label)
        if got is None:
            got = self._quantiles[label] = reference_quantiles(self.spec, ref_sorted)
        return got

    @property
    def features(self) -> FeatureTable:
        return self.sample.features

    @property
    def geometry(self) -> Geometry:
        return self.sample.geometry

    @property
    def n_events(self) -> int:
        return self.features.n_events

    @classmethod
    def build(
        cls,
        reference: Any,
        spec: GateSpec | str | None = None,
        *,
        threshold_mev: float | None = None,
        geometry: Geometry | None = None,
        step_size: int = 100_000,
        progress: bool = True,
        cache: Any = "auto",
    ) -> PreparedReference:
        """Read ``reference`` and compute everything the candidates are compared with.

        ``cache``: "auto" (the user cache folder, :func:`cache.default_cache_dir`), a folder or
        ``.npz`` path, or False. A matching cache entry is loaded instead of reading the reference;
        otherwise the result is computed and written there (see :mod:`simcompress.validation.cache`).
        """
        spec = load_gate_spec(spec)
        thr = threshold_mev if threshold_mev is not None else spec.threshold_mev
        src = reference if geometry is None or not isinstance(reference, (str, os.PathLike)) else None
        if src is None:
            from ..showers.io import open_showers

            src = open_showers(reference, geometry=geometry)
        key, path, prep = _cache_lookup(src, spec, thr, cache)
        if prep is not None:
            return prep
        keep = spec.classifier.max_events if (spec.classifier.enabled and "low" in spec.classifier.inputs) else 0
        sample = read_sample(
            src, "reference", geometry=geometry, threshold_mev=thr, keep_voxels=keep, step_size=step_size,
            seed=spec.seed, progress=progress,
        )
        prep = cls.from_sample(sample, spec, progress=progress)
        _cache_store(prep, key, path)
        return prep

    @classmethod
    def from_sample(cls, sample: Sample, spec: GateSpec, progress: bool = False) -> PreparedReference:
        """Compute the noise floors and everything else from an already read reference ``sample``."""
        t = sample.features
        if t.n_events < spec.min_events:
            msg = f"{sample.source}: {t.n_events} reference events, the gate spec needs at least min_events={spec.min_events}"
            raise M.TooFewEventsError(msg)
        t0 = time.perf_counter()
        sorted_cols = _sorted_dict(t)
        prep = cls(sample, spec, sorted_cols, _FloorStats(0, {}))
        prep.timings = {"read": sample.timings.get("read", 0.0), "features": sample.timings.get("features", 0.0)}
        if spec.fpd.enabled or spec.kpd.enabled:
            prep.hlv = high_level_vector(t)
        prep.timings["sort"] = time.perf_counter() - t0
        # the classifier floor (torch, one thread) trains on the second core while the floor runs here
        with (
            progress_bar("noise floor (ref/ref)", 4, enabled=progress) as stage,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifier-floor") as pool,
        ):
            with busy_core():  # this thread's core, while the classifier floor trains beside it
                cls_job = pool.submit(_timed, _classifier_floor, prep) if spec.classifier.enabled and spec.classifier.floor else None
                t0 = time.perf_counter()
                # floor bins come from the reference only; candidate bins are widened per candidate
                edges = {f: _edges_for(spec, f, sorted_cols[f], [], t.geometry, t.threshold_mev) for f in t.names}
                cols = {f: t[f].astype(np.float64) for f in t.names}
                prep.floor = _floor_features(
                    cols, edges, spec.noise_floor.n_splits, spec.noise_floor.max_events, spec.seed, max(spec.min_events // 2, 2)
                )
                prep.timings["floor"] = time.perf_counter() - t0
                stage.advance(1)
                t0 = time.perf_counter()
                prep.bins = energy_bins(t.incident_energy)
                for b in prep.bins:
                    mask = b.mask(t.incident_energy)
                    nb = int(mask.sum())
                    if nb // 2 < spec.min_bin_events:
                        prep.bin_floors[b.label] = f"{nb} reference events in this bin, floor needs {2 * spec.min_bin_events}"
                        continue
                    bcols = {f: c[mask] for f, c in cols.items()}
                    bedges = {f: _edges_for(spec, f, np.sort(bcols[f]), [], t.geometry, t.threshold_mev) for f in t.names}
                    prep.bin_floors[b.label] = _floor_features(
                        bcols, bedges, spec.noise_floor.n_splits, spec.noise_floor.max_events, spec.seed, spec.min_bin_events
                    )
                prep.timings["floor_per_bin"] = time.perf_counter() - t0
                stage.advance(1)
                t0 = time.perf_counter()
                if prep.hlv is not None:
                    prep.multivariate_floor = _multivariate_floor(prep)
                prep.timings["fpd_kpd"] = time.perf_counter() - t0
                stage.advance(1)
            if cls_job is not None:
                prep.classifier_floor, prep.timings["classifier"] = cls_job.result()
            stage.advance(1)
        return prep


def _sorted_dict(t: FeatureTable, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Name -> the column (of the rows in ``mask``) sorted, float64: ``np.sort(t[f][mask].astype(np.float64))``."""
    return dict(zip(t.names, sorted_columns(t.values, mask), strict=True))


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _multivariate_floor(prep: PreparedReference) -> dict[str, Any]:
    assert prep.hlv is not None
    a, b = _half_split(prep.hlv.shape[0], prep.spec.seed)
    return _multivariate(prep.spec, prep.ref_batches, prep.hlv[a], prep.hlv[b], len(a))


def _classifier_inputs(kind: str, sample: Sample, hlv: np.ndarray | None = None) -> np.ndarray:
    from .classifier import low_level_inputs

    if kind == "high":
        return hlv if hlv is not None else high_level_vector(sample.features)
    if sample.voxels is None or sample.voxel_einc is None:
        msg = "low-level classifier needs the voxel subsample (classifier.inputs contains 'low')"
        raise ConfigError(msg)
    thr = sample.features.threshold_mev
    vox = np.where(sample.voxels >= thr, sample.voxels, 0.0) if thr > 0 else np.maximum(sample.voxels, 0.0)
    return low_level_inputs(sample.voxel_einc, vox)


def _run_classifier(spec: GateSpec, x: np.ndarray, y: np.ndarray, label: str = "") -> dict[str, Any]:
    from .classifier import run_classifier

    # the spec's preset (gate or calochallenge) with its explicit settings on top
    return run_classifier(spec.classifier, x, y, seed=spec.seed, label=label)


def _classifier_floor(prep: PreparedReference) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in prep.spec.classifier.inputs:
        x = _classifier_inputs(kind, prep.sample, prep.hlv)
        a, b = _half_split(x.shape[0], prep.spec.seed)
        try:
            out[kind] = _run_classifier(prep.spec, x[a], x[b])
        except M.TooFewEventsError as err:
            out[kind] = {"skipped": f"noise floor: {err}"}
    return out


def _cache_lookup(
    reference: Any, spec: GateSpec, threshold_mev: float | None, cache: Any
) -> tuple[dict[str, Any] | None, Path | None, PreparedReference | None]:
    """(key, cache file, loaded reference or None); key and file are None when caching is off or impossible."""
    if cache is False or cache == "off":
        return None, None, None
    key = C.reference_key(reference, spec, threshold_mev)
    if key is None:
        log.info("reference %s: in-memory chunks are not cached", _describe(reference))
        return None, None, None
    path = C.cache_file(key, cache)
    if path is None:
        return None, None, None
    prep = load_reference(path, key, spec)
    if prep is not None:
        prep.cache_info = {"status": "loaded", "path": str(path)}
    return key, path, prep


def _cache_store(prep: PreparedReference, key: dict[str, Any] | None, path: Path | None, loaded: bool = False) -> None:
    if key is None or path is None:
        prep.cache_info = {"status": "off"}
        return
    ok = save_reference(prep, path, key)
    if loaded:
        prep.cache_info = {"status": "loaded", "path": str(path), "updated": ok}
    else:
        prep.cache_info = {"status": "written" if ok else "computed", "path": str(path)}


# ------------------------------------------------------------------ the cached reference's content


def save_reference(prep: PreparedReference, path: Path, key: dict[str, Any]) -> bool:
    """Write ``prep`` to ``path`` atomically; a failure (read-only folder, full disk) only logs a warning."""
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
    # the sorted columns, inclusive and per energy bin (as float32: exact, they were sorted as stored), so a
    # loaded reference sorts nothing (0.17 s CPU of the 3.7 s of a 100k ds1 candidate's cached 1-D path)
    arrays["sorted_values"] = _stack32([prep.sorted_cols[f] for f in t.names])
    bin_sorted: list[list[Any]] = []
    blocks: list[np.ndarray] = []
    at = 0
    for b in prep.bins:
        if isinstance(prep.bin_floors.get(b.label), _FloorStats):  # the bins candidates are compared in
            bs = prep.bin_sorted(b)
            n_b = bs[t.names[0]].size
            blocks.append(_stack32([bs[f] for f in t.names]))
            bin_sorted.append([b.label, at, at + n_b])
            at += n_b
    arrays["bin_sorted_values"] = np.concatenate(blocks, axis=1) if blocks else np.empty((len(t.names), 0), np.float32)
    ref_batches = []
    for i, ((fsz, kbs, ny), rb) in enumerate(prep.ref_batches.items()):
        ra = rb.arrays()
        arrays.update({f"refbatch{i}_{k}": v for k, v in ra.items()})
        ref_batches.append({"fpd_sizes": list(fsz) if fsz else None, "kpd_batch": kbs, "n_candidate": ny, "arrays": sorted(ra)})
    bin_floors: dict[str, Any] = {}
    for label, fl in prep.bin_floors.items():
        bin_floors[label] = {"n_half": fl.n_half, "stats": fl.stats} if isinstance(fl, _FloorStats) else {"skipped": fl}
    header = {
        "name": prep.sample.name,
        "source": prep.sample.source,
        "geometry": prep.geometry.to_dict(),
        "threshold_mev": t.threshold_mev,
        "names": t.names,
        "floor": {"n_half": prep.floor.n_half, "stats": prep.floor.stats},
        "bins": [{"label": b.label, "lo": b.lo, "hi": b.hi} for b in prep.bins],
        "bin_floors": bin_floors,
        "bin_sorted": bin_sorted,
        "multivariate_floor": prep.multivariate_floor,
        "ref_batches": ref_batches,
        "classifier_floor": prep.classifier_floor,
        "notes": prep.notes,
        # the gate's family-wise false-alarm calibrations (simcompress.validation.calibration), by gate settings
        "false_alarm_calibrations": {k: c.to_dict() for k, c in C.calibrations(prep).items()},
    }
    return C.write_entry(path, key, header, arrays)


def _stack32(cols: list[np.ndarray]) -> np.ndarray:
    """(len(cols), n) float32 of float64 columns that hold float32 values (exact), without a float64 stack."""
    out = np.empty((len(cols), cols[0].size if cols else 0), dtype=np.float32)
    for i, c in enumerate(cols):
        out[i] = c
    return out


def _sorted_from(block: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Name -> float64 sorted column of a stored float32 block: what :func:`_sorted_dict` gave when it was written."""
    return dict(zip(names, block.astype(np.float64), strict=True))


def load_reference(path: Path, key: dict[str, Any], spec: GateSpec) -> PreparedReference | None:
    """The cached :class:`PreparedReference` at ``path`` if it exists and matches ``key`` exactly.

    A missing file returns None silently; a file that exists but is stale (another reference,
    other settings, another simcompress version or cache format, truncated or corrupt) returns
    None after a one-line notice, so the caller recomputes (and overwrites it).
    """
    prep = C.read_entry(path, key, lambda header, arrays: _rebuild(header, arrays, spec))
    if prep is not None:
        C.log.info("reference cache %s used (%d events)", path, prep.n_events)
    return prep


def _rebuild(header: dict[str, Any], a: dict[str, np.ndarray], spec: GateSpec) -> PreparedReference:
    try:
        geom = Geometry.from_dict(header["geometry"], source="reference cache")
        if geom.fingerprint != header["key"]["geometry"]:
            msg = "geometry does not match the key"
            raise C.StaleEntry(msg)
        names = list(header["names"])
        if a["values"].ndim != 2 or a["values"].shape[1] != len(names) or a["incident_energy"].shape != (a["values"].shape[0],):
            msg = "feature table shape does not match its names"
            raise C.StaleEntry(msg)
        table = FeatureTable(
            names, a["values"], a["incident_energy"], geom, float(header["threshold_mev"]), a["voxel_hist"],
            a["image_sum"], a["image_sumsq"], a["radial_sum"], a["radial_sumsq"], a["radial_norm_sum"], a["radial_norm_sumsq"],
        )
        sample = Sample(header["name"], header["source"], table, a.get("voxels"), a.get("voxel_einc"))
        fl = header["floor"]
        floor = _FloorStats(int(fl["n_half"]), fl["stats"])
        if set(floor.stats) != set(names):
            msg = "noise floor features do not match the feature table"
            raise C.StaleEntry(msg)
        bin_floors: dict[str, _FloorStats | str] = {}
        for label, v in header["bin_floors"].items():
            bin_floors[label] = v["skipped"] if "skipped" in v else _FloorStats(int(v["n_half"]), v["stats"])
        sv, bsv = a["sorted_values"], a["bin_sorted_values"]
        if sv.shape != (len(names), table.n_events) or bsv.ndim != 2 or bsv.shape[0] != len(names):
            msg = "sorted columns do not match the feature table"
            raise C.StaleEntry(msg)
        prep = PreparedReference(
            sample=sample,
            spec=spec,
            sorted_cols=_sorted_from(sv, names),
            floor=floor,
            hlv=a.get("hlv"),
            multivariate_floor=header["multivariate_floor"],
            classifier_floor=header["classifier_floor"],
            bins=[EnergyBin(b["label"], float(b["lo"]), float(b["hi"])) for b in header["bins"]],
            bin_floors=bin_floors,
            notes=list(header["notes"]),
        )
        for label, start, stop in header["bin_sorted"]:
            if not 0 <= int(start) <= int(stop) <= bsv.shape[1]:
                msg = f"sorted columns of energy bin {label!r} outside the stored block"
                raise C.StaleEntry(msg)
            prep._bin_sorted[str(label)] = _sorted_from(bsv[:, int(start) : int(stop)], names)
        for i, rbh in enumerate(header["ref_batches"]):
            fsz = tuple(int(v) for v in rbh["fpd_sizes"]) if rbh["fpd_sizes"] else None
            kbs = int(rbh["kpd_batch"]) if rbh["kpd_batch"] is not None else None
            rb = _RefBatches(**{k: a[f"refbatch{i}_{k}"] for k in rbh["arrays"]})
            prep.ref_batches[(fsz, kbs, int(rbh["n_candidate"]))] = rb
        cals = header.get("false_alarm_calibrations") or {}
        if cals:
            from .calibration import FamilyCalibration

            vars(prep)[C._CAL_ATTR] = {k: FamilyCalibration.from_dict(d) for k, d in cals.items()}
    except C.StaleEntry:
        raise
    except (KeyError, TypeError, ValueError, ImportError) as err:
        msg = f"inconsistent content ({type(err).__name__}: {err})"
        raise C.StaleEntry(msg) from None
    return prep
