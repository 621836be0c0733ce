"""FPD and KPD against a prepared reference: the reference's resamples computed once, then reused.

:func:`_multivariate` gives FPD and KPD of the reference's half A against a sample; the
reference side (:class:`_RefBatches`) is kept per sizes in a dict the caller owns
(``PreparedReference.ref_batches``, also stored in the cached reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from . import metrics as M
from .feature_kernel import one_blas_thread

if TYPE_CHECKING:  # pragma: no cover
    from .spec import GateSpec



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


def _kernel_sum(a: np.ndarray, b: np.ndarray, same: bool) -> float:
    """Sum of ``(a.b / d + 1)^4`` over all pairs (without the diagonal when ``same``), as metrics.mmd_poly_unbiased."""
    return M.poly_kernel_sum(a, b, same)


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
                a = np.take(xn, rng.integers(0, nx, n), axis=0)  # np.take: the rows of xn[idx], faster
                rng.integers(0, ny, n)  # the candidate's draw of this batch
                rb.fpd_mu[p, j], rb.fpd_cov[p, j] = M._mean_cov(a)
    if kpd_batch is not None:
        rng = np.random.default_rng(spec.seed)
        m = kpd_batch
        idx = np.empty((_KPD_BATCHES, m), dtype=np.int64)
        kxx = np.empty(_KPD_BATCHES)
        for i in range(_KPD_BATCHES):
            idx[i] = rng.integers(0, nx, m)
            rng.integers(0, ny, m)
            a = np.take(xn, idx[i], axis=0)
            kxx[i] = _kernel_sum(a, a, True) / (m * (m - 1))
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
            b = np.take(yn, rng.integers(0, yn.shape[0], n), axis=0)
            vals.append(M.frechet_distance(rb.fpd_mu[p, j], rb.fpd_cov[p, j], *M._mean_cov(b)))
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
        a = np.take(xn, idx, axis=0)
        b = np.take(yn, rng.integers(0, yn.shape[0], n), axis=0)
        kyy = _kernel_sum(b, b, True) / (n * (n - 1))
        kxy = _kernel_sum(a, b, False) / (m * n)
        vals[i] = rb.kpd_kxx[i] + kyy - 2.0 * kxy
    lo, hi = np.percentile(vals, [16.275, 83.725])
    return float(np.median(vals)), float((hi - lo) / 2.0)


def _multivariate(
    spec: GateSpec, ref_batches: dict[tuple[Any, Any, int], _RefBatches], x: np.ndarray, y: np.ndarray, n_small: int
) -> dict[str, Any]:
    """FPD and KPD of x (the reference's half A) vs y, batch sizes from ``n_small`` (so floor and candidate match).

    The reference batches for these sizes are computed once and kept in ``ref_batches`` (the
    prepared reference's, stored in the cached reference for the floor's sizes); only the
    candidate's side is new.
    """
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
            short = M.TooFewEventsError(f"KPD: batches of {bs} events, need at least 20")
            if spec.kpd.gate:
                raise short
            out["kpd"] = {"skipped": str(short)}
        else:
            _check_finite(x, y, "KPD")
            kbs = bs
    if fsz is None and kbs is None:
        return out
    key = (fsz, kbs, int(y.shape[0]))
    # one BLAS thread: FPD/KPD run on this thread while the classifier or the 1-D metrics have the other core
    with one_blas_thread():
        rb = ref_batches.get(key)
        if rb is None:
            rb = ref_batches[key] = _ref_batches(spec, x, int(y.shape[0]), fsz, kbs)
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
