"""One candidate against the prepared reference: every metric, with the noise floor beside it.

:func:`evaluate_candidate` reads a candidate (or takes its :class:`~.sources.Sample`) and returns
a :class:`CandidateResult`: per-feature KS, W1 and separation power with bootstrap errors
(inclusive and per incident-energy bin), FPD/KPD and the classifier test. The sorted-sample
shortcuts here give bitwise the numbers of :mod:`simcompress.validation.metrics`.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._progress import progress_bar
from ..errors import ConfigError
from . import metrics as M
from .features import FeatureTable, high_level_vector
from .floor import _edges_for, _FloorStats, _half_split
from .multivariate import _multivariate
from .prepared import PreparedReference, _classifier_inputs, _run_classifier
from .sources import Sample, read_sample

__all__ = ["CandidateResult", "EnergyMismatchWarning", "evaluate_candidate"]


class EnergyMismatchWarning(UserWarning):
    """Reference and candidate incident-energy distributions differ (histograms are distorted)."""


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
    progress: bool = False,
) -> CandidateResult:
    """Read ``candidate`` (path, ShowerSet, reader or chunks) and compute every metric against ``prep``.

    ``candidate`` may also be a :class:`~.sources.Sample` already read; ``progress`` shows bars.
    """
    spec = prep.spec
    if isinstance(candidate, Sample):
        sample = candidate
    else:
        keep = spec.classifier.max_events if (spec.classifier.enabled and "low" in spec.classifier.inputs) else 0
        sample = read_sample(
            candidate, name, geometry=prep.geometry, threshold_mev=prep.features.threshold_mev, keep_voxels=keep,
            step_size=step_size, seed=spec.seed + 1, progress=progress,
        )
    t = sample.features
    if t.n_events < spec.min_events:
        msg = f"{sample.source}: {t.n_events} candidate events, the gate spec needs at least min_events={spec.min_events}"
        raise M.TooFewEventsError(msg)
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
    with (
        progress_bar(f"metrics {name}", 4, enabled=progress) as stage,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifier") as pool,
    ):
        cls_job = pool.submit(_candidate_classifier, prep, sample) if spec.classifier.enabled else None
        t0 = time.perf_counter()
        feats = _feature_metrics(prep, t, ref_sorted=prep.sorted_cols, floor=prep.floor, bootstrap=True, seed=spec.seed)
        timings["metrics_1d"] = time.perf_counter() - t0
        stage.advance(1)
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
        stage.advance(1)
        t0 = time.perf_counter()
        mv: dict[str, Any] = {}
        if prep.hlv is not None:
            # FPD_inf from finite samples keeps a size-dependent bias, so the candidate is compared at the
            # floor's sizes: reference half A versus a same-seed subsample of the candidate of that size.
            y = high_level_vector(t)
            a, _ = _half_split(prep.hlv.shape[0], spec.seed)
            cperm = np.random.default_rng(np.random.SeedSequence([spec.seed, 5])).permutation(y.shape[0])[: a.size]
            mv = _multivariate(spec, prep.ref_batches, prep.hlv[a], y[cperm], min(a.size, cperm.size))
            for k, v in mv.items():
                fl = prep.multivariate_floor.get(k, {})
                if "value" in v:
                    if "value" not in fl:
                        msg_0 = f"{k}: reference noise floor unavailable ({fl.get('skipped', 'disabled')})"
                        raise M.TooFewEventsError(msg_0)
                    v["floor"], v["floor_err"] = fl["value"], fl["err"]
        stage.advance(1)
        timings["fpd_kpd"] = time.perf_counter() - t0
        cls_out: dict[str, Any] = {}
        if cls_job is not None:
            cls_out, timings["classifier"] = cls_job.result()
        stage.advance(1)
    return CandidateResult(
        name, sample.source, t.n_events, feats, per_bin, mv, cls_out, einfo, warns, sample, timings=timings
    )
