"""Incident-energy specs."""

from __future__ import annotations

import numpy as np
import pytest

from simcompress.errors import ConfigError
from simcompress.showers.energies import DS1_ENERGIES_MEV, parse_energy_spec
from simcompress.showers.io import write_showers
from simcompress.showers.reference import simulate


def test_ds1_draws_the_15_calochallenge_energies_uniformly() -> None:
    spec = parse_energy_spec("ds1")
    e = spec.sample(30_000, np.random.default_rng(0))
    assert e.dtype == np.float64
    np.testing.assert_array_equal(np.unique(e), 2.0 ** np.arange(8, 23))
    np.testing.assert_array_equal(DS1_ENERGIES_MEV, 2.0 ** np.arange(8, 23))
    counts = np.unique(e, return_counts=True)[1]
    assert counts.min() > 1800 and counts.max() < 2200  # 2000 expected each; 5 sigma ~ 220


def test_log_uniform_is_uniform_in_log() -> None:
    e = parse_energy_spec("log-uniform:1e3,1e6").sample(20_000, np.random.default_rng(1))
    assert e.min() >= 1e3 and e.max() <= 1e6
    frac_low_decade = np.mean(e < 1e4)
    assert abs(frac_low_decade - 1 / 3) < 0.02


def test_fixed_uniform_discrete_and_determinism() -> None:
    assert np.all(parse_energy_spec("fixed:65536").sample(5, np.random.default_rng(0)) == 65536.0)
    u = parse_energy_spec("uniform:10,20").sample(1000, np.random.default_rng(0))
    assert u.min() >= 10 and u.max() <= 20
    d = parse_energy_spec("discrete:1000,5000").sample(1000, np.random.default_rng(0))
    assert set(np.unique(d)) == {1000.0, 5000.0}
    a = parse_energy_spec("ds1").sample(10, np.random.default_rng(5))
    b = parse_energy_spec("ds1").sample(10, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_file_spec_resamples_the_reference_energies(tmp_path) -> None:
    s = simulate("ds1-photons", 50, energies="discrete:1024,8192", seed=0, progress=False)
    path = write_showers(tmp_path / "ref.root", s)
    spec = parse_energy_spec(f"file:{path}")
    assert spec.kind == "file" and spec.low_mev == 1024 and spec.high_mev == 8192
    e = spec.sample(200, np.random.default_rng(0))
    assert set(np.unique(e)) <= {1024.0, 8192.0}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("gauss:1,2", "unknown kind 'gauss'; allowed: ds1"),
        ("log-uniform:1e3", "expected 2 numbers"),
        ("log-uniform:1e6,1e3", "need LO < HI"),
        ("fixed:-5", "finite and > 0"),
        ("fixed:abc", "not a comma-separated list"),
        ("ds1:3", "takes no argument"),
        ("file:", "needs a shower file path"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_energy_spec(spec)
