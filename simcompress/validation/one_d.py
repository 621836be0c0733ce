"""Per-feature 1-D metrics of sorted samples: KS, W1 and separation power, with bootstrap errors.

:class:`FeatureJob` compares every feature of a candidate with the reference's sorted columns,
one feature per call so the features run on the worker threads (numpy releases the GIL while
it sorts, searches and sums); the KS p-values of all features are computed in one vectorised
call at the end. The sorted-sample shortcuts here give bitwise the numbers of
:mod:`simcompress.validation.metrics` (``ks_w1``, ``feature_binning``; ``bootstrap_ks_w1``: its KS
spread bitwise, its W1 spread up to float64 rounding).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from ..errors import ConfigError
from . import metrics as M
from .features import feature_family
from .floor import _edges_for, _FloorStats

if TYPE_CHECKING:  # pragma: no cover
    from ..showers.geometry import Geometry
    from .spec import GateSpec

__all__ = ["FeatureJob", "reference_quantiles", "sorted_columns", "sorted_quantiles"]

#: families that calochallenge binning gives fixed ranges (metrics.feature_binning); the rest use quantiles
_FIXED_RANGE = {"E_ratio", "E_layer", "EC_x", "EC_y", "width_x", "width_y"}


def _hist_sorted(xs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram(xs, edges)[0]`` of a sorted ``xs`` without sorting it again (same counts, last bin closed)."""
    lo = np.searchsorted(xs, edges[:-1], side="left")
    hi = np.searchsorted(xs, edges[1:], side="left")
    hi[-1] = np.searchsorted(xs, edges[-1], side="right")
    return hi - lo


class _Merged:
    """Two sorted samples merged once (a stable argsort of their concatenation: a linear merge of two runs).

    ``allv``: the merged values; ``nx``: how many of the first i+1 merged values come from ``xs``;
    ``last``: True at the last of each group of equal values. Shared by the KS/W1 of the pair and
    by its bootstrap.
    """

    __slots__ = ("allv", "last", "nx")

    def __init__(self, xs: np.ndarray, ys: np.ndarray) -> None:
        both = np.concatenate([xs, ys])
        order = np.argsort(both, kind="stable")  # two sorted runs: a linear merge
        self.allv = both[order]
        self.nx = np.cumsum(order < xs.size)  # xs values among the first i+1 merged values
        self.last = np.append(self.allv[1:] != self.allv[:-1], True)


def _ks_w1_sorted(xs: np.ndarray, ys: np.ndarray, merged: _Merged | None = None) -> tuple[float, float]:
    """KS D and W1 of two sorted samples, exactly as :func:`metrics.ks_w1` computes them (no p-value)."""
    m = merged if merged is not None else _Merged(xs, ys)
    allv, nx = m.allv, m.nx
    cx = nx / xs.size
    cy = (np.arange(1, allv.size + 1) - nx) / ys.size
    d = np.abs(cx - cy)
    dv = np.diff(allv)
    # the CDFs are right-continuous: read D at the last of each group of tied values; inside a group
    # dv is 0, so W1 gets exactly the terms metrics.ks_w1 sums (bitwise the same result)
    return float(d[m.last].max()), float(np.sum(d[:-1] * dv))


def _bootstrap_ks_w1_sorted(
    xs: np.ndarray,
    ys: np.ndarray,
    *,
    n_boot: int,
    max_events: int,
    seed: int,
    merged: _Merged | None = None,
) -> tuple[float, float]:
    """:func:`metrics.bootstrap_ks_w1` for sorted inputs: the same draws, no sorting per resample.

    A resample is a draw count per sorted event of each sample (``bincount`` of the drawn indices,
    the same draws in the same order as :func:`metrics.bootstrap_ks_w1`); its cumulative counts read
    at the last event of each sample at or below each distinct value of both samples are the
    resample's empirical CDFs there, exact integers. Between two values the resample has, the CDFs
    do not change, so the KS statistic is the maximum of ``d = |F_x - F_y|`` over all distinct values
    (bitwise that of :func:`metrics.bootstrap_ks_w1`: the same counts and divisions) and W1 is ``d``
    times the gaps between neighbouring distinct values, summed: the same sum with each gap of the
    resample split at the values it skips (equal up to float64 rounding, ~1e-15 relative). Every
    pass is over one sample's events or over the distinct values, in order (no random gather, no
    compaction); about half the CPU of counting per distinct value. ``merged``: the pair's
    :class:`_Merged` if already computed.
    """
    if n_boot < 2:
        msg = f"bootstrap needs n_boot >= 2, got {n_boot}"
        raise ConfigError(msg)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    mx, my = min(xs.size, max_events), min(ys.size, max_events)
    m = merged if merged is not None else _Merged(xs, ys)
    gv = m.allv[m.last]  # the distinct values of both samples
    lx = m.nx[m.last]  # xs events at or below each distinct value (1 + index of the last one; 0: none)
    ly = np.arange(1, m.allv.size + 1)[m.last] - lx
    gaps = np.diff(gv)
    ng = gv.size
    cx = np.zeros(xs.size + 1, dtype=np.int64)  # cx[i]: draws among the first i sorted events
    cy = np.zeros(ys.size + 1, dtype=np.int64)
    d, e = np.empty(ng), np.empty(ng)  # buffers of every resample (in-place ufuncs, no BLAS)
    ksv, wv = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        np.cumsum(np.bincount(rng.integers(0, xs.size, mx), minlength=xs.size), out=cx[1:])
        np.cumsum(np.bincount(rng.integers(0, ys.size, my), minlength=ys.size), out=cy[1:])
        np.divide(cx.take(lx), mx, out=d)
        np.divide(cy.take(ly), my, out=e)
        np.subtract(d, e, out=d)
        np.abs(d, out=d)
        ksv[b] = float(d.max())
        np.multiply(d[:-1], gaps, out=e[:-1])
        wv[b] = float(e[:-1].sum())
    scale = math.sqrt((1.0 / xs.size + 1.0 / ys.size) / (1.0 / mx + 1.0 / my))
    return float(ksv.std(ddof=1) * scale), float(wv.std(ddof=1) * scale)


def sorted_columns(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(F, n) float64: every column of an (n, F) table (rows in ``mask``) sorted.

    Sorted as stored (float32) and converted afterwards: the conversion is exact and monotonic,
    so this equals ``np.sort(column.astype(np.float64))`` per column.
    """
    v = values if mask is None else values[mask]
    s = np.ascontiguousarray(v.T)
    s.sort(axis=1)
    return s.astype(np.float64)


def _uses_quantiles(spec: GateSpec, name: str) -> bool:
    return spec.binning == "quantile" or (spec.binning == "calochallenge" and feature_family(name) not in _FIXED_RANGE)


def sorted_quantiles(cols: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile(cols.T, q, axis=0)`` (default ``linear`` method) of rows that are already sorted, bitwise.

    Why not ``np.quantile`` itself: it partitions every column again although ours are sorted, which
    was 0.17 s of the 3.8 s a 100k candidate takes through the cached 1-D path. This reads the two order
    statistics around each virtual index and interpolates with numpy's own arithmetic for ``linear``
    (index ``(n - 1) * q``, ``_lerp``: ``a + (b - a) * t``, or ``b - (b - a) * (1 - t)`` where
    ``t >= 0.5``; the top index clamped to the last value), so the values are bitwise those of
    ``np.quantile`` (``tests/validation/test_metrics.py`` pins it on ties, tiny and large samples).
    ``cols``: (F, n) float64, each row sorted ascending; returns (len(q), F).
    """
    n = cols.shape[1]
    v = (n - 1) * np.asarray(q, dtype=np.float64)
    prev = np.floor(v)
    nxt = prev + 1
    top = v >= n - 1
    prev[top] = nxt[top] = -1
    prev_i, next_i = prev.astype(np.intp), nxt.astype(np.intp)
    gamma = (v - prev_i)[:, None]
    a = cols[:, prev_i].T
    b = cols[:, next_i].T
    diff = b - a
    out = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=out, where=np.broadcast_to(gamma >= 0.5, out.shape))
    nan = np.isnan(cols[:, -1])  # np.quantile gives NaN for a column holding one (sorted last)
    if nan.any():
        out[:, nan] = np.nan
    return out


def reference_quantiles(spec: GateSpec, ref_sorted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference quantiles :func:`metrics.feature_binning` bins at, for every quantile-binned feature.

    :func:`sorted_quantiles` of groups of columns (bitwise ``np.quantile`` per column), groups capped
    at about 4M values so memory stays bounded.
    """
    use = [f for f in ref_sorted if _uses_quantiles(spec, f)]
    if not use or ref_sorted[use[0]].size == 0:
        return {}
    q = np.linspace(0.0, 1.0, spec.n_bins + 1)
    group = max(1, (1 << 22) // ref_sorted[use[0]].size)
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(use), group):
        fs = use[i : i + group]
        qs = sorted_quantiles(np.stack([ref_sorted[f] for f in fs]), q)
        out.update({f: qs[:, j] for j, f in enumerate(fs)})
    return out


class FeatureJob:
    """Every feature of one candidate (or one energy bin of it) against the reference's sorted columns.

    ``cand_sorted`` is the candidate's :func:`sorted_columns` in ``names`` order; ``ref_q`` the
    :func:`reference_quantiles` of ``ref_sorted``. Call :meth:`one` for each feature index (on any
    thread), then :meth:`finish` with the results in feature order.
    """

    def __init__(
        self,
        spec: GateSpec,
        names: list[str],
        ref_sorted: dict[str, np.ndarray],
        ref_q: dict[str, np.ndarray],
        cand_sorted: np.ndarray,
        floor: _FloorStats,
        geometry: Geometry,
        threshold_mev: float,
        *,
        bootstrap: bool,
        seed: int,
    ) -> None:
        self.spec, self.names, self.ref_sorted, self.ref_q = spec, names, ref_sorted, ref_q
        self.cand, self.floor, self.geometry, self.thr = cand_sorted, floor, geometry, threshold_mev
        self.bootstrap, self.seed = bootstrap, seed
        self.n_ref = next(iter(ref_sorted.values())).size
        self.n_cand = int(cand_sorted.shape[1])
        # the checks metrics.ks_w1 makes on its inputs, once for the whole table
        for what, n in (("first sample", self.n_ref), ("second sample", self.n_cand)):
            if n < 1:
                msg = f"{what}: {n} values, need at least 1"
                raise M.TooFewEventsError(msg)
        bad = int(np.sum(~np.isfinite(cand_sorted)))
        if bad:
            msg = f"second sample: {bad} NaN or infinite values"
            raise ConfigError(msg)
        #: perf_counter() when the last feature finished
        self.done_at = 0.0

    def _edges(self, f: str, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        qs = self.ref_q.get(f)
        if qs is None:
            return _edges_for(self.spec, f, r, [c], self.geometry, self.thr)
        return M.quantile_edges(qs, min(float(r[0]), float(c[0])), max(float(r[-1]), float(c[-1])))

    def one(self, i: int) -> dict[str, Any]:
        f = self.names[i]
        r = self.ref_sorted[f]
        c = self.cand[i]
        merged = _Merged(r, c)
        ks, w1 = _ks_w1_sorted(r, c, merged)
        edges = self._edges(f, r, c)
        h1 = _hist_sorted(r, edges)
        h2 = _hist_sorted(c, edges)
        try:
            sp = M.separation_power(h1, h2)
        except M.TooFewEventsError:
            sp = float("nan")
        d: dict[str, Any] = {
            "ks": ks,
            "pvalue": None,  # filled in by finish(), for all features at once
            "w1": w1,
            "sp": sp,
            "ref_mean": float(r.mean()),
            "cand_mean": float(c.mean()),
            "floor": {
                **self.floor.scaled(f, self.n_ref, c.size),
                # one-event resolution: what moving a single candidate event across the observed range does
                "w1_res": float(max(r[-1], c[-1]) - min(r[0], c[0])) / c.size,
                "ks_res": 1.0 / c.size,
                "sp_res": 1.0 / c.size,
            },
        }
        if self.bootstrap:
            b = self.spec.bootstrap
            kse, w1e = _bootstrap_ks_w1_sorted(
                r, c, n_boot=b.n_boot, max_events=b.max_events, seed=self.seed + 17 * i, merged=merged
            )
            d["ks_err"], d["w1_err"] = kse, w1e
            d["sp_err"] = (
                M.bootstrap_separation_power(h1, h2, n_boot=b.n_boot_hist, seed=self.seed + 17 * i)
                if math.isfinite(sp) else float("nan")
            )
        self.done_at = max(self.done_at, time.perf_counter())
        return d

    def finish(self, per_feature: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Name -> metrics, with the asymptotic KS p-values of metrics.ks_w1 (one vectorised call)."""
        n, m = self.n_ref, self.n_cand
        big, small = (float(n), float(m)) if n >= m else (float(m), float(n))
        en = big * small / (big + small)
        ps = np.clip(stats.kstwo.sf(np.array([d["ks"] for d in per_feature]), np.round(en)), 0.0, 1.0)
        for d, p in zip(per_feature, ps, strict=True):
            d["pvalue"] = float(p)
        return dict(zip(self.names, per_feature, strict=True))

    def run(self) -> dict[str, dict[str, Any]]:
        """Every feature on this thread."""
        return self.finish([self.one(i) for i in range(len(self.names))])
