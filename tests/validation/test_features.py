"""CaloChallenge high-level features against explicit per-voxel loops."""

from __future__ import annotations

import numpy as np
import pytest

from simcompress.errors import ConfigError, GeometryError, ShowerFileError
from simcompress.showers.data import ShowerSet
from simcompress.showers.geometry import Geometry
from simcompress.validation.features import (
    FeatureAccumulator,
    compute_features,
    default_threshold_mev,
    energy_bins,
    feature_names,
    high_level_vector,
)


def _brute(g: Geometry, e_inc: float, shower: np.ndarray, thr: float) -> dict[str, float]:
    """Per-voxel loops, CaloChallenge HighLevelFeatures definitions."""
    s = np.where(shower >= thr, shower.astype(np.float64), 0.0)
    out = {"E_tot": s.sum(), "E_ratio": s.sum() / e_inc}
    for li, layer in enumerate(g.layers):
        idx = [v for v in range(g.n_voxels) if g.voxel_layer[v] == li]
        el = sum(s[v] for v in idx)
        out[f"E_layer_{layer.id}"] = el
        out[f"frac_layer_{layer.id}"] = el / out["E_tot"] if out["E_tot"] > 0 else 0.0
        for c, coord in (("x", g.voxel_x), ("y", g.voxel_y), ("r", g.voxel_r)):
            if c != "r" and layer.n_alpha == 1:
                continue
            m1 = sum(coord[v] * s[v] for v in idx) / (el + 1e-16)
            m2 = sum(coord[v] ** 2 * s[v] for v in idx) / (el + 1e-16)
            out[f"EC_{c}_{layer.id}"] = m1
            out[f"width_{c}_{layer.id}"] = np.sqrt(max(m2 - m1**2, 0.0))
        out[f"sparsity_{layer.id}"] = 1.0 - sum(1 for v in idx if s[v] > 0) / len(idx)
    return out


@pytest.mark.parametrize("thr", [0.0, 1.0])
def test_features_equal_voxel_loops(reference, thr) -> None:
    sub = reference[:5]
    t = compute_features(sub, threshold_mev=thr)
    assert set(t) == set(feature_names(sub.geometry))
    for i in range(5):
        b = _brute(sub.geometry, float(sub.incident_energy[i]), sub.showers[i], thr)
        for name, v in b.items():
            assert t[name][i] == pytest.approx(v, rel=2e-5, abs=1e-4), name


@pytest.mark.parametrize("name", ["ds1-pions", "ds2"])
def test_features_equal_voxel_loops_other_geometries(name) -> None:
    from simcompress.validation._toy import toy_showers

    g = Geometry.from_name(name)
    sub = toy_showers(g, 3, seed=4, energies=np.array([2e3, 5e4, 4e5]))
    thr = default_threshold_mev(g)
    t = compute_features(sub)
    assert t.threshold_mev == thr
    for i in range(3):
        b = _brute(g, float(sub.incident_energy[i]), sub.showers[i], thr)
        for fname, v in b.items():
            assert t[fname][i] == pytest.approx(v, rel=2e-5, abs=1e-4), fname


def test_feature_names_follow_geometry(geometry) -> None:
    names = feature_names(geometry)
    # ds1 photons: layers 1 and 2 have alpha bins (x/y centres and widths), all 5 have r, sparsity
    assert "EC_x_1" in names and "width_y_2" in names and "EC_x_0" not in names
    assert sum(n.startswith("sparsity_") for n in names) == 5
    assert len(names) == 2 + 5 * 2 + 2 * 4 + 5 * 3


def test_streaming_equals_one_shot(reference) -> None:
    one = compute_features(reference, threshold_mev=1.0)
    chunks = compute_features(reference.iter_chunks(333), threshold_mev=1.0)
    assert np.array_equal(one.values, chunks.values)
    assert np.array_equal(one.voxel_hist, chunks.voxel_hist)
    assert np.allclose(one.mean_image, chunks.mean_image, rtol=1e-12)
    assert np.allclose(one.radial_mean, chunks.radial_mean, rtol=1e-12)
    # summaries by brute force
    s = np.where(reference.showers >= 1.0, reference.showers.astype(np.float64), 0.0)
    assert np.allclose(one.mean_image, s.mean(axis=0), rtol=1e-9)
    assert np.allclose(one.var_image, s.var(axis=0), rtol=1e-6, atol=1e-9)
    assert one.voxel_hist.sum() == np.count_nonzero(s)
    edges, m, _ = one.radial_profile(1)
    assert len(m) == len(edges) - 1
    v = reference.geometry.layer_view(s, 1).sum(axis=1).mean(axis=0)
    assert np.allclose(m, v, rtol=1e-9)
    _, mn, _ = one.radial_profile(1, normalised=True)
    vn = (reference.geometry.layer_view(s, 1).sum(axis=1) / reference.incident_energy[:, None]).mean(axis=0)
    assert np.allclose(mn, vn, rtol=1e-6)
    ln, _ = one.longitudinal_profile(normalised=True)
    assert np.allclose(ln[0], (s[:, reference.geometry.layer_slices[0]].sum(axis=1) / reference.incident_energy).mean(), rtol=1e-5)
    lm, le = one.longitudinal_profile()
    assert np.allclose(lm, [s[:, sl].sum(axis=1).mean() for sl in reference.geometry.layer_slices], rtol=1e-6)
    assert np.all(le > 0)


def test_threshold_defaults_and_checks(geometry) -> None:
    assert default_threshold_mev(geometry) == 1.0
    assert default_threshold_mev(Geometry.from_name("ds2")) == pytest.approx(0.01515, rel=1e-3)
    with pytest.raises(ConfigError, match="threshold"):
        FeatureAccumulator(geometry, threshold_mev=-1.0)


def test_bad_chunks_are_errors(geometry, reference) -> None:
    bad = ShowerSet(reference.incident_energy[:3].copy(), reference.showers[:3].copy(), geometry)
    bad.showers[1, 5] = np.nan
    with pytest.raises(ShowerFileError, match="NaN"):
        compute_features(bad, source="gen.root")
    with pytest.raises(ShowerFileError, match="no events"):
        compute_features([], source="empty.root")
    acc = FeatureAccumulator(Geometry.from_name("ds1-pions"))
    with pytest.raises(GeometryError):
        acc.update(reference[:2])


def test_energy_bins() -> None:
    ds1 = energy_bins(2.0 ** np.arange(8, 23).astype(np.float32).repeat(3))
    assert len(ds1) == 15 and ds1[0].label == "256 MeV" and ds1[-1].label == "4.194 TeV"
    assert ds1[3].mask(np.array([2048.0, 2048.0001, 4096.0])).tolist() == [True, True, False]
    cont = energy_bins(np.exp(np.random.default_rng(0).uniform(np.log(1e3), np.log(1e6), 500)))
    assert [b.label for b in cont] == ["1 GeV-10 GeV", "10 GeV-100 GeV", "100 GeV-1 TeV"]
    assert sum(int(b.mask(np.array([1e3, 5e4, 9.99e5])).sum()) for b in cont) == 3


def test_high_level_vector(reference) -> None:
    t = compute_features(reference[:50])
    h = high_level_vector(t)
    assert h.shape == (50, 1 + 5 + 4 * 2 + 1 + 5 + 5 + 5)
    assert np.allclose(h[:, 0], np.log10(reference.incident_energy[:50]))
    assert np.allclose(h[:, 1], np.log10(t["E_layer_0"].astype(np.float64) + 1e-8))


def test_zero_energy_events_are_finite(geometry) -> None:
    s = ShowerSet(np.full(3, 1000.0), np.zeros((3, geometry.n_voxels)), geometry)
    t = compute_features(s)
    assert np.all(np.isfinite(t.values)) and np.all(t["sparsity_0"] == 1.0) and np.all(t["E_ratio"] == 0)
