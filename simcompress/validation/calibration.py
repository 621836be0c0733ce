"""Family-wise false-alarm control of the validation gate, and its measurement.

A gate makes hundreds of checks (ds2: about 800 W1 / separation-power checks, more per energy
bin). If each check had its own threshold, the chance that *some* check fails on two samples of
the same physics would grow with their number. The gate therefore has one family-wise
false-alarm probability ``alpha`` (``false_alarm.rate`` in the gate spec) and calibrates every
per-feature threshold to it with a **max-statistic** over random half-splits of the reference
(Westfall-Young style):

1. ``S`` random half-splits of the reference (halves of ``h`` events) are same-physics pairs:
   conditional on the reference they are draws of the permutation null distribution of every
   two-sample statistic, with the checks' correlations intact. For every check ``j`` (feature x
   metric x energy bin) the statistic ``v[s, j]`` of split ``s`` is computed (vectorised over
   the splits from one sort per feature).
2. Each check is standardised by the other splits (leave-one-out mean and spread, the spread
   never below the one-event resolution), ``z[s, j] = (v[s, j] - m_-s[j]) / sd_-s[j]``, and the
   largest ``T[s] = max_j z[s, j]`` is kept per split.
3. A Gumbel distribution (the limit law of a maximum) is fitted to ``T`` of the first
   ``S - n_holdout`` splits; its ``1 - alpha_features`` quantile is the critical value ``c``.
   The remaining ``n_holdout`` splits are the gate's own out-of-sample check: how many of them
   would have failed is stated next to the rate.
4. A candidate's check ``j`` passes when ``value <= r_j (m_j + c sd_j)``, where ``r_j`` rescales
   from the half-split sizes to the candidate comparison's sizes (KS and W1 as
   ``sqrt(1/n_ref + 1/n_cand) / sqrt(2/h)``, the separation power as its square).

Why not Bonferroni or Holm on per-check p-values: the checks are strongly correlated (a layer's
energy, its fraction, its width...), so a union bound over ~800 checks is conservative and
costs power; W1 and the separation power have no analytic null distribution either, so each
p-value would need its own permutation tail at ``alpha / 800``. The max-statistic uses the
correlations and needs only the tail of one distribution, at ``alpha``.

FPD, KPD and the classifier are single checks with their own rules; their nominal one-sided
false-alarm probabilities (Gaussian ``k`` sigma; the null AUC's Mann-Whitney spread at the
held-out size) are taken off ``alpha`` (a union bound), so ``alpha_features = alpha - sum``.

The measured rate (the whole gate on ``N`` same-physics pairs) is
:func:`simcompress.validation.false_alarm.measure_false_alarm`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import ConfigError
from .floor import _edges_for

if TYPE_CHECKING:  # pragma: no cover
    from .features import EnergyBin, FeatureTable
    from .spec import GateSpec

__all__ = [
    "FamilyCalibration",
    "ReferenceLike",
    "calibrate_family",
    "clopper_pearson",
    "family_calibration",
    "null_auc_sd",
    "set_calibration",
]


class ReferenceLike(Protocol):
    """What the calibration reads of a :class:`simcompress.validation.prepared.PreparedReference`."""

    spec: GateSpec
    classifier_floor: dict[str, Any]
    bins: list[EnergyBin]

    @property
    def features(self) -> FeatureTable: ...

    @property
    def n_events(self) -> int: ...

_KEY = {"w1": "w1", "ks": "ks", "separation_power": "sp"}
_ATTR = "_false_alarm_calibrations"


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) binomial confidence interval of ``k`` successes in ``n`` trials."""
    from scipy.stats import binomtest

    if n <= 0:
        return 0.0, 1.0
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def _pct(x: float) -> str:
    v = 100.0 * x
    if v == 0:
        return "0 %"
    return f"{v:.2g} %" if v < 0.1 else f"{v:.1f} %"


@dataclass
class FamilyCalibration:
    """Calibrated per-check null model of one reference under one gate spec (JSON round-trip)."""

    rate: float
    rate_features: float
    other: dict[str, float]
    n_splits: int
    n_holdout: int
    critical: float
    gumbel_loc: float
    gumbel_scale: float
    max_stats: list[float]
    holdout_failed: int
    n_checks: int
    #: block label ("" inclusive, else the energy-bin label) -> {"n_ref", "h", "checks": {metric: {feature: [mean, sd]}}}
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: FPD/KPD/classifier: the smallest k (sigma) their rule may use so each stays within its share of the rate
    other_z: dict[str, float] = field(default_factory=dict)

    def threshold(self, metric: str, feature: str, energy_bin: str, n_cand: int) -> tuple[float, float, float] | None:
        """(threshold at the candidate's sizes, mean, sd at the half-split size), or None if not calibrated."""
        blk = self.blocks.get(energy_bin)
        if blk is None:
            return None
        ms = blk["checks"].get(metric, {}).get(feature)
        if ms is None:
            return None
        mean, sd = ms
        r = math.sqrt((1.0 / blk["n_ref"] + 1.0 / max(n_cand, 1)) / (2.0 / blk["h"]))
        if metric == "separation_power":
            r *= r
        return r * (mean + self.critical * sd), r * mean, r * sd

    @property
    def holdout_ci(self) -> tuple[float, float]:
        return clopper_pearson(self.holdout_failed, self.n_holdout)

    def sentence(self) -> str:
        """The one-sentence statement for reports."""
        oth = sum(self.other.values())
        parts = f"{self.n_checks} feature checks" + (f" and {len(self.other)} multivariate/classifier checks" if self.other else "")
        lo, hi = self.holdout_ci
        return (
            f"Family-wise false-alarm rate {_pct(self.rate)} per candidate by construction ({parts}; max-statistic "
            f"calibration over {self.n_splits - self.n_holdout} reference half-splits, critical value {self.critical:.2f} "
            f"sigma{'' if not oth else f', {_pct(oth)} of the rate reserved for the multivariate checks'}); observed "
            f"{self.holdout_failed} of {self.n_holdout} held-out same-physics half-splits above it "
            f"(95 % CI {_pct(lo)}-{_pct(hi)})."
        )

    def summary(self) -> dict[str, Any]:
        """The numbers behind :meth:`sentence` (for ``metrics.json``), without the per-check table."""
        lo, hi = self.holdout_ci
        return {
            "method": "max-statistic",
            "rate": self.rate,
            "rate_features": self.rate_features,
            "rate_other": self.other,
            "min_sigma_other": self.other_z,
            "n_checks": self.n_checks,
            "n_splits": self.n_splits,
            "n_holdout": self.n_holdout,
            "critical_sigma": self.critical,
            "gumbel": {"loc": self.gumbel_loc, "scale": self.gumbel_scale},
            "holdout_failed": self.holdout_failed,
            "holdout_rate_ci95": [lo, hi],
            "sentence": self.sentence(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate, "rate_features": self.rate_features, "other": dict(self.other),
            "n_splits": self.n_splits, "n_holdout": self.n_holdout, "critical": self.critical,
            "gumbel_loc": self.gumbel_loc, "gumbel_scale": self.gumbel_scale, "max_stats": list(self.max_stats),
            "holdout_failed": self.holdout_failed, "n_checks": self.n_checks, "blocks": self.blocks,
            "other_z": dict(self.other_z),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FamilyCalibration:
        try:
            return cls(**d)
        except TypeError as err:
            msg = f"false-alarm calibration: bad stored calibration ({err})"
            raise ConfigError(msg) from None


def _spec_key(spec: GateSpec) -> str:
    import json

    d = spec.model_dump(mode="json")
    # only what changes the calibration
    keep = ("features", "fpd", "kpd", "classifier", "binning", "n_bins", "per_energy_bin", "min_bin_events", "seed", "false_alarm")
    return json.dumps({k: d[k] for k in keep}, sort_keys=True)


def family_calibration(prep: ReferenceLike, spec: GateSpec | None = None) -> FamilyCalibration:
    """The calibration of ``prep`` under ``spec`` (default ``prep.spec``), computed once and kept on ``prep``."""
    spec = spec if spec is not None else prep.spec
    cache = vars(prep).setdefault(_ATTR, {})
    key = _spec_key(spec)
    if key not in cache:
        cache[key] = calibrate_family(prep, spec)
    return cache[key]


def set_calibration(prep: ReferenceLike, calibration: FamilyCalibration, spec: GateSpec | None = None) -> None:
    """Attach a stored calibration (e.g. from a reference cache) so :func:`family_calibration` reuses it."""
    spec = spec if spec is not None else prep.spec
    vars(prep).setdefault(_ATTR, {})[_spec_key(spec)] = calibration


def null_auc_sd(n_heldout: int) -> float:
    """Spread of the held-out AUC of a classifier that cannot separate the samples (Mann-Whitney, equal classes)."""
    n1 = n0 = max(int(n_heldout) // 2, 1)
    return math.sqrt((n1 + n0 + 1) / (12.0 * n1 * n0))


#: at most this fraction of the family-wise rate goes to the FPD/KPD/classifier checks together
OTHER_SHARE = 0.1


def _other_rates(prep: ReferenceLike, spec: GateSpec) -> tuple[dict[str, float], dict[str, float]]:
    """(nominal one-sided false-alarm probability, minimal z) of each gated FPD/KPD/classifier check.

    Each gets at most ``OTHER_SHARE * rate / n`` of the rate: a configured ``k`` (FPD/KPD) or
    ``max_auc`` (classifier, against the null AUC's Mann-Whitney spread) that would exceed that share
    is widened to the share's Gaussian quantile ``z`` at gate time.
    """
    from scipy.stats import norm

    keys: list[tuple[str, Any]] = []
    for key in ("fpd", "kpd"):
        rule = getattr(spec, key)
        if rule.enabled and rule.gate:
            keys.append((key, rule.k))
    cr = spec.classifier
    if cr.enabled and cr.gate:
        for kind in cr.inputs:
            fl = prep.classifier_floor.get(kind) or {}
            n = int(fl.get("n_heldout", 0)) if "auc" in fl else 0
            if n < 4:
                # no floor: the held-out size a half-split classifier would have (a lower bound on the candidate's)
                n = int(2 * round(0.2 * min(prep.n_events // 2, cr.max_events)))
            keys.append((f"classifier:{kind}", (cr.max_auc - 0.5) / null_auc_sd(n)))
    rates: dict[str, float] = {}
    zmin: dict[str, float] = {}
    if keys:
        share = OTHER_SHARE * spec.false_alarm.rate / len(keys)
        for key, z in keys:
            rates[key] = float(min(norm.sf(z), share))
            zmin[key] = float(norm.isf(share))
    return rates, zmin


def _split_labels(n: int, h: int, n_splits: int, rng: np.random.Generator) -> np.ndarray:
    """(S, n) int8 labels: +1 half A, -1 half B, 0 unused."""
    lab = np.zeros((n_splits, n), dtype=np.int8)
    for s in range(n_splits):
        perm = rng.permutation(n)
        lab[s, perm[:h]] = 1
        lab[s, perm[h : 2 * h]] = -1
    return lab


def _split_statistics(x: np.ndarray, labels: np.ndarray, h: int, metrics: set[str], edges: np.ndarray | None) -> dict[str, np.ndarray]:
    """KS, W1 and separation power of half A vs half B for every split, from one sort of ``x``."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    lab = labels[:, order]
    out: dict[str, np.ndarray] = {}
    if "w1" in metrics or "ks" in metrics:
        d = np.cumsum(lab, axis=1, dtype=np.int32)
        if "w1" in metrics:
            out["w1"] = np.abs(d[:, :-1]).astype(np.float64) @ np.diff(xs) / h
        if "ks" in metrics:
            ends = np.flatnonzero(np.r_[xs[1:] != xs[:-1], True])
            out["ks"] = np.abs(d[:, ends]).max(axis=1) / h
    if "separation_power" in metrics:
        assert edges is not None
        nb = edges.size - 1
        bi = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, nb - 1)
        starts = np.flatnonzero(np.r_[True, bi[1:] != bi[:-1]])
        ca = np.add.reduceat((lab == 1).astype(np.int32), starts, axis=1) / h
        cb = np.add.reduceat((lab == -1).astype(np.int32), starts, axis=1) / h
        out["separation_power"] = 0.5 * np.sum((ca - cb) ** 2 / (ca + cb + 1e-16), axis=1)
    return out


def _selected(spec: GateSpec, names: Iterable[str]) -> dict[str, set[str]]:
    """feature -> metrics the spec's rules gate it on."""
    sel: dict[str, set[str]] = {}
    for rule in spec.features:
        for f in names:
            if rule.selects(f):
                sel.setdefault(f, set()).add(rule.metric)
    return sel


def calibrate_family(prep: ReferenceLike, spec: GateSpec | None = None) -> FamilyCalibration:
    """Max-statistic calibration of every feature check of ``spec`` on ``prep``'s reference (see module doc)."""
    from scipy.stats import gumbel_r


    spec = spec if spec is not None else prep.spec
    fa = spec.false_alarm
    t = prep.features
    geometry = t.geometry
    n_total = t.n_events
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 20]))
    sel = _selected(spec, t.names)
    other, other_z = _other_rates(prep, spec)
    rate_features = fa.rate - sum(other.values())
    blocks_idx: list[tuple[str, np.ndarray]] = [("", np.arange(n_total))]
    if spec.per_energy_bin:
        e = t.incident_energy
        for b in prep.bins:
            idx = np.flatnonzero(b.mask(e))
            if idx.size // 2 >= spec.min_bin_events:
                blocks_idx.append((b.label, idx))
    S = fa.n_splits
    tmax = np.full(S, -np.inf)
    n_checks = 0
    blocks: dict[str, dict[str, Any]] = {}
    for label, idx in blocks_idx:
        n = idx.size
        h = min(n // 2, fa.max_events)
        if n > 2 * h:  # the splits only ever use 2h events: draw them once (memory and time stay bounded)
            idx = np.sort(rng.choice(idx, 2 * h, replace=False))
        labels = _split_labels(idx.size, h, S, rng)
        checks: dict[str, dict[str, list[float]]] = {}
        for f, mets in sel.items():
            x = np.asarray(t[f], dtype=np.float64)[idx]
            edges = _edges_for(spec, f, np.sort(x), [], geometry, t.threshold_mev) if "separation_power" in mets else None
            stats = _split_statistics(x, labels, h, mets, edges)
            span = float(x.max() - x.min()) if x.size else 0.0
            for met, v in stats.items():
                res = (span / h) if met == "w1" else 1.0 / h
                tot, tot2 = v.sum(), np.square(v).sum()
                m_loo = (tot - v) / (S - 1)
                var_loo = np.maximum((tot2 - v * v - (S - 1) * m_loo**2) / (S - 2), 0.0)
                sd_loo = np.maximum(np.sqrt(var_loo), res)
                # a constant feature (sd and range 0) cannot move between halves: z = 0
                z = np.divide(v - m_loo, sd_loo, out=np.zeros_like(v), where=sd_loo > 0)
                tmax = np.maximum(tmax, z)
                sd = max(float(v.std(ddof=1)), res)
                checks.setdefault(met, {})[f] = [float(v.mean()), sd]
                n_checks += 1
        blocks[label] = {"n_ref": int(n), "h": int(h), "checks": checks}
    if n_checks == 0:
        msg = "gate spec: no feature check is selected by the rules in 'features'"
        raise ConfigError(msg)
    n_hold = fa.n_holdout
    fit = tmax[: S - n_hold]
    loc, scale = gumbel_r.fit(fit)
    crit = float(gumbel_r.ppf(1.0 - rate_features, loc, scale))
    held = int(np.sum(tmax[S - n_hold :] > crit))
    return FamilyCalibration(
        rate=fa.rate, rate_features=float(rate_features), other=other, n_splits=S, n_holdout=n_hold, critical=crit,
        gumbel_loc=float(loc), gumbel_scale=float(scale), max_stats=[float(v) for v in tmax], holdout_failed=held,
        n_checks=n_checks, blocks=blocks, other_z=other_z,
    )
