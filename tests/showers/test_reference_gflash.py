"""GFlash reference simulator: worked numbers of the parametrisation and physics behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from simcompress.errors import ConfigError, GeometryError
from simcompress.showers.geometry import Geometry, Layer, Material, Medium
from simcompress.showers.reference import (
    GFlashConfig,
    critical_energy_mev,
    effective_material,
    iter_simulate,
    longitudinal_parameters,
    moliere_radius_mm,
    n_spots,
    radial_parameters,
    simulate,
)

W = Medium("W", 74.0, 183.84, 19.3, 3.504)
SI = Medium("Si", 14.0, 28.0855, 2.329, 93.7)
E_GEV = np.array([1.0, 10.0, 100.0, 1000.0])


# ------------------------------------------------------------------ worked numbers (calorimeter.md 5.6)
def test_material_quantities_of_tungsten_and_silicon() -> None:
    assert critical_energy_mev(W) == pytest.approx(8.00, abs=0.005)
    assert critical_energy_mev(SI) == pytest.approx(36.7, abs=0.05)
    assert moliere_radius_mm(W, es_mev=21.2) == pytest.approx(9.28, abs=0.005)


def test_homogeneous_tungsten_longitudinal_worked_numbers() -> None:
    eff = effective_material(Material("homogeneous", W))
    p = longitudinal_parameters(E_GEV * 1000.0, eff)
    np.testing.assert_allclose(p["t_max"], [4.02, 6.32, 8.62, 10.92], atol=0.005)
    np.testing.assert_allclose(p["alpha"], [3.17, 4.29, 5.42, 6.54], atol=0.006)
    np.testing.assert_allclose(p["beta"], [0.540, 0.521, 0.513, 0.507], atol=0.0006)
    np.testing.assert_allclose(p["sigma_ln_t"], [0.214, 0.132, 0.095, 0.075], atol=0.0006)
    np.testing.assert_allclose(p["sigma_ln_alpha"], [0.280, 0.180, 0.133, 0.105], atol=0.0006)
    np.testing.assert_allclose(p["rho"], [0.594, 0.541, 0.488, 0.435], atol=0.0006)


def test_tungsten_silicon_sampling_effective_quantities() -> None:
    eff = effective_material(Material("sampling", W, SI, absorber_mm=1.4, active_mm=0.3, sampling_fraction=0.033))
    assert eff.w_absorber == pytest.approx(0.975, abs=0.0005)
    assert pytest.approx(72.5, abs=0.05) == eff.Z
    assert eff.density == pytest.approx(16.3, abs=0.05)
    assert eff.x0_mm == pytest.approx(4.22, abs=0.005)
    assert eff.rm_mm == pytest.approx(9.48, abs=0.005)
    assert eff.ec_mev == pytest.approx(9.44, abs=0.005)
    assert eff.fs == pytest.approx(2.48, abs=0.005)
    assert eff.ehat == pytest.approx(0.704, abs=0.0005)
    # one ds2 readout layer (3.4 mm) and the 45-layer stack in X0_eff
    assert 3.4 / eff.x0_mm == pytest.approx(0.805, abs=0.0005)
    assert 45 * 3.4 / eff.x0_mm == pytest.approx(36.2, abs=0.05)
    p = longitudinal_parameters(E_GEV * 1000.0, eff)
    np.testing.assert_allclose(p["t_max"], [3.43, 5.73, 8.03, 10.33], atol=0.006)
    np.testing.assert_allclose(p["t_max"] * eff.x0_mm, [14.5, 24.2, 33.9, 43.6], atol=0.06)
    np.testing.assert_allclose(p["alpha"], [2.90, 4.03, 5.15, 6.28], atol=0.006)


def test_builtin_ds2_material_is_the_calochallenge_w_si_stack() -> None:
    eff = effective_material(Geometry.from_name("ds2").material)
    assert eff.x0_mm == pytest.approx(4.22, abs=0.005)
    assert Geometry.from_name("ds2").layers[0].depth_x0[1] == pytest.approx(3.4 / eff.x0_mm, abs=1e-4)


def test_radial_parameters_follow_the_formulas() -> None:
    eff = effective_material(Material("homogeneous", W))
    rc, rt, p = radial_parameters(np.array(10_000.0), np.array(1.0), eff)
    lne = np.log(10.0)
    assert rc == pytest.approx(0.0251 + 0.00319 * lne + (0.1162 - 0.000381 * 74))
    k1, k4 = 0.659 - 0.00309 * 74, 0.3585 + 0.0412 * lne
    assert rt == pytest.approx(k1 * (np.exp(-2.59 * (1 - 0.645)) + np.exp(k4 * (1 - 0.645))))
    p2, p3 = 0.401 + 0.00187 * 74, 1.313 - 0.0686 * lne
    x = (p2 - 1.0) / p3
    assert p == pytest.approx((2.632 - 0.00094 * 74) * np.exp(x - np.exp(x)))
    assert n_spots(10_000.0, eff) == pytest.approx(93 * np.log(74) * 10**0.876)


# ------------------------------------------------------------------ behaviour
def _longitudinal_centroid_x0(s) -> np.ndarray:
    depth = np.array([np.mean(layer.depth_x0) for layer in s.geometry.layers])
    le = s.layer_energies()
    return (le * depth).sum(axis=1) / le.sum(axis=1)


def test_shower_maximum_moves_deeper_linearly_in_log_energy() -> None:
    eff = effective_material(Geometry.from_name("ds2").material)
    centroids = []
    for e in (1e3, 1e4, 1e5):
        s = simulate("ds2", 150, energies=f"fixed:{e}", seed=3, progress=False)
        centroids.append(_longitudinal_centroid_x0(s).mean())
        # without per-shower fluctuations every shower has the mean profile, whose mean depth
        # is alpha/beta = T + 1/beta (a little less at 100 GeV: leakage behind 36 X0)
        mean_only = simulate("ds2", 60, energies=f"fixed:{e}", seed=3, progress=False, config={"fluctuations": False})
        p = longitudinal_parameters(e, eff)
        assert _longitudinal_centroid_x0(mean_only).mean() == pytest.approx(float(p["alpha"] / p["beta"]), rel=0.04)
    d1, d2 = centroids[1] - centroids[0], centroids[2] - centroids[1]
    assert d1 > 1.5 and d2 > 1.5  # about 2.3 X0 per decade (T grows by ln 10)
    assert d1 == pytest.approx(d2, rel=0.25)


def test_mean_deposit_proportional_and_resolution_one_over_sqrt_e() -> None:
    energies = (1024.0, 16384.0, 262144.0)
    s = simulate("ds1-photons", 1500, energies="discrete:1024,16384,262144", seed=5, progress=False)
    ratio = s.total_energy / s.incident_energy
    means, stoch = [], []
    for e in energies:
        r = ratio[s.incident_energy == e]
        assert len(r) > 400
        means.append(r.mean())
        stoch.append(r.std() / r.mean() * np.sqrt(e / 1000.0))  # sigma/E * sqrt(E/GeV)
    # deposited energy proportional to incident energy: ratio constant within 2 %
    assert max(means) - min(means) < 0.02
    assert 0.95 < np.mean(means) < 1.02
    # resolution ~ a/sqrt(E): the stochastic term is the same at all energies (a = 0.11 here)
    np.testing.assert_allclose(stoch, 0.11, rtol=0.15)


def test_energy_outside_the_binned_region_is_lost() -> None:
    base = Geometry.from_name("ds2")
    # only the first 5 layers (4 X0) and 2 radial bins (0.98 R_M): most of the shower leaks
    short = Geometry(
        "ds2-short",
        tuple(Layer(layer.id, layer.r_edges_mm[:3], layer.n_alpha, layer.depth_x0) for layer in base.layers[:5]),
        base.material,
        "electron",
    )
    s_full = simulate("ds2", 100, energies="fixed:10000", seed=2, progress=False)
    s_short = simulate(short, 100, energies="fixed:10000", seed=2, progress=False)
    f_full = (s_full.total_energy / s_full.incident_energy).mean()
    f_short = (s_short.total_energy / s_short.incident_energy).mean()
    assert f_full > 0.9
    assert 0.05 < f_short < 0.5


def test_lateral_profile_core_and_containment() -> None:
    s = simulate("ds2", 100, energies="fixed:10000", seed=4, progress=False)
    g = s.geometry
    per_r = np.zeros(9)
    for i in range(g.n_layers):
        per_r += g.layer_view(s.showers, i).sum(axis=(0, 1))
    frac = np.cumsum(per_r) / s.incident_energy.sum()
    assert 0.5 < frac[0] < 0.9  # inside 0.5 R_M: the core
    assert frac[1] > frac[0] and np.all(np.diff(frac) >= 0)
    assert frac[-1] > 0.9  # 4.4 R_M contains > 90 %


def test_azimuth_is_uniform() -> None:
    s = simulate("ds2", 200, energies="fixed:50000", seed=6, progress=False)
    per_alpha = sum(s.geometry.layer_view(s.showers, i).sum(axis=(0, 2)) for i in range(45))
    frac = per_alpha / per_alpha.sum()
    np.testing.assert_allclose(frac, 1 / 16, rtol=0.1)


def test_homogeneous_material_has_no_sampling_fluctuations() -> None:
    homo = Geometry(
        "w-block",
        tuple(Layer(i, (0.0, 5.0, 10.0, 20.0, 50.0, 200.0), 4, (i * 2.0, i * 2.0 + 2.0)) for i in range(20)),
        Material("homogeneous", W),
    )
    s = simulate(homo, 300, energies="fixed:10000", seed=1, progress=False)
    r = s.total_energy / s.incident_energy
    assert r.mean() > 0.97
    assert r.std() < 0.01  # only leakage fluctuates: no sampling term for homogeneous media


def test_deterministic_and_independent_of_chunk_size() -> None:
    a = simulate("ds1-photons", 2500, seed=9, chunk_size=10_000, progress=False)
    b = simulate("ds1-photons", 2500, seed=9, chunk_size=333, progress=False)
    np.testing.assert_array_equal(a.showers, b.showers)
    np.testing.assert_array_equal(a.incident_energy, b.incident_energy)
    c = simulate("ds1-photons", 100, seed=9, progress=False)  # a prefix of the longer run
    np.testing.assert_array_equal(c.showers, a.showers[:100])
    d = simulate("ds1-photons", 100, seed=10, progress=False)
    assert not np.array_equal(d.showers, c.showers)


def test_iter_simulate_chunks_and_metadata() -> None:
    chunks = list(iter_simulate("ds1-photons", 1000, "ds1", seed=1, chunk_size=300, progress=False))
    assert [len(c) for c in chunks] == [300, 300, 300, 100]
    m = chunks[0].metadata
    assert m["seed"] == 1 and m["energies"] == "ds1" and m["generator"].endswith("gflash")
    assert m["config"]["step_x0"] == 0.5
    for c in chunks:
        assert c.showers.dtype == np.float32 and c.showers.shape[1] == 368
        assert np.all(c.showers >= 0)
        c.validate("sim")


def test_config_options_change_the_physics() -> None:
    s0 = simulate("ds1-photons", 400, energies="fixed:16384", seed=2, progress=False)
    s1 = simulate("ds1-photons", 400, energies="fixed:16384", seed=2, progress=False, config={"sampling_term": 0.0})
    sd0 = (s0.total_energy / 16384).std()
    sd1 = (s1.total_energy / 16384).std()
    assert sd0 > 0.02 and sd1 < 0.005
    capped = simulate("ds1-photons", 50, energies="fixed:16384", seed=2, progress=False, config=GFlashConfig(max_spots=10))
    # 10 equal spots over 5 layers: at most 10 + 5 distinct non-zero voxel values per shower before the sampling term
    assert np.count_nonzero(capped.showers, axis=1).max() <= 15


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="n_events must be >= 0"):
        simulate("ds1-photons", -1, progress=False)
    with pytest.raises(ConfigError, match="step_x0"):
        simulate("ds1-photons", 1, progress=False, config={"step_x0": -1})
    with pytest.raises(ConfigError, match="unknown key 'stepx0'"):
        simulate("ds1-photons", 1, progress=False, config={"stepx0": 1})
    no_mat = Geometry("bare", (Layer(0, (0.0, 1.0), 1, (0.0, 1.0)),))
    with pytest.raises(GeometryError, match="'bare' has no material"):
        simulate(no_mat, 1, progress=False)
    flat = Geometry("flat", (Layer(0, (0.0, 1.0), 1, (0.0, 0.0)),), Material("homogeneous", W))
    with pytest.raises(GeometryError, match="layer 0: depth_x0"):
        simulate(flat, 1, progress=False)


def test_photon_conversion_option_shifts_showers_by_the_conversion_length() -> None:
    base = simulate("ds2", 300, energies="fixed:10000", seed=8, progress=False)
    conv = simulate("ds2", 300, energies="fixed:10000", seed=8, progress=False, config={"photon_conversion": True})
    shift = _longitudinal_centroid_x0(conv).mean() - _longitudinal_centroid_x0(base).mean()
    assert shift == pytest.approx(9 / 7, abs=0.35)  # mean free path of a photon: 9/7 X0
    # the start depth fluctuates too, so the centroid spread grows
    assert _longitudinal_centroid_x0(conv).std() > _longitudinal_centroid_x0(base).std()


@pytest.mark.parametrize("energy", ["fixed:0.5", "fixed:30", "fixed:1e8"])
@pytest.mark.parametrize("geometry", ["ds1-photons", "ds2"])
def test_extreme_energies_give_valid_showers(geometry: str, energy: str) -> None:
    # below the critical energy and far above the CaloChallenge range the parametrisation is
    # clamped (Geant4's limits), never NaN or negative
    s = simulate(geometry, 20, energies=energy, seed=0, progress=False).validate(energy)
    assert np.all(s.showers >= 0) and np.all(np.isfinite(s.total_energy))


def test_spot_placement_paths_sample_the_same_multinomial() -> None:
    from simcompress.showers.reference import _place_spots

    # one radial CDF: 10 % inside r_0 and 20 % beyond r_max are lost; 3 radial x 2 azimuthal voxels
    cdf = np.tile([0.1, 0.3, 0.6, 0.8], (20_000, 1))
    p_cell = np.tile(np.diff(cdf[0]) / 2, 2)  # CaloChallenge order: alpha outer, radius inner
    rng = np.random.default_rng(0)
    for n in (3, 40):  # 3 < 6 voxels: spot by spot; 40: one multinomial per shower
        counts = _place_spots(np.full(20_000, n), cdf, 2, rng)
        assert counts.shape == (20_000, 6)
        mean = counts.mean(axis=0)
        sigma = np.sqrt(n * p_cell * (1 - p_cell) / 20_000)
        assert np.all(np.abs(mean - n * p_cell) < 5 * sigma), (n, mean, n * p_cell)
        assert counts.sum(axis=1).mean() == pytest.approx(0.7 * n, rel=0.02)  # 30 % lost
