"""Cartesian detectors: grid geometries, features on them, GFlash placement, CaloGAN files, the chain."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
import uproot

from simcompress.errors import GeometryError
from simcompress.showers.data import ShowerSet
from simcompress.showers.geometry import Geometry
from simcompress.showers.io import content_hash, open_showers, write_showers
from simcompress.showers.reference import simulate
from simcompress.validation.features import compute_features, feature_names


@pytest.fixture(scope="module")
def calogan() -> Geometry:
    return Geometry.from_name("calogan")


@pytest.fixture(scope="module")
def calogan_showers() -> ShowerSet:
    return simulate("calogan", 400, energies="log-uniform:1e3,1e5", seed=5, progress=False)


def test_calogan_description(calogan) -> None:
    assert calogan.kind == "cartesian" and calogan.n_voxels == 504 and calogan.overflow_values == 3
    assert [layer.shape for layer in calogan.layers] == [(3, 96), (12, 12), (12, 6)]
    l0, l1, l2 = calogan.layers
    assert np.allclose(np.diff(l0.x_edges_mm), 5.0) and np.allclose(np.diff(l0.y_edges_mm), 160.0)
    assert np.allclose(np.diff(l2.x_edges_mm), 80.0) and np.allclose(np.diff(l2.y_edges_mm), 40.0)
    assert l0.x_edges_mm[0] == -240.0 and l1.y_edges_mm[-1] == 240.0
    # depth: 90, 347, 43 mm of the Pb/LAr stack, contiguous
    x0 = calogan.material.x0_mm
    assert np.allclose([(b - a) * x0 for a, b in (l.depth_x0 for l in calogan.layers)], [90.0, 347.0, 43.0])
    assert l1.depth_x0[0] == l0.depth_x0[1]
    # flattening: layer, row (y), column (x) as CaloGAN's reshape((3, 96)) ...
    assert (calogan.voxel_x[0], calogan.voxel_y[0]) == (-237.5, -160.0)
    assert (calogan.voxel_x[95], calogan.voxel_y[96]) == (237.5, 0.0)
    flat = np.arange(504, dtype=np.float32)[None, :]
    assert (calogan.layer_view(flat, 1)[0] == np.arange(288, 432).reshape(12, 12)).all()
    assert np.allclose(calogan.voxel_r, np.hypot(calogan.voxel_x, calogan.voxel_y))
    # round trip through the dict that goes into file provenance
    again = Geometry.from_dict(json.loads(json.dumps(calogan.to_dict())))
    assert again == calogan and again.same_binning(calogan)


def test_grid_25_and_fingerprints() -> None:
    g = Geometry.from_name("grid-25")
    assert g.n_voxels == 15625 and g.n_layers == 25 and g.layers[24].depth_x0 == (24.0, 25.0)
    assert g.voxel_x[12] == 0.0 and g.voxel_y[12 * 25] == 0.0  # odd count: a cell centred on the axis
    e = Geometry.from_name("ecal-30")
    assert e.n_voxels == 900 and e.n_layers == 1 and e.layers[0].shape == (30, 30)
    s = simulate(e, 40, energies="fixed:20000", seed=3, progress=False)
    assert 0.97 < float((s.total_energy / s.incident_energy).mean()) < 1.03  # sampling fluctuations around full containment
    img = e.layer_view(s.showers, 0).sum(axis=0)
    assert img[14:16, 14:16].sum() > 0.5 * img.sum()  # the axis is the corner of the four central cells
    ds1 = Geometry.from_name("ds1-photons")
    # cylindrical fingerprints are what they were before Cartesian layers existed (files stay compatible)
    old = [{"id": l.id, "r_edges_mm": list(l.r_edges_mm), "n_alpha": l.n_alpha} for l in ds1.layers]
    assert ds1.fingerprint == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert len({g.fingerprint, ds1.fingerprint, e.fingerprint, Geometry.from_name("calogan").fingerprint}) == 4


def test_grid_description_errors() -> None:
    base = {"name": "g", "layers": [{"id": 0, "nx": 4, "ny": 2, "cell_x_mm": 1.0, "cell_y_mm": 2.0, "depth_x0": [0, 1]}]}
    g = Geometry.from_dict(base)
    assert g.layers[0].x_edges_mm == (-2.0, -1.0, 0.0, 1.0, 2.0) and g.layers[0].shape == (2, 4)
    with pytest.raises(GeometryError, match=r"layers\[0\]: a grid layer needs y_edges_mm or ny and cell_y_mm"):
        Geometry.from_dict({"layers": [{"nx": 4, "cell_x_mm": 1.0}]})
    with pytest.raises(GeometryError, match="mixes cylindrical and Cartesian layers"):
        Geometry.from_dict({"layers": [base["layers"][0], {"id": 1, "r_edges_mm": [0, 1], "n_alpha": 1}]})
    with pytest.raises(GeometryError, match=r"grid: unknown key 'nq'; known: cell_x_mm, cell_y_mm, layer_x0, nx, ny, nz"):
        Geometry.from_dict({"grid": {"nq": 3}})
    with pytest.raises(GeometryError, match="thickness_mm needs a material"):
        Geometry.from_dict({"layers": [{"nx": 1, "ny": 1, "cell_x_mm": 1, "cell_y_mm": 1, "thickness_mm": 5}]})
    with pytest.raises(GeometryError, match=r"x_edges_mm must be at least 2 increasing values"):
        Geometry.from_dict({"layers": [{"x_edges_mm": [0, 0], "y_edges_mm": [0, 1]}]})


def test_features_on_a_grid_by_hand() -> None:
    g = Geometry.from_dict({"name": "toy", "layers": [
        {"id": 0, "x_edges_mm": [0, 10, 20, 30], "y_edges_mm": [0, 10], "depth_x0": [0, 1]},
        {"id": 1, "nx": 2, "ny": 2, "cell_x_mm": 10.0, "cell_y_mm": 10.0, "depth_x0": [1, 2]}]})
    names = feature_names(g)
    assert {"EC_x_0", "EC_y_0", "width_x_1", "width_y_1", "sparsity_1", "EC_r_1"} <= set(names)
    sh = np.zeros((2, g.n_voxels), np.float32)
    sh[0, 0], sh[0, 2] = 10.0, 30.0  # layer 0 cells at x = 5 and 25 (y = 5)
    sh[0, 3 + 3] = 20.0  # layer 1: row 1, column 1 -> (5, 5)
    sh[1, 1] = 5.0
    t = compute_features(ShowerSet(np.array([100.0, 50.0], np.float32), sh, g), threshold_mev=1.0)
    assert t["EC_x_0"][0] == pytest.approx(20.0) and t["EC_y_0"][0] == pytest.approx(5.0)
    assert t["width_x_0"][0] == pytest.approx(np.sqrt((10 * 15**2 + 30 * 5**2) / 40.0), rel=1e-5)
    assert t["width_y_0"][0] == pytest.approx(0.0, abs=1e-3)
    assert (t["EC_x_1"][0], t["EC_y_1"][0]) == (pytest.approx(5.0), pytest.approx(5.0))
    assert t["sparsity_0"][0] == pytest.approx(1 / 3) and t["sparsity_1"][0] == pytest.approx(0.75)
    assert t["E_layer_0"][1] == 5.0 and t["EC_x_0"][1] == pytest.approx(15.0)
    edges, prof, _ = t.radial_profile(0)  # columns of a grid layer
    assert list(edges) == [0, 10, 20, 30] and prof.shape == (3,)


def test_gflash_in_calogan_cells(calogan_showers) -> None:
    s = calogan_showers
    ratio = s.total_energy / s.incident_energy
    assert 0.97 < ratio.mean() <= 1.0  # 28 X0 deep, 480 mm wide: nearly contained
    t = compute_features(s)
    for layer in (0, 1):
        # the shower axis is the grid centre: centres scatter around 0 by much less than a cell
        assert abs(float(np.mean(t[f"EC_x_{layer}"]))) < 2.0 and abs(float(np.mean(t[f"EC_y_{layer}"]))) < 5.0
    # layer 0's 5 mm strips resolve the core: narrower in x than layer 1's 40 mm cells, and most energy in the middle row
    assert np.median(t["width_x_0"]) < np.median(t["width_x_1"])
    img0 = s.geometry.layer_view(s.showers, 0).sum(axis=0)
    assert img0[1].sum() > 0.9 * img0.sum()
    fr = s.layer_energies().sum(axis=0) / s.total_energy.sum()
    assert fr[1] > fr[0] > fr[2] > 0
    again = simulate("calogan", 400, energies="log-uniform:1e3,1e5", seed=5, progress=False, chunk_size=64)
    assert content_hash(again) == content_hash(s)


def test_calogan_geant4_root_layout(tmp_path, calogan_showers) -> None:
    """``fancy_tree`` with ``cell_0 .. cell_506`` (504 cells + 3 overflow, MeV) and ``TotalEnergy`` (GeV)."""
    s = calogan_showers[:60]
    rng = np.random.default_rng(0)
    overflow = rng.random((60, 3)).astype(np.float32)
    cells = np.concatenate([s.showers, overflow], axis=1).astype(np.float64)
    data = {"TotalEnergy": s.incident_energy.astype(np.float64) / 1000.0}
    data.update({f"cell_{i}": cells[:, i] for i in range(507)})
    p = tmp_path / "calogan_g4.root"
    with uproot.recreate(p) as f:
        f.mktree("fancy_tree", dict.fromkeys(data, np.float64)).extend(data)
    r = open_showers(p, energy_unit="GeV")
    assert r.geometry.name == "calogan" and r.layout == "cells" and r.source_layout["overflow_values_dropped"] == 3
    got = r.read()
    assert got.showers.tobytes() == s.showers.tobytes()
    np.testing.assert_allclose(got.incident_energy, s.incident_energy, rtol=1e-6)


def test_calogan_hdf5_layout(tmp_path, calogan_showers) -> None:
    """CaloGAN's published HDF5: ``energy`` (N, 1) GeV, ``layer_0`` (N, 3, 96), ``layer_1``, ``layer_2``, ``overflow``."""
    s = calogan_showers[:60]
    g = s.geometry
    p = tmp_path / "gamma.hdf5"
    with h5py.File(p, "w") as f:
        f["energy"] = (s.incident_energy.astype(np.float64) / 1000.0).reshape(-1, 1)
        for i in range(3):
            f[f"layer_{i}"] = g.layer_view(s.showers, i)
        f["overflow"] = np.zeros((60, 3), np.float32)
    r = open_showers(p, energy_unit="GeV")
    assert r.geometry.name == "calogan" and r.source_layout["energy"] == "energy"
    assert r.read().showers.tobytes() == s.showers.tobytes()


def test_cartesian_files_round_trip(tmp_path, calogan_showers) -> None:
    s = calogan_showers
    for name in ("c.root", "c.h5"):
        p = write_showers(tmp_path / name, s)
        r = open_showers(p)
        assert r.geometry == s.geometry and r.read().showers.tobytes() == s.showers.tobytes()
    sparse = write_showers(tmp_path / "cs.root", s, layout="sparse")
    assert open_showers(sparse).read().showers.tobytes() == s.showers.tobytes()


def test_chain_on_calogan(tmp_path, capsys) -> None:
    """simulate -> tiny untrained GAN bundle -> generate -> validate -> plot-layers, all through the CLI."""
    import torch

    from simcompress.cli import main
    from simcompress.generators import save_generator
    from simcompress.generators.gan import GANGenerator

    ref = tmp_path / "ref.root"
    assert main(["simulate", "-g", "calogan", "-n", "800", "--seed", "1", "-e", "log-uniform:1e3,1e5",
                 "-o", str(ref), "--no-progress"]) == 0
    torch.manual_seed(0)
    gen = GANGenerator(Geometry.from_name("calogan"), latent_dim=8, energy_range_mev=(1e3, 1e5), hidden=[32, 32],
                       critic_hidden=[32])
    save_generator(gen, tmp_path / "tiny-gan", card={"note": "untrained"})
    out = tmp_path / "gen.root"
    assert main(["generate", "--model", str(tmp_path / "tiny-gan"), "--events", "600", "--energies", f"file:{ref}",
                 "--seed", "3", "--out", str(out)]) == 0
    g = open_showers(out)
    assert g.geometry.name == "calogan" and g.n_events == 600
    rc = main(["validate", "--reference", str(ref), "--candidate", f"tiny={out}", "--gate", "loose", "-q",
               "--no-html", "-o", str(tmp_path / "rep")])
    assert rc == 1  # an untrained generator must fail the gate
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["candidates"]["tiny"]["n_events"] == 600
    text = json.dumps(m)
    assert "EC_x_0" in text and "width_y_2" in text and "sparsity_1" in text
    capsys.readouterr()
    assert main(["plot-layers", f"ref={ref}", f"tiny={out}", "-o", str(tmp_path / "img.png"), "-n", "200"]) == 0
    assert (tmp_path / "img.png").stat().st_size > 10_000
    # compress (int8 PTQ) and a sharded batch run with the compressed bundle, merged back into one file
    comp = tmp_path / "tiny-int8"
    assert main(["compress", "--model", str(tmp_path / "tiny-gan"), "--recipe", "configs/compress/int8-ptq.yaml",
                 "--out", str(comp), "--no-gate", "--no-onnx", "--no-validation-html", "--report-samples", "256",
                 "--measure-seconds", "0.05"]) == 0
    run = tmp_path / "run"
    assert main(["generate", "--model", str(comp), "--events", "600", "--shard-size", "200", "--energies", f"file:{ref}",
                 "--seed", "4", "--out", str(run)]) == 0
    assert main(["merge", str(run), "--out", str(tmp_path / "all.root")]) == 0
    merged = open_showers(tmp_path / "all.root")
    assert merged.geometry.name == "calogan" and merged.n_events == 600 and len(list(run.glob("shard_*.root"))) == 3
