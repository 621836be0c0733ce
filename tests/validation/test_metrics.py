"""Every metric against an independent computation (scipy, brute-force numpy)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from simcompress.errors import ConfigError
from simcompress.validation import metrics as M


def _samples(kind: str, n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "continuous":
        return rng.gamma(2.0, 1.5, n), rng.gamma(2.2, 1.4, m)
    if kind == "ties":  # rounded: many exact ties within and across samples
        return np.round(rng.normal(0, 1, n), 1), np.round(rng.normal(0.1, 1.2, m), 1)
    return rng.integers(0, 5, n).astype(float), rng.integers(0, 6, m).astype(float)  # discrete


@pytest.mark.parametrize("kind", ["continuous", "ties", "discrete"])
@pytest.mark.parametrize(("n", "m"), [(500, 500), (137, 2000), (3001, 999), (1, 7)])
def test_ks_w1_equal_scipy(kind, n, m) -> None:
    x, y = _samples(kind, n, m, seed=n + m)
    r = M.ks_w1(x, y)
    ref = stats.ks_2samp(x, y, method="asymp")
    assert abs(r.ks - ref.statistic) < 1e-9
    assert abs(r.pvalue - ref.pvalue) < 1e-9
    assert abs(r.w1 - stats.wasserstein_distance(x, y)) < 1e-9
    assert M.ks(x, y) == (r.ks, r.pvalue)
    assert M.w1(x, y) == r.w1
    # one sort per feature: passing presorted input gives the same numbers
    assert M.ks_w1(np.sort(x), np.sort(y), presorted=True) == r


def test_w1_equal_sizes_is_mean_abs_quantile_difference() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=1000), rng.exponential(size=1000)
    assert M.w1(x, y) == pytest.approx(np.mean(np.abs(np.sort(x) - np.sort(y))), rel=1e-12)


def test_identical_samples_give_zero() -> None:
    x = np.random.default_rng(0).normal(size=300)
    r = M.ks_w1(x, x.copy())
    assert r.ks == 0.0 and r.w1 == 0.0 and r.pvalue == 1.0


def test_bad_samples_are_errors() -> None:
    with pytest.raises(M.TooFewEventsError, match="0 values"):
        M.ks_w1([], [1.0])
    with pytest.raises(ConfigError, match="NaN"):
        M.w1([1.0, np.nan], [1.0, 2.0])


def test_separation_power_brute_force() -> None:
    rng = np.random.default_rng(1)
    h1, h2 = rng.integers(0, 50, 20), rng.integers(0, 50, 20)
    p, q = h1 / h1.sum(), h2 / h2.sum()
    brute = 0.0
    for a, b in zip(p, q, strict=True):
        brute += 0.5 * (a - b) ** 2 / (a + b + 1e-16)
    assert M.separation_power(h1, h2) == pytest.approx(brute, rel=1e-12)
    assert M.separation_power(h1, h1 * 3) == pytest.approx(0.0, abs=1e-15)
    assert M.separation_power([5, 0, 0], [0, 0, 7]) == pytest.approx(1.0)
    with pytest.raises(M.TooFewEventsError):
        M.separation_power([0, 0], [1, 2])


def test_quantile_binning_covers_every_sample_and_calochallenge_ranges() -> None:
    rng = np.random.default_rng(2)
    ref, cand = rng.normal(size=1000), rng.normal(0.5, 2, size=800)
    e = M.feature_binning(ref, [cand], n_bins=20)
    assert e[0] <= min(ref.min(), cand.min()) and e[-1] >= max(ref.max(), cand.max())
    h, _ = np.histogram(ref, e)
    assert h.sum() == ref.size and np.all(np.diff(e) > 0) and len(e) == 21
    # discrete feature: duplicate quantiles are merged
    d = M.feature_binning(np.repeat([0.0, 0.2, 1.0], 100), n_bins=50)
    assert len(d) <= 4
    assert np.array_equal(M.feature_binning(ref, method="calochallenge", family="E_ratio"), np.linspace(0.5, 1.5, 101))
    assert M.feature_binning(ref, method="calochallenge", family="EC_x", geometry_r_max_mm=41.85)[-1] == 30.0
    with pytest.raises(ConfigError, match="binning method"):
        M.feature_binning(ref, method="nope")


def test_bootstrap_ks_w1_seeded_and_consistent_with_resampling() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=2000), rng.normal(0.3, 1, size=2000)
    a = M.bootstrap_ks_w1(x, y, n_boot=20, seed=1)
    assert a == M.bootstrap_ks_w1(x, y, n_boot=20, seed=1)
    assert a != M.bootstrap_ks_w1(x, y, n_boot=20, seed=2)
    # independent estimate of the W1 spread: fresh samples of the same distributions
    fresh = [M.w1(rng.normal(size=2000), rng.normal(0.3, 1, size=2000)) for _ in range(40)]
    assert 0.4 < a[1] / np.std(fresh) < 2.5
    # m-out-of-n rescaling: a capped bootstrap estimates the same full-size spread
    capped = M.bootstrap_ks_w1(x, y, n_boot=40, max_events=500, seed=3)
    assert 0.4 < capped[1] / np.std(fresh) < 2.5


def test_bootstrap_separation_power_matches_fresh_multinomials() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.4])
    rng = np.random.default_rng(0)
    h1, h2 = rng.multinomial(5000, p), rng.multinomial(5000, p[::-1])
    s = M.bootstrap_separation_power(h1, h2, n_boot=400, seed=0)
    assert s == M.bootstrap_separation_power(h1, h2, n_boot=400, seed=0)
    fresh = [M.separation_power(rng.multinomial(5000, p), rng.multinomial(5000, p[::-1])) for _ in range(400)]
    assert s == pytest.approx(np.std(fresh), rel=0.3)


def _fd_brute(mu1, s1, mu2, s2) -> float:
    # Tr sqrt(S1 S2) = sum of sqrt of the (real, non-negative) eigenvalues of S1 S2
    ev = np.linalg.eigvals(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.abs(ev.real))))


def test_frechet_distance_brute_force_and_closed_form() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    s1, s2 = a.T @ a / 50, b.T @ b / 50
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_fd_brute(mu1, s1, mu2, s2), rel=1e-8)
    # 1-D: (mu1 - mu2)^2 + (sigma1 - sigma2)^2
    assert M.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([0.0]), np.array([[9.0]])) == pytest.approx(2.0)
    assert M.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    m, c = M._mean_cov(a)
    assert np.allclose(c, np.cov(a, rowvar=False)) and np.allclose(m, a.mean(axis=0))


def test_fpd_extrapolates_to_the_gaussian_frechet_distance() -> None:
    rng = np.random.default_rng(6)
    mu, sd = np.array([0.3, 0.0, -0.2]), np.array([1.0, 1.2, 0.8])
    x = rng.normal(size=(40_000, 3))
    y = rng.normal(size=(40_000, 3)) * sd + mu
    truth = np.sum(mu**2) + np.sum((1 - sd) ** 2)
    v, e = M.fpd(x, y, min_samples=5000, max_samples=20000, num_batches=5, num_points=5, normalise=False, seed=1)
    assert v == pytest.approx(truth, rel=0.1)
    assert e >= 0
    assert (v, e) == M.fpd(x, y, min_samples=5000, max_samples=20000, num_batches=5, num_points=5, normalise=False, seed=1)
    same, same_err = M.fpd(x[:20000], x[20000:], min_samples=2000, max_samples=10000, num_batches=5, num_points=4)
    assert same < 5 * same_err + 1e-3
    with pytest.raises(M.TooFewEventsError):
        M.fpd(x[:1], y, min_samples=10, max_samples=20)
    with pytest.raises(ConfigError, match="features"):
        M.fpd(x, y[:, :2])


def _mmd_brute(x, y) -> float:
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 4

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i, j in itertools.product(range(m), range(m)) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i, j in itertools.product(range(n), range(n)) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i, j in itertools.product(range(m), range(n))) / (m * n)
    return kxx + kyy - 2 * kxy


def test_mmd_matches_double_loop_and_blocks() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(25, 3)), rng.normal(0.5, 1, size=(30, 3))
    assert M.mmd_poly_unbiased(x, y) == pytest.approx(_mmd_brute(x, y), rel=1e-10)
    assert M.mmd_poly_unbiased(x, y, block=4) == pytest.approx(M.mmd_poly_unbiased(x, y), rel=1e-12)


def test_kpd_median_and_spread_by_hand() -> None:
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(300, 3)), rng.normal(0.3, 1, size=(300, 3))
    v, e = M.kpd(x, y, num_batches=6, batch_size=40, normalise=False, seed=3)
    r = np.random.default_rng(3)
    vals = []
    for _ in range(6):
        a, b = x[r.integers(0, 300, 40)], y[r.integers(0, 300, 40)]
        vals.append(_mmd_brute(a, b))
    lo, hi = np.percentile(vals, [16.275, 83.725])
    assert v == pytest.approx(np.median(vals), rel=1e-9)
    assert e == pytest.approx((hi - lo) / 2, rel=1e-9)
    same, same_err = M.kpd(x, rng.normal(size=(300, 3)), num_batches=10, batch_size=200)
    shifted, _ = M.kpd(x, y, num_batches=10, batch_size=200)
    assert abs(same) < 4 * same_err + 1e-4 < shifted


def test_sorted_quantiles_bitwise_numpy_quantile() -> None:
    """one_d.sorted_quantiles (the reference binning's quantiles of sorted columns) is np.quantile, bitwise."""
    from simcompress.validation.one_d import sorted_quantiles

    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 5, 49, 50, 51, 101, 6667, 20_000):
        for n_bins in (2, 3, 7, 50, 100):
            q = np.linspace(0.0, 1.0, n_bins + 1)
            x = rng.normal(size=(4, n)) * 10.0 ** rng.uniform(-6, 6, (4, 1))
            x[1] = np.round(x[1], 1)  # ties
            x[2] = rng.integers(0, 3, n)  # few distinct values
            x[3] = x[3].astype(np.float32)  # float32-valued, as the features
            x.sort(axis=1)
            assert np.array_equal(sorted_quantiles(x, q), np.quantile(x.T, q, axis=0)), (n, n_bins)
    x = np.sort(rng.normal(size=(2, 30)), axis=1)
    x[1, -1] = np.nan
    want = np.quantile(x.T, [0.0, 0.5, 1.0], axis=0)
    assert np.array_equal(sorted_quantiles(x, np.array([0.0, 0.5, 1.0])), want, equal_nan=True)
