"""The validation run: stream reference and candidates, compute metrics and noise floor, gate.

:func:`validate` is the public entry point (``simcompress validate`` calls it);
:class:`PreparedReference` caches everything computed from the reference alone (features,
sorted feature columns, bin edges, the reference-versus-reference noise floor, FPD/KPD and
classifier floors) so :func:`make_model_gate` can evaluate many models against it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._provenance import software_versions, utc_now
from ..errors import ConfigError, GeometryError, ShowerFileError
from ..showers.data import ShowerSet
from ..showers.geometry import Geometry
from . import metrics as M
from .features import EnergyBin, FeatureAccumulator, FeatureTable, energy_bins, feature_family, high_level_vector
from .gate import GateCheck, GateSpec, evaluate_gate, false_alarm_summary, load_gate_spec

__all__ = [
    "CandidateResult",
    "EnergyMismatchWarning",
    "PreparedReference",
    "ValidationResult",
    "evaluate_candidate",
    "read_sample",
    "validate",
]

log = logging.getLogger(__name__)


class EnergyMismatchWarning(UserWarning):
    """Reference and candidate incident-energy distributions differ (histograms are distorted)."""


# ------------------------------------------------------------------ sources


@dataclass
class Sample:
    """What one streaming pass over a shower source keeps."""

    name: str
    source: str
    features: FeatureTable
    voxels: np.ndarray | None  # random subsample (k, V) for the low-level classifier
    voxel_einc: np.ndarray | None
    #: seconds spent reading chunks and computing features (one streaming pass)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def geometry(self) -> Geometry:
        return self.features.geometry


class _Reservoir:
    """Uniform random subsample of k rows from a stream (smallest random keys), seeded."""

    def __init__(self, k: int, seed: int) -> None:
        self.k = k
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        self.keys = np.empty(0)
        self.rows: np.ndarray | None = None
        self.einc = np.empty(0, dtype=np.float32)

    def update(self, einc: np.ndarray, rows: np.ndarray) -> None:
        keys = self.rng.random(rows.shape[0])
        if self.rows is not None and self.keys.size >= self.k:
            sel = keys < self.keys.max()
            keys, rows, einc = keys[sel], rows[sel], einc[sel]
        allk = np.concatenate([self.keys, keys])
        allr = rows if self.rows is None else np.concatenate([self.rows, rows])
        alle = np.concatenate([self.einc, einc])
        if allk.size > self.k:
            keep = np.argpartition(allk, self.k - 1)[: self.k]
            keep.sort()
            allk, allr, alle = allk[keep], allr[keep], alle[keep]
        self.keys, self.rows, self.einc = allk, np.ascontiguousarray(allr), alle


def _describe(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, ShowerSet):
        return f"<ShowerSet {len(src)} events>"
    return f"<{type(src).__name__}>"


def _open(src: Any, geometry: Geometry | None) -> tuple[Geometry | None, Iterable[ShowerSet], int | None]:
    """(geometry or None if unknown until the first chunk, chunk iterable, number of events or None)."""
    if isinstance(src, ShowerSet):
        return src.geometry, [src], len(src)
    if isinstance(src, (str, os.PathLike)):
        try:
            from ..showers.io import open_showers
        except ImportError as err:  # pragma: no cover - depends on the showers package state
            msg = f"{src}: reading shower files needs simcompress.showers.io ({err})"
            raise ShowerFileError(msg) from None
        reader = open_showers(src, geometry=geometry)
        return reader.geometry, _ReaderChunks(reader), int(reader.n_events)
    if hasattr(src, "iterate") and hasattr(src, "geometry"):
        return src.geometry, _ReaderChunks(src), int(getattr(src, "n_events", 0)) or None
    if isinstance(src, Iterable):
        return None, src, None
    msg = f"cannot read showers from {type(src).__name__}; pass a path, a ShowerSet or a reader"
    raise ConfigError(msg)


class _ReaderChunks:
    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.step = 100_000

    def __iter__(self) -> Iterator[ShowerSet]:
        return iter(self.reader.iterate(step_size=self.step))


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as p:
        yield p


def read_sample(
    src: Any,
    name: str,
    *,
    geometry: Geometry | None = None,
    threshold_mev: float | None = None,
    keep_voxels: int = 0,
    step_size: int = 100_000,
    seed: int = 0,
    progress: Any = None,
) -> Sample:
    """Stream ``src`` once: features, plus a random subsample of ``keep_voxels`` raw showers."""
    desc = _describe(src)
    geom0, chunks, n_total = _open(src, geometry)
    if isinstance(chunks, _ReaderChunks):
        chunks.step = step_size
    if geom0 is not None and geometry is not None and not geom0.same_binning(geometry):
        msg = (
            f"{desc}: geometry {geom0.name!r} ({geom0.n_voxels} voxels) does not match the reference geometry "
            f"{geometry.name!r} ({geometry.n_voxels} voxels)"
        )
        raise GeometryError(
            msg
        )
    task = progress.add_task(f"features {name}", total=n_total) if progress is not None else None
    acc: FeatureAccumulator | None = None
    res = _Reservoir(keep_voxels, seed) if keep_voxels > 0 else None
    t_read = t_feat = 0.0
    it = iter(chunks)
    while True:
        t0 = time.perf_counter()
        chunk = next(it, None)
        t1 = time.perf_counter()
        t_read += t1 - t0
        if chunk is None:
            break
        if acc is None:
            g = geometry or geom0 or chunk.geometry
            if not chunk.geometry.same_binning(g):
                msg = (
                    f"{desc}: geometry {chunk.geometry.name!r} ({chunk.geometry.n_voxels} voxels) does not match "
                    f"the reference geometry {g.name!r} ({g.n_voxels} voxels)"
                )
                raise GeometryError(
                    msg
                )
            acc = FeatureAccumulator(g, threshold_mev, desc)
        acc.update(chunk)
        if res is not None:
            res.update(chunk.incident_energy, chunk.showers)
        t_feat += time.perf_counter() - t1
        if task is not None:
            progress.update(task, advance=len(chunk))
    if acc is None or acc.n_events == 0:
        msg = f"{desc}: no events (empty file or selection)"
        raise ShowerFileError(msg)
    t1 = time.perf_counter()
    table = acc.result()
    t_feat += time.perf_counter() - t1
    return Sample(
        name, desc, table, res.rows if res else None, res.einc if res else None, {"read": t_read, "features": t_feat}
    )


# ------------------------------------------------------------------ per-feature metrics


def _floor_scale(n_half: int, n_ref: int, n_cand: int) -> float:
    """sqrt((1/n_ref + 1/n_cand) / (2/n_half)): KS/W1 noise at the candidate's sizes relative to the floor's."""
    return math.sqrt((1.0 / n_ref + 1.0 / n_cand) / (2.0 / n_half))


@dataclass
class _FloorStats:
    """Raw floor (half vs half) per feature: means and stds over splits."""

    n_half: int
    stats: dict[str, dict[str, float]]

    def scaled(self, feat: str, n_ref: int, n_cand: int) -> dict[str, float]:
        s = _floor_scale(self.n_half, n_ref, n_cand)
        r = self.stats[feat]
        return {
            "ks": r["ks"] * s,
            "ks_std": r["ks_std"] * s,
            "w1": r["w1"] * s,
            "w1_std": r["w1_std"] * s,
            "sp": r["sp"] * s * s,
            "sp_std": r["sp_std"] * s * s,
            "n_half": self.n_half,
        }


def _floor_features(
    cols: dict[str, np.ndarray], edges: dict[str, np.ndarray], n_splits: int, max_events: int, seed: int, min_half: int
) -> _FloorStats:
    """KS, W1 and separation power between disjoint reference halves, over ``n_splits`` random splits.

    One pass over the features: each column is sorted (and binned) once; every split then only
    labels the sorted events "half A", "half B" or "unused" and reads the two empirical CDFs off
    cumulative label counts (no per-split sort). The numbers are identical to sorting each half
    and calling :func:`metrics.ks_w1` / :func:`metrics.histogram_separation_power` per split.
    """
    names = list(cols)
    n = cols[names[0]].size
    h = min(n // 2, max_events)
    if h < min_half:
        msg = f"noise floor: {n} reference events give halves of {h}, need at least {min_half}"
        raise M.TooFewEventsError(msg)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    labels = np.zeros((n_splits, n), dtype=np.int8)  # 1: half A, 2: half B, 0: unused
    for s in range(n_splits):
        perm = rng.permutation(n)
        labels[s, perm[:h]] = 1
        labels[s, perm[h : 2 * h]] = 2
    vals = {k: np.empty((len(names), n_splits)) for k in ("ks", "w1", "sp")}
    everyone = 2 * h == n  # every event is in one half: the sorted values are the same for every split
    for i, f in enumerate(names):
        c = np.asarray(cols[f], dtype=np.float64)
        order = np.argsort(c, kind="stable")
        xs = c[order]
        e = edges[f]
        nb = e.size - 1
        # histogram bin of every sorted value, np.histogram conventions (last edge inclusive, outside dropped)
        bidx = np.searchsorted(e, xs, side="right") - 1
        bidx[xs == e[-1]] = nb - 1
        bidx[(xs < e[0]) | (xs > e[-1])] = nb  # overflow slot, dropped below
        if everyone:
            v, dv = xs, np.diff(xs)
            last = np.append(dv != 0, True)  # KS is read at the end of each group of tied values
        for s in range(n_splits):
            la = labels[s][order]
            bi = bidx
            if not everyone:
                used = la != 0
                la, bi = la[used], bidx[used]
                v = xs[used]
                dv = np.diff(v)
                last = np.append(dv != 0, True)
            ina = la == 1
            ca = np.cumsum(ina)
            cb = np.arange(1, ca.size + 1) - ca
            d = np.abs(ca / h - cb / h)  # as metrics.ks_w1 computes it (bitwise-identical floors)
            vals["ks"][i, s] = float(d[last].max())
            vals["w1"][i, s] = float(np.sum(d[:-1] * dv))
            hist = np.bincount(bi + (nb + 1) * (~ina), minlength=2 * (nb + 1))
            vals["sp"][i, s] = M.separation_power(hist[:nb], hist[nb + 1 : 2 * nb + 1])
    stats = {}
    for i, f in enumerate(names):
        stats[f] = {}
        for k, arr in vals.items():
            stats[f][k] = float(arr[i].mean())
            stats[f][k + "_std"] = float(arr[i].std(ddof=1))
    return _FloorStats(h, stats)


def _floor_features_per_split(
    cols: dict[str, np.ndarray], edges: dict[str, np.ndarray], n_splits: int, max_events: int, seed: int, min_half: int
) -> _FloorStats:
    """The straightforward floor (sort both halves of every split); kept as the reference for tests."""
    n = next(iter(cols.values())).size
    h = min(n // 2, max_events)
    if h < min_half:
        msg = f"noise floor: {n} reference events give halves of {h}, need at least {min_half}"
        raise M.TooFewEventsError(msg)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    acc: dict[str, dict[str, list[float]]] = {f: {"ks": [], "w1": [], "sp": []} for f in cols}
    for _ in range(n_splits):
        perm = rng.permutation(n)
        a, b = perm[:h], perm[h : 2 * h]
        for f, c in cols.items():
            r = M.ks_w1(c[a], c[b])
            acc[f]["ks"].append(r.ks)
            acc[f]["w1"].append(r.w1)
            acc[f]["sp"].append(M.histogram_separation_power(c[a], c[b], edges[f]))
    stats = {}
    for f, d in acc.items():
        stats[f] = {}
        for k, v in d.items():
            arr = np.asarray(v)
            stats[f][k] = float(arr.mean())
            stats[f][k + "_std"] = float(arr.std(ddof=1))
    return _FloorStats(h, stats)


def _edges_for(spec: GateSpec, name: str, ref: np.ndarray, cands: list[np.ndarray], g: Geometry, thr: float) -> np.ndarray:
    rmax = max(layer.r_edges_mm[-1] for layer in g.layers)
    return M.feature_binning(
        ref, cands, n_bins=spec.n_bins, method=spec.binning, family=feature_family(name), threshold_mev=thr, geometry_r_max_mm=rmax
    )


# ------------------------------------------------------------------ prepared reference


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
    #: reference side of FPD/KPD per ((fpd min, max sizes), kpd batch size, candidate rows), see :class:`_RefBatches`
    ref_batches: dict[tuple[Any, Any, int], _RefBatches] = field(default_factory=dict, repr=False)

    def bin_sorted(self, b: EnergyBin) -> dict[str, np.ndarray]:
        """The reference's sorted feature columns in energy bin ``b`` (computed once, reused per candidate)."""
        got = self._bin_sorted.get(b.label)
        if got is None:
            rmask = b.mask(self.features.incident_energy)
            got = {f: np.sort(self.features[f][rmask].astype(np.float64)) for f in self.features.names}
            self._bin_sorted[b.label] = got
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
        _progress_bar: Any = None,
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
        with _progress(progress and _progress_bar is None) as pb:
            bar = _progress_bar or pb
            sample = read_sample(
                src, "reference", geometry=geometry, threshold_mev=thr, keep_voxels=keep, step_size=step_size,
                seed=spec.seed, progress=bar,
            )
            prep = cls.from_sample(sample, spec, progress=bar)
        _cache_store(prep, key, path)
        return prep

    @classmethod
    def from_sample(cls, sample: Sample, spec: GateSpec, progress: Any = None) -> PreparedReference:
        t = sample.features
        stage = _Stages(progress, "noise floor (ref/ref)", 4)
        if t.n_events < spec.min_events:
            msg = f"{sample.source}: {t.n_events} reference events, the gate spec needs at least min_events={spec.min_events}"
            raise M.TooFewEventsError(
                msg
            )
        t0 = time.perf_counter()
        sorted_cols = {f: np.sort(t[f].astype(np.float64)) for f in t.names}
        prep = cls(sample, spec, sorted_cols, _FloorStats(0, {}))
        prep.timings = {"read": sample.timings.get("read", 0.0), "features": sample.timings.get("features", 0.0)}
        if spec.fpd.enabled or spec.kpd.enabled:
            prep.hlv = high_level_vector(t)
        prep.timings["sort"] = time.perf_counter() - t0
        # the classifier floor (torch, one thread) trains on the second core while the floor runs here
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifier-floor") as pool:
            cls_job = pool.submit(_timed, _classifier_floor, prep) if spec.classifier.enabled and spec.classifier.floor else None
            t0 = time.perf_counter()
            # floor bins come from the reference only; candidate bins are widened per candidate
            edges = {f: _edges_for(spec, f, sorted_cols[f], [], t.geometry, t.threshold_mev) for f in t.names}
            cols = {f: t[f].astype(np.float64) for f in t.names}
            prep.floor = _floor_features(
                cols, edges, spec.noise_floor.n_splits, spec.noise_floor.max_events, spec.seed, max(spec.min_events // 2, 2)
            )
            prep.timings["floor"] = time.perf_counter() - t0
            stage.next()
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
            stage.next()
            t0 = time.perf_counter()
            if prep.hlv is not None:
                prep.multivariate_floor = _multivariate_floor(prep)
            prep.timings["fpd_kpd"] = time.perf_counter() - t0
            stage.next()
            if cls_job is not None:
                prep.classifier_floor, prep.timings["classifier"] = cls_job.result()
            stage.next()
        return prep


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _cache_lookup(
    reference: Any, spec: GateSpec, threshold_mev: float | None, cache: Any
) -> tuple[dict[str, Any] | None, Path | None, PreparedReference | None]:
    """(key, cache file, loaded reference or None); key and file are None when caching is off or impossible."""
    from . import cache as C

    if cache is False or cache == "off":
        return None, None, None
    key = C.reference_key(reference, spec, threshold_mev)
    if key is None:
        log.info("reference %s: in-memory chunks are not cached", _describe(reference))
        return None, None, None
    path = C.cache_file(key, cache)
    if path is None:
        return None, None, None
    prep = C.load_reference(path, key, spec)
    if prep is not None:
        prep.cache_info = {"status": "loaded", "path": str(path)}
    return key, path, prep


def _cache_store(prep: PreparedReference, key: dict[str, Any] | None, path: Path | None, loaded: bool = False) -> None:
    from . import cache as C

    if key is None or path is None:
        prep.cache_info = {"status": "off"}
        return
    ok = C.save_reference(prep, path, key)
    if loaded:
        prep.cache_info = {"status": "loaded", "path": str(path), "updated": ok}
    else:
        prep.cache_info = {"status": "written" if ok else "computed", "path": str(path)}


class _Stages:
    """A progress-bar task advanced once per stage (no-op without a progress bar)."""

    def __init__(self, progress: Any, label: str, n: int) -> None:
        self.progress = progress
        self.task = progress.add_task(label, total=n) if progress is not None else None

    def next(self) -> None:
        if self.task is not None:
            self.progress.advance(self.task)


def _half_split(n: int, seed: int, cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    perm = rng.permutation(n)
    h = n // 2 if cap is None else min(n // 2, cap)
    return perm[:h], perm[h : 2 * h]


def _fpd_sizes(rule: Any, n_small: int, dim: int) -> tuple[int, int]:
    hi = min(rule.max_samples, n_small)
    lo = min(rule.min_samples, max(hi // 2, 1))
    if lo < 2 * dim:
        msg = f"FPD: {n_small} events per sample give batches of {lo}, need at least {2 * dim} for {dim} features"
        raise M.TooFewEventsError(
            msg
        )
    return lo, hi


_KPD_BATCHES = 10  # metrics.kpd's default (JetNet), as before


@dataclass
class _RefBatches:
    """The reference side of FPD and KPD, computed once and reused for every candidate (and cached).

    :func:`metrics.fpd` and :func:`metrics.kpd` resample both samples per batch from one seeded
    stream. Which rows are drawn depends only on the seed and the two sample sizes, not on the
    values, so for a given candidate size the reference's resamples (their means and covariances
    for FPD, their kernel sums for KPD) are the same for every candidate: they are computed once
    here; each candidate replays the stream for its own rows. The results are bitwise those of
    :func:`metrics.fpd` / :func:`metrics.kpd`.
    """

    scale: np.ndarray  # JetNet normalisation: max |reference feature|
    fpd_mu: np.ndarray | None = None  # (P, B, D)
    fpd_cov: np.ndarray | None = None  # (P, B, D, D)
    kpd_idx: np.ndarray | None = None  # (K, batch) reference rows of each KPD batch
    kpd_kxx: np.ndarray | None = None  # (K,) unbiased kernel mean of each reference batch

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}


def _kernel_sum(a: np.ndarray, b: np.ndarray, same: bool, block: int = 2048) -> float:
    """Sum of ``(a.b / d + 1)^4`` over all pairs (without the diagonal when ``same``), as metrics.mmd_poly_unbiased."""
    gamma = 1.0 / a.shape[1]
    tot = 0.0
    for i in range(0, a.shape[0], block):
        k = a[i : i + block] @ b.T
        k *= gamma
        k += 1.0
        np.square(k, out=k)
        np.square(k, out=k)
        tot += float(k.sum())
    if same:
        tot -= float(((np.einsum("ij,ij->i", a, a) * gamma + 1.0) ** 4).sum())
    return tot


def _fpd_sizes_grid(spec: GateSpec, lo: int, hi: int) -> np.ndarray:
    return (1.0 / np.linspace(1.0 / lo, 1.0 / hi, spec.fpd.num_points)).astype(np.int64)


def _ref_batches(spec: GateSpec, x: np.ndarray, ny: int, fpd_sizes: tuple[int, int] | None, kpd_batch: int | None) -> _RefBatches:
    """Reference side of FPD/KPD of ``x`` against any candidate of ``ny`` rows (the draws of metrics.fpd/kpd)."""
    scale = np.max(np.abs(x), axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    xn = x / scale
    rb = _RefBatches(scale)
    nx = xn.shape[0]
    if fpd_sizes is not None:
        rng = np.random.default_rng(spec.seed)
        sizes = _fpd_sizes_grid(spec, *fpd_sizes)
        nb, d = spec.fpd.num_batches, x.shape[1]
        rb.fpd_mu = np.empty((sizes.size, nb, d))
        rb.fpd_cov = np.empty((sizes.size, nb, d, d))
        for p, n in enumerate(sizes):
            for j in range(nb):
                a = xn[rng.integers(0, nx, n)]
                rng.integers(0, ny, n)  # the candidate's draw of this batch
                rb.fpd_mu[p, j], rb.fpd_cov[p, j] = a.mean(axis=0), M._cov(a)
    if kpd_batch is not None:
        rng = np.random.default_rng(spec.seed)
        m = kpd_batch
        idx = np.empty((_KPD_BATCHES, m), dtype=np.int64)
        kxx = np.empty(_KPD_BATCHES)
        for i in range(_KPD_BATCHES):
            idx[i] = rng.integers(0, nx, m)
            rng.integers(0, ny, m)
            kxx[i] = _kernel_sum(xn[idx[i]], xn[idx[i]], True) / (m * (m - 1))
        rb.kpd_idx, rb.kpd_kxx = idx, kxx
    return rb


def _fpd_from(rb: _RefBatches, yn: np.ndarray, spec: GateSpec, fpd_sizes: tuple[int, int], nx: int) -> tuple[float, float]:
    """metrics.fpd against the stored reference batches (the candidate's rows replayed from the same stream)."""
    import warnings as _w

    from scipy import optimize

    assert rb.fpd_mu is not None and rb.fpd_cov is not None
    rng = np.random.default_rng(spec.seed)
    sizes = _fpd_sizes_grid(spec, *fpd_sizes)
    points = []
    for p, n in enumerate(sizes):
        vals = []
        for j in range(rb.fpd_mu.shape[1]):
            rng.integers(0, nx, n)  # the reference's draw (stored)
            b = yn[rng.integers(0, yn.shape[0], n)]
            vals.append(M.frechet_distance(rb.fpd_mu[p, j], rb.fpd_cov[p, j], b.mean(axis=0), M._cov(b)))
        points.append(np.mean(vals))
    with _w.catch_warnings():
        _w.simplefilter("ignore", optimize.OptimizeWarning)
        params, covs = optimize.curve_fit(
            lambda t, c, s: c + s * t, 1.0 / sizes, np.asarray(points), bounds=([0, 0], [np.inf, np.inf])
        )
    return float(params[0]), float(np.sqrt(np.diag(covs)[0]))


def _kpd_from(rb: _RefBatches, xn: np.ndarray, yn: np.ndarray, spec: GateSpec) -> tuple[float, float]:
    """metrics.kpd against the stored reference batches."""
    assert rb.kpd_idx is not None and rb.kpd_kxx is not None
    rng = np.random.default_rng(spec.seed)
    m = n = rb.kpd_idx.shape[1]
    vals = np.empty(rb.kpd_idx.shape[0])
    for i, idx in enumerate(rb.kpd_idx):
        rng.integers(0, xn.shape[0], m)
        a = xn[idx]
        b = yn[rng.integers(0, yn.shape[0], n)]
        kyy = _kernel_sum(b, b, True) / (n * (n - 1))
        kxy = _kernel_sum(a, b, False) / (m * n)
        vals[i] = rb.kpd_kxx[i] + kyy - 2.0 * kxy
    lo, hi = np.percentile(vals, [16.275, 83.725])
    return float(np.median(vals)), float((hi - lo) / 2.0)


def _multivariate(prep: PreparedReference, x: np.ndarray, y: np.ndarray, n_small: int) -> dict[str, Any]:
    """FPD and KPD of x (the reference's half A) vs y, batch sizes from ``n_small`` (so floor and candidate match).

    The reference batches for these sizes are computed once per :class:`PreparedReference` (and
    stored in the cached reference for the floor's sizes); only the candidate's side is new.
    """
    spec = prep.spec
    out: dict[str, Any] = {}
    dim = x.shape[1]
    fsz: tuple[int, int] | None = None
    kbs: int | None = None
    if spec.fpd.enabled:
        try:
            fsz = _fpd_sizes(spec.fpd, n_small, dim)
            _check_finite(x, y, "FPD")
        except M.TooFewEventsError as err:
            if spec.fpd.gate:
                raise
            out["fpd"] = {"skipped": str(err)}
    if spec.kpd.enabled:
        bs = min(spec.kpd.batch_size, n_small)
        if bs < 20:
            err = M.TooFewEventsError(f"KPD: batches of {bs} events, need at least 20")
            if spec.kpd.gate:
                raise err
            out["kpd"] = {"skipped": str(err)}
        else:
            _check_finite(x, y, "KPD")
            kbs = bs
    if fsz is None and kbs is None:
        return out
    key = (fsz, kbs, int(y.shape[0]))
    rb = prep.ref_batches.get(key)
    if rb is None:
        rb = prep.ref_batches[key] = _ref_batches(spec, x, int(y.shape[0]), fsz, kbs)
    yn = y / rb.scale
    if fsz is not None:
        v, e = _fpd_from(rb, yn, spec, fsz, int(x.shape[0]))
        out["fpd"] = {"value": v, "err": e, "min_samples": fsz[0], "max_samples": fsz[1]}
    if kbs is not None:
        v, e = _kpd_from(rb, x / rb.scale, yn, spec)
        out["kpd"] = {"value": v, "err": e, "batch_size": kbs}
    return out


def _check_finite(x: np.ndarray, y: np.ndarray, what: str) -> None:
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        msg = f"{what}: NaN or infinite feature values"
        raise ConfigError(msg)


def _multivariate_floor(prep: PreparedReference) -> dict[str, Any]:
    assert prep.hlv is not None
    a, b = _half_split(prep.hlv.shape[0], prep.spec.seed)
    return _multivariate(prep, prep.hlv[a], prep.hlv[b], len(a))


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


def _run_classifier(spec: GateSpec, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from .classifier import classifier_test

    cr = spec.classifier
    r = classifier_test(
        x, y, n_hidden=cr.n_hidden, n_layers=cr.n_layers, epochs=cr.epochs, batch_size=cr.batch_size, lr=cr.lr,
        calibrate=cr.calibrate, max_events=cr.max_events, min_events=cr.min_events, seed=spec.seed,
    )
    return r.to_dict()


def _classifier_floor(prep: PreparedReference) -> dict[str, Any]:
    out = {}
    for kind in prep.spec.classifier.inputs:
        x = _classifier_inputs(kind, prep.sample, prep.hlv)
        a, b = _half_split(x.shape[0], prep.spec.seed)
        try:
            out[kind] = _run_classifier(prep.spec, x[a], x[b])
        except M.TooFewEventsError as err:
            out[kind] = {"skipped": f"noise floor: {err}"}
    return out


# ------------------------------------------------------------------ candidates


@dataclass
class CandidateResult:
    """Every number for one candidate against the reference."""

    name: str
    source: str
    n_events: int
    features: dict[str, dict[str, Any]]
    per_energy_bin: dict[str, dict[str, dict[str, Any]]]
    multivariate: dict[str, Any]
    classifier: dict[str, Any]
    incident_energy: dict[str, Any]
    warnings: list[str]
    sample: Sample | None = None
    #: seconds per stage (read, features, metrics_1d, per_energy_bin, fpd_kpd, classifier; the classifier overlaps)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "n_events": self.n_events,
            "incident_energy": self.incident_energy,
            "warnings": self.warnings,
            "features": self.features,
            "per_energy_bin": self.per_energy_bin,
            "multivariate": self.multivariate,
            "classifier": self.classifier,
        }


def _hist_sorted(xs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram(xs, edges)[0]`` of a sorted ``xs`` without sorting it again (same counts, last bin closed)."""
    lo = np.searchsorted(xs, edges[:-1], side="left")
    hi = np.searchsorted(xs, edges[1:], side="left")
    hi[-1] = np.searchsorted(xs, edges[-1], side="right")
    return hi - lo


def _ks_w1_sorted(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """KS D and W1 of two sorted samples, exactly as :func:`metrics.ks_w1` computes them (no p-value)."""
    both = np.concatenate([xs, ys])
    order = np.argsort(both, kind="stable")  # two sorted runs: a linear merge
    allv = both[order]
    nx = np.cumsum(order < xs.size)  # xs values among the first i+1 merged values
    cx = nx / xs.size
    cy = (np.arange(1, allv.size + 1) - nx) / ys.size
    d = np.abs(cx - cy)
    dv = np.diff(allv)
    # the CDFs are right-continuous: read D at the last of each group of tied values; inside a group
    # dv is 0, so W1 gets exactly the terms metrics.ks_w1 sums (bitwise the same result)
    last = np.append(dv != 0, True)
    return float(d[last].max()), float(np.sum(d[:-1] * dv))


def _resample_sorted(xs: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``np.sort(xs[idx])`` of a sorted ``xs`` in linear time (repeat each value by its draw count)."""
    return np.repeat(xs, np.bincount(idx, minlength=xs.size))


def _bootstrap_ks_w1_sorted(
    xs: np.ndarray, ys: np.ndarray, *, n_boot: int, max_events: int, seed: int
) -> tuple[float, float]:
    """:func:`metrics.bootstrap_ks_w1` for sorted inputs: same draws, same numbers, no sorting per resample."""
    if n_boot < 2:
        msg = f"bootstrap needs n_boot >= 2, got {n_boot}"
        raise ConfigError(msg)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    mx, my = min(xs.size, max_events), min(ys.size, max_events)
    ksv, wv = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        a = _resample_sorted(xs, rng.integers(0, xs.size, mx))
        c = _resample_sorted(ys, rng.integers(0, ys.size, my))
        ksv[b], wv[b] = _ks_w1_sorted(a, c)
    scale = math.sqrt((1.0 / xs.size + 1.0 / ys.size) / (1.0 / mx + 1.0 / my))
    return float(ksv.std(ddof=1) * scale), float(wv.std(ddof=1) * scale)


def _feature_metrics(
    prep: PreparedReference,
    cand: FeatureTable,
    *,
    ref_sorted: dict[str, np.ndarray],
    floor: _FloorStats,
    bootstrap: bool,
    seed: int,
) -> dict[str, dict[str, Any]]:
    spec = prep.spec
    out: dict[str, dict[str, Any]] = {}
    n_ref = next(iter(ref_sorted.values())).size
    for i, f in enumerate(cand.names):
        r = ref_sorted[f]
        c = np.sort(cand[f].astype(np.float64))
        res = M.ks_w1(r, c, presorted=True)
        edges = _edges_for(spec, f, r, [c], cand.geometry, cand.threshold_mev)
        h1 = _hist_sorted(r, edges)
        h2 = _hist_sorted(c, edges)
        try:
            sp = M.separation_power(h1, h2)
        except M.TooFewEventsError:
            sp = float("nan")
        d: dict[str, Any] = {
            "ks": res.ks,
            "pvalue": res.pvalue,
            "w1": res.w1,
            "sp": sp,
            "ref_mean": float(r.mean()),
            "cand_mean": float(c.mean()),
            "floor": {
                **floor.scaled(f, n_ref, c.size),
                # one-event resolution: what moving a single candidate event across the observed range does
                "w1_res": float(max(r[-1], c[-1]) - min(r[0], c[0])) / c.size,
                "ks_res": 1.0 / c.size,
                "sp_res": 1.0 / c.size,
            },
        }
        if bootstrap:
            kse, w1e = _bootstrap_ks_w1_sorted(
                r, c, n_boot=spec.bootstrap.n_boot, max_events=spec.bootstrap.max_events, seed=seed + 17 * i
            )
            d["ks_err"], d["w1_err"] = kse, w1e
            d["sp_err"] = (
                M.bootstrap_separation_power(h1, h2, n_boot=spec.bootstrap.n_boot_hist, seed=seed + 17 * i)
                if math.isfinite(sp) else float("nan")
            )
        out[f] = d
    return out


def _candidate_classifier(prep: PreparedReference, sample: Sample) -> tuple[dict[str, Any], float]:
    """The classifier tests of one candidate (run on a worker thread next to the other metrics)."""
    t0 = time.perf_counter()
    spec = prep.spec
    cls_out: dict[str, Any] = {}
    for kind in spec.classifier.inputs:
        x = _classifier_inputs(kind, prep.sample, prep.hlv)
        y = _classifier_inputs(kind, sample)
        try:
            r = _run_classifier(spec, x, y)
        except M.TooFewEventsError as err:
            if spec.classifier.gate:
                msg = f"{sample.source}: classifier ({kind}): {err}"
                raise M.TooFewEventsError(msg) from None
            cls_out[kind] = {"skipped": str(err)}
            continue
        fl = prep.classifier_floor.get(kind)
        if fl is not None:
            r["floor"] = fl if "auc" in fl else None
        cls_out[kind] = r
    return cls_out, time.perf_counter() - t0


def evaluate_candidate(
    prep: PreparedReference,
    name: str,
    candidate: Any,
    *,
    step_size: int = 100_000,
    progress: Any = None,
) -> CandidateResult:
    """Read ``candidate`` (path, ShowerSet, reader or chunks) and compute every metric against ``prep``."""
    spec = prep.spec
    if isinstance(candidate, Sample):
        sample = candidate
    else:
        keep = spec.classifier.max_events if (spec.classifier.enabled and "low" in spec.classifier.inputs) else 0
        sample = read_sample(
            candidate, name, geometry=prep.geometry, threshold_mev=prep.features.threshold_mev, keep_voxels=keep,
            step_size=step_size, seed=spec.seed + 1, progress=progress if progress is not False else None,
        )
    t = sample.features
    stage = _Stages(progress if progress is not False else None, f"metrics {name}", 4)
    if t.n_events < spec.min_events:
        msg = f"{sample.source}: {t.n_events} candidate events, the gate spec needs at least min_events={spec.min_events}"
        raise M.TooFewEventsError(
            msg
        )
    warns: list[str] = []
    # incident energies: CaloChallenge warns that a different E_inc distribution distorts every histogram
    einc = M.ks_w1(prep.features.incident_energy, t.incident_energy)
    mismatch = einc.pvalue < spec.energy_mismatch_pvalue
    einfo = {"ks": einc.ks, "pvalue": einc.pvalue, "mismatch": bool(mismatch)}
    if mismatch:
        msg = (
            f"{sample.source}: incident-energy distribution differs from the reference (KS D={einc.ks:.3g}, "
            f"p={einc.pvalue:.2g}); inclusive histograms are distorted, compare per energy bin "
            f"(--per-energy-bin / per_energy_bin: true)"
        )
        if spec.energy_mismatch == "error":
            raise ConfigError(msg)
        warns.append(msg)
    timings = dict(sample.timings)
    # the classifier (torch, one thread) trains on the second core while the other metrics run here
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifier") as pool:
        cls_job = pool.submit(_candidate_classifier, prep, sample) if spec.classifier.enabled else None
        t0 = time.perf_counter()
        feats = _feature_metrics(prep, t, ref_sorted=prep.sorted_cols, floor=prep.floor, bootstrap=True, seed=spec.seed)
        timings["metrics_1d"] = time.perf_counter() - t0
        stage.next()
        # per incident-energy bin (reference bins)
        t0 = time.perf_counter()
        per_bin: dict[str, dict[str, dict[str, Any]]] = {}
        for b in prep.bins:
            fl = prep.bin_floors.get(b.label)
            cmask = b.mask(t.incident_energy)
            nc = int(cmask.sum())
            if not isinstance(fl, _FloorStats) or nc < spec.min_bin_events:
                why = fl if isinstance(fl, str) else f"{nc} candidate events in this bin, need {spec.min_bin_events}"
                per_bin[b.label] = {"_skipped": {"skipped": why}}
                continue
            rs = prep.bin_sorted(b)
            per_bin[b.label] = _feature_metrics(prep, t.select(cmask), ref_sorted=rs, floor=fl, bootstrap=False, seed=spec.seed)
        outside = int((~np.any([b.mask(t.incident_energy) for b in prep.bins], axis=0)).sum()) if prep.bins else 0
        if outside:
            warns.append(f"{sample.source}: {outside} candidate events have incident energies outside every reference bin")
        timings["per_energy_bin"] = time.perf_counter() - t0
        stage.next()
        t0 = time.perf_counter()
        mv: dict[str, Any] = {}
        if prep.hlv is not None:
            # FPD_inf from finite samples keeps a size-dependent bias, so the candidate is compared at the
            # floor's sizes: reference half A versus a same-seed subsample of the candidate of that size.
            y = high_level_vector(t)
            a, _ = _half_split(prep.hlv.shape[0], spec.seed)
            cperm = np.random.default_rng(np.random.SeedSequence([spec.seed, 5])).permutation(y.shape[0])[: a.size]
            mv = _multivariate(prep, prep.hlv[a], y[cperm], min(a.size, cperm.size))
            for k, v in mv.items():
                fl = prep.multivariate_floor.get(k, {})
                if "value" in v:
                    if "value" not in fl:
                        msg_0 = f"{k}: reference noise floor unavailable ({fl.get('skipped', 'disabled')})"
                        raise M.TooFewEventsError(msg_0)
                    v["floor"], v["floor_err"] = fl["value"], fl["err"]
        stage.next()
        timings["fpd_kpd"] = time.perf_counter() - t0
        cls_out: dict[str, Any] = {}
        if cls_job is not None:
            cls_out, timings["classifier"] = cls_job.result()
        stage.next()
    return CandidateResult(
        name, sample.source, t.n_events, feats, per_bin, mv, cls_out, einfo, warns, sample, timings=timings
    )


# ------------------------------------------------------------------ result


@dataclass
class ValidationResult:
    """Outcome of :func:`validate`: every number, the gate checks and the samples for plotting."""

    reference: PreparedReference
    candidates: dict[str, CandidateResult]
    spec: GateSpec
    checks: list[GateCheck]
    created: str = field(default_factory=utc_now)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failed_checks(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def passed_for(self, candidate: str) -> bool:
        return all(c.passed for c in self.checks if c.candidate == candidate)

    def to_dict(self) -> dict[str, Any]:
        ref = self.reference
        floor = {f: dict(v, n_half=ref.floor.n_half) for f, v in ref.floor.stats.items()}
        return {
            "format_version": 1,
            "created": self.created,
            "software": software_versions(),
            "passed": self.passed,
            "gate_spec": self.spec.model_dump(mode="json"),
            "reference": {
                "source": ref.sample.source,
                "n_events": ref.n_events,
                "geometry": ref.geometry.name,
                "geometry_fingerprint": ref.geometry.fingerprint,
                "threshold_mev": ref.features.threshold_mev,
                "energy_bins": [{"label": b.label, "lo_mev": b.lo, "hi_mev": b.hi} for b in ref.bins],
                "noise_floor_raw": floor,
                "multivariate_floor": ref.multivariate_floor,
                "classifier_floor": ref.classifier_floor,
                "notes": ref.notes,
                "cache": ref.cache_info,
                "timings_s": ref.timings,
            },
            "candidates": {
                n: {**c.to_dict(), "passed": self.passed_for(n), "timings_s": c.timings} for n, c in self.candidates.items()
            },
            "checks": [c.to_dict() for c in self.checks],
            "false_alarm": false_alarm_summary(self.spec, ref),  # the gate's family-wise rate (issue 20)
        }

    def to_json(self) -> str:
        return json.dumps(_jsonable(self.to_dict()), indent=1, allow_nan=False)

    def write(
        self, out_dir: str | os.PathLike[str], *, html: bool = True, progress: bool = False, max_feature_figures: int | None = None
    ) -> Path:
        """Write ``metrics.json`` (and ``report.html``) into ``out_dir`` atomically; returns the directory."""
        from .report import write_report

        return write_report(self, out_dir, html=html, progress=progress, max_feature_figures=max_feature_figures)


def _jsonable(o: Any) -> Any:
    """NaN/inf become None (strict JSON); numpy scalars become Python numbers."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def _preflight(reference: Any, candidates: dict[str, Any], spec: GateSpec) -> None:
    """Cheap checks before any heavy work: files open, geometries match, enough events (where known)."""
    if isinstance(reference, PreparedReference):
        rgeom: Geometry | None = reference.geometry
    elif isinstance(reference, (str, os.PathLike, ShowerSet)):
        rgeom, _, n = _open(reference, None)
        if n is not None and n < spec.min_events:
            msg = f"{_describe(reference)}: {n} reference events, the gate spec needs at least min_events={spec.min_events}"
            raise M.TooFewEventsError(
                msg
            )
    else:
        return
    for src in candidates.values():
        if not isinstance(src, (str, os.PathLike, ShowerSet)):
            continue
        g, _, n = _open(src, rgeom)
        if n == 0:
            msg = f"{_describe(src)}: no events (empty file or selection)"
            raise ShowerFileError(msg)
        if g is not None and rgeom is not None and not g.same_binning(rgeom):
            msg = (
                f"{_describe(src)}: geometry {g.name!r} ({g.n_voxels} voxels) does not match the reference geometry "
                f"{rgeom.name!r} ({rgeom.n_voxels} voxels)"
            )
            raise GeometryError(
                msg
            )
        if n is not None and n < spec.min_events:
            msg = f"{_describe(src)}: {n} candidate events, the gate spec needs at least min_events={spec.min_events}"
            raise M.TooFewEventsError(
                msg
            )


def validate(
    reference: Any,
    candidates: dict[str, Any],
    spec: GateSpec | str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    threshold_mev: float | None = None,
    per_energy_bin: bool | None = None,
    step_size: int = 100_000,
    progress: bool = True,
    html: bool = True,
    cache: Any = "auto",
) -> ValidationResult:
    """Validate candidates against a reference.

    Args:
        reference: path (ROOT/HDF5/dir/glob), ShowerSet, reader, or :class:`PreparedReference`.
        candidates: name -> source (same kinds as ``reference``).
        spec: :class:`GateSpec`, preset name or YAML path (``"default"`` if None).
        out_dir: if given, write ``metrics.json`` and ``report.html`` there.
        threshold_mev: voxel threshold (overrides the spec; default CaloChallenge's per dataset).
        per_energy_bin: gate on per-incident-energy-bin metrics too (overrides the spec).
        cache: the cached reference (:mod:`simcompress.validation.cache`): "auto" (user cache
            folder), a folder or ``.npz`` path, or False. With a matching entry the reference is
            not read again and its noise floor is not recomputed.
    """
    gate_spec = load_gate_spec(spec)
    updates: dict[str, Any] = {}
    if threshold_mev is not None:
        updates["threshold_mev"] = threshold_mev
    if per_energy_bin is not None:
        updates["per_energy_bin"] = per_energy_bin
    if updates:
        gate_spec = gate_spec.model_copy(update=updates)
    if not candidates:
        msg = "validate: no candidates given"
        raise ConfigError(msg)
    _preflight(reference, candidates, gate_spec)
    keep = gate_spec.classifier.max_events if (gate_spec.classifier.enabled and "low" in gate_spec.classifier.inputs) else 0
    with _progress(progress) as bar:
        # read everything first (one streaming pass each), so bad files fail before the costly floor
        ref_sample: Sample | None = None
        key: dict[str, Any] | None = None
        cpath: Path | None = None
        if isinstance(reference, PreparedReference):
            prep: PreparedReference | None = reference
        else:
            key, cpath, prep = _cache_lookup(reference, gate_spec, gate_spec.threshold_mev, cache)
        if prep is not None:
            geom, thr = prep.geometry, prep.features.threshold_mev
        else:
            ref_sample = read_sample(
                reference, "reference", threshold_mev=gate_spec.threshold_mev, keep_voxels=keep, step_size=step_size,
                seed=gate_spec.seed, progress=bar,
            )
            geom, thr = ref_sample.geometry, ref_sample.features.threshold_mev
        samples: dict[str, Sample] = {}
        for name, src in candidates.items():
            smp = src if isinstance(src, Sample) else read_sample(
                src, name, geometry=geom, threshold_mev=thr, keep_voxels=keep, step_size=step_size,
                seed=gate_spec.seed + 1, progress=bar,
            )
            if smp.features.n_events < gate_spec.min_events:
                msg = (
                    f"{smp.source}: {smp.features.n_events} candidate events, the gate spec needs at least "
                    f"min_events={gate_spec.min_events}"
                )
                raise M.TooFewEventsError(
                    msg
                )
            samples[name] = smp
        if prep is None:
            assert ref_sample is not None
            prep = PreparedReference.from_sample(ref_sample, gate_spec, progress=bar)
            _cache_store(prep, key, cpath)
        results = {}
        for name, smp in samples.items():
            results[name] = evaluate_candidate(prep, name, smp, step_size=step_size, progress=bar)
    for r in results.values():
        for w in r.warnings:
            if r.incident_energy.get("mismatch") and "incident-energy distribution differs" in w:
                warnings.warn(w, EnergyMismatchWarning, stacklevel=2)
            else:
                log.warning(w)
    from . import cache as _cache

    n_cal = len(_cache.calibrations(prep))
    res = ValidationResult(prep, results, gate_spec, evaluate_gate(gate_spec, results, reference=prep))
    if key is not None and cpath is not None and len(_cache.calibrations(prep)) > n_cal:
        _cache_store(prep, key, cpath, prep.cache_info.get("status") == "loaded")  # keep the new calibration too
    if out_dir is not None:
        res.write(out_dir, html=html, progress=progress)
    return res
