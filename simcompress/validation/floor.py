"""The reference-versus-reference noise floor: KS, W1 and separation power between disjoint halves.

Every distance a candidate is judged by is read against the same distance between two random
halves of the reference (:class:`_FloorStats`, over ``noise_floor.n_splits`` splits), rescaled to
the candidate's sample sizes. :func:`_edges_for` gives the histogram binning both use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import metrics as M
from .features import feature_family

if TYPE_CHECKING:  # pragma: no cover
    from ..showers.geometry import Geometry
    from .spec import GateSpec



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
    stats: dict[str, dict[str, float]] = {}
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
    stats: dict[str, dict[str, float]] = {}
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



def _half_split(n: int, seed: int, cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
    perm = rng.permutation(n)
    h = n // 2 if cap is None else min(n // 2, cap)
    return perm[:h], perm[h : 2 * h]
