"""Classifier two-sample test: AUC, calibration, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from simcompress.errors import ConfigError
from simcompress.validation.classifier import classifier_test, isotonic_fit, low_level_inputs, roc_auc
from simcompress.validation.metrics import TooFewEventsError


def test_auc_equals_pair_counting_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y * 0.7, 1)
    pos, neg = s[y == 1], s[y == 0]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(y, s) == pytest.approx(brute, rel=1e-12)
    with pytest.raises(TooFewEventsError):
        roc_auc(np.zeros(5), np.arange(5.0))


def test_isotonic_fit_is_monotone_least_squares() -> None:
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    y = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    kx, ky = isotonic_fit(x, y)
    # PAV by hand: [0], [1, 0, 0] -> 1/3 pooled, [1], [1] (scikit-learn keeps only the knots it needs)
    assert np.allclose(np.interp(x, kx, ky), [0.0, 1 / 3, 1 / 3, 1 / 3, 1.0, 1.0])
    rng = np.random.default_rng(1)
    x, y = rng.random(300), (rng.random(300) < np.linspace(0, 1, 300)).astype(float)
    kx, ky = isotonic_fit(x, y)
    assert np.all(np.diff(ky) >= -1e-15)
    fit = np.interp(x, kx, ky)
    sse = np.sum((fit - y) ** 2)
    for _ in range(20):  # any other monotone step function does no better
        alt = np.sort(rng.random(kx.size))
        assert sse <= np.sum((np.interp(x, kx, alt) - y) ** 2) + 1e-12


def test_same_distribution_gives_half_and_is_reproducible() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3000, 4)), rng.normal(size=(3000, 4))
    r1 = classifier_test(a, b, epochs=5, n_hidden=32, seed=7)
    r2 = classifier_test(a, b, epochs=5, n_hidden=32, seed=7)
    assert r1 == r2
    assert abs(r1.auc - 0.5) < 0.05
    assert r1.jsd < 0.05
    assert (r1.n_train, r1.n_test, r1.n_heldout) == (3600, 1200, 1200)


def test_separable_samples_are_found() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(1500, 4)), rng.normal(size=(1500, 4)) + np.array([3.0, 0, 0, 0])
    r = classifier_test(a, b, epochs=8, n_hidden=32, seed=0)
    assert r.auc > 0.9 and r.jsd > 0.4  # optimal AUC for a 3 sigma shift: Phi(3/sqrt 2) = 0.983


def test_bad_inputs() -> None:
    a = np.zeros((50, 3))
    with pytest.raises(TooFewEventsError, match="50 events per class"):
        classifier_test(a, a)
    with pytest.raises(ConfigError, match="equal widths"):
        classifier_test(np.zeros((500, 3)), np.zeros((500, 2)))
    with pytest.raises(ConfigError, match="split"):
        classifier_test(np.zeros((500, 3)), np.zeros((500, 3)), split=(0.5, 0.5, 0.0))


def test_low_level_inputs() -> None:
    x = low_level_inputs(np.array([100.0, 1000.0]), np.array([[10.0, 0.0], [500.0, 100.0]]))
    assert np.allclose(x, [[2.0, 0.1, 0.0], [3.0, 0.5, 0.1]])
