"""One candidate against the prepared reference: every metric, with the noise floor beside it.

:func:`evaluate_candidate` reads a candidate (or takes its :class:`~.sources.Sample`) and returns
a :class:`CandidateResult`: per-feature KS, W1 and separation power with bootstrap errors
(inclusive and per incident-energy bin), FPD/KPD and the classifier test. The sorted-sample
shortcuts (:mod:`.one_d`) give bitwise the numbers of :mod:`simcompress.validation.metrics`; the
features, the energy bins and FPD/KPD run side by side (worker threads, and the classifier on its own).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._progress import progress_bar
from ..errors import ConfigError
from . import metrics as M
from .feature_kernel import busy_core
from .features import EnergyBin, FeatureTable, _pool, high_level_vector
from .floor import _FloorStats, _half_split
from .multivariate import _multivariate
from .one_d import FeatureJob, _bootstrap_ks_w1_sorted, _hist_sorted, sorted_columns  # noqa: F401  (the tests read them from here)
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


def _feature_metrics(
    prep: PreparedReference,
    cand: FeatureTable,
    *,
    ref_sorted: dict[str, np.ndarray],
    floor: _FloorStats,
    bootstrap: bool,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Every feature of ``cand`` against ``ref_sorted`` on this thread (see :class:`~.one_d.FeatureJob`)."""
    return _job(prep, None, cand, ref_sorted, floor, bootstrap, seed).run()


def _job(
    prep: PreparedReference,
    label: str | None,
    cand: FeatureTable,
    ref_sorted: dict[str, np.ndarray],
    floor: _FloorStats,
    bootstrap: bool,
    seed: int,
    mask: np.ndarray | None = None,
) -> FeatureJob:
    return FeatureJob(
        prep.spec, cand.names, ref_sorted, prep.quantiles(label, ref_sorted), sorted_columns(cand.values, mask), floor,
        cand.geometry, cand.threshold_mev, bootstrap=bootstrap, seed=seed,
    )


class _InlineExecutor:
    """``submit`` runs the call at once, here (the executor interface for work kept on this thread)."""

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        fut.set_result(fn(*args))
        return fut


def _bin_metrics(
    prep: PreparedReference, b: EnergyBin, t: FeatureTable, floor: _FloorStats, cmask: np.ndarray
) -> tuple[dict[str, dict[str, Any]], float]:
    """Every feature in one energy bin, on one worker thread (one bin's sorted columns in memory at a time)."""
    job = _job(prep, b.label, t, prep.bin_sorted(b), floor, False, prep.spec.seed, cmask)
    return job.run(), job.done_at


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
    # the classifier (torch) trains on its own thread; the 1-D metrics of every feature (inclusive, then per
    # energy bin) run on the worker threads while FPD/KPD run here
    with (
        progress_bar(f"metrics {name}", 4, enabled=progress) as stage,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifier") as cls_pool,
    ):
        # this thread's core is taken until its metrics are done: the classifier's helper thread waits for it
        with busy_core():
            cls_job = cls_pool.submit(_candidate_classifier, prep, sample) if spec.classifier.enabled else None
            t0 = time.perf_counter()
            # with the classifier training on one core, the rest runs on this thread only: more busy threads than
            # cores would slow the classifier, which bounds the run; without it the worker threads take the 1-D metrics
            pool: Any = _pool() if cls_job is None else _InlineExecutor()
            incl = _job(prep, None, t, prep.sorted_cols, prep.floor, True, spec.seed)
            incl_futs = [pool.submit(incl.one, i) for i in range(len(t.names))]
            per_bin: dict[str, dict[str, dict[str, Any]]] = {}
            bin_futs: dict[str, Any] = {}
            for b in prep.bins:
                fl = prep.bin_floors.get(b.label)
                cmask = b.mask(t.incident_energy)
                nc = int(cmask.sum())
                if not isinstance(fl, _FloorStats) or nc < spec.min_bin_events:
                    why = fl if isinstance(fl, str) else f"{nc} candidate events in this bin, need {spec.min_bin_events}"
                    per_bin[b.label] = {"_skipped": {"skipped": why}}
                    continue
                per_bin[b.label] = {}  # keeps the bins in order
                bin_futs[b.label] = pool.submit(_bin_metrics, prep, b, t, fl, cmask)
            outside = int((~np.any([b.mask(t.incident_energy) for b in prep.bins], axis=0)).sum()) if prep.bins else 0
            if outside:
                warns.append(f"{sample.source}: {outside} candidate events have incident energies outside every reference bin")
            timings["metrics_1d"] = timings["per_energy_bin"] = 0.0  # set below; this key order in metrics.json
            t1 = time.perf_counter()
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
            timings["fpd_kpd"] = time.perf_counter() - t1
            feats = incl.finish([f.result() for f in incl_futs])
            stage.advance(1)
            bins_done = incl.done_at
            for label, fut in bin_futs.items():
                per_bin[label], done_at = fut.result()
                bins_done = max(bins_done, done_at)
            stage.advance(2)
            # wall time from the start of the 1-D metrics until the inclusive ones, then the per-bin ones, were done
            timings["metrics_1d"] = incl.done_at - t0
            timings["per_energy_bin"] = max(bins_done - incl.done_at, 0.0)
        cls_out: dict[str, Any] = {}
        if cls_job is not None:
            cls_out, timings["classifier"] = cls_job.result()
        stage.advance(1)
    return CandidateResult(
        name, sample.source, t.n_events, feats, per_bin, mv, cls_out, einfo, warns, sample, timings=timings
    )
