"""The block kernel of the features equals the straightforward float64 computation."""

from __future__ import annotations

import numpy as np
import pytest

from simcompress.showers.data import ShowerSet
from simcompress.showers.geometry import Geometry
from simcompress.validation import feature_kernel as K
from simcompress.validation.features import VOXEL_LOG10_EDGES, compute_features, default_threshold_mev


def _straightforward(g: Geometry, einc32: np.ndarray, x32: np.ndarray, thr: float) -> dict[str, np.ndarray]:
    """Threshold a float64 copy, one product per kind of sum, log10 of every non-zero voxel."""
    x = x32.astype(np.float64)
    if thr > 0:
        x[x < thr] = 0.0
    else:
        np.maximum(x, 0.0, out=x)
    einc = einc32.astype(np.float64)
    w = K._build_weights(g)
    s = x @ w.matrix
    e_layer = s[:, w.layer]
    e_tot = e_layer.sum(axis=1)
    denom = e_layer + 1e-16
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(e_tot[:, None] > 0, e_layer / np.where(e_tot > 0, e_tot, 1.0)[:, None], 0.0)
    cols = [e_tot[:, None], (e_tot / einc)[:, None], e_layer, frac]
    al = w.alpha_layers
    if al:
        da = denom[:, al]
        ecx, ecy = s[:, w.x] / da, s[:, w.y] / da
        block = np.empty((x.shape[0], 4 * len(al)))
        block[:, 0::4], block[:, 1::4] = ecx, ecy
        block[:, 2::4] = np.sqrt(np.maximum(s[:, w.xx] / da - ecx**2, 0.0))
        block[:, 3::4] = np.sqrt(np.maximum(s[:, w.yy] / da - ecy**2, 0.0))
        cols.append(block)
    ecr = s[:, w.r] / denom
    cols += [ecr, np.sqrt(np.maximum(s[:, w.rr] / denom - ecr**2, 0.0))]
    layer_n = np.array([layer.n_voxels for layer in g.layers], dtype=np.float64)
    onehot = w.matrix[:, : g.n_layers]
    cols.append(1.0 - ((x > 0).astype(np.float64) @ onehot) / layer_n)
    pos = x[x > 0]
    e = VOXEL_LOG10_EDGES
    idx = np.clip(np.floor((np.log10(pos) - e[0]) / (e[1] - e[0])).astype(np.int64), 0, len(e) - 2)
    rad = x @ K._radial_matrix(g)
    return {
        "values": np.concatenate(cols, axis=1).astype(np.float32),
        "hist": np.bincount(idx, minlength=len(e) - 1),
        "image": x.sum(axis=0),
        "image_sq": (x * x).sum(axis=0),
        "radial": rad.sum(axis=0),
        "radial_sq": (rad * rad).sum(axis=0),
        "radial_norm": (rad / einc[:, None]).sum(axis=0),
    }


@pytest.mark.parametrize(("name", "thr"), [("ds1-photons", 1.0), ("ds1-photons", 0.0), ("ds2", None), ("ds1-pions", 0.3)])
def test_block_kernel_equals_float64_computation(reference, monkeypatch, name, thr) -> None:
    from simcompress.validation import features
    from simcompress.validation._toy import toy_showers

    monkeypatch.setattr(features, "_BLOCK", 96)  # several blocks per chunk, on the worker threads

    g = Geometry.from_name(name)
    thr = default_threshold_mev(g) if thr is None else thr
    showers = reference[:700] if name == "ds1-photons" else toy_showers(g, 300, seed=3)
    x = showers.showers.copy()
    if thr > 0:  # voxels on, just below and just above the threshold (float32 neighbours)
        t32 = np.float32(thr)
        x[:, :3] = [np.nextafter(t32, np.float32(0)), t32, np.nextafter(t32, np.float32(np.inf))]
    else:
        x[:, :2] = [-1e-7, 0.0]
    sub = ShowerSet(showers.incident_energy, x, g)
    want = _straightforward(g, sub.incident_energy, sub.showers, thr)
    table = compute_features(sub.iter_chunks(250), threshold_mev=thr)
    np.testing.assert_allclose(table.values, want["values"], rtol=1e-6, atol=1e-6)
    assert np.array_equal(table.voxel_hist, want["hist"])
    np.testing.assert_allclose(table._image_sum, want["image"], rtol=1e-12)
    np.testing.assert_allclose(table._image_sumsq, want["image_sq"], rtol=1e-12)
    np.testing.assert_allclose(table._radial_sum, want["radial"], rtol=1e-12)
    np.testing.assert_allclose(table._radial_sumsq, want["radial_sq"], rtol=1e-12)
    np.testing.assert_allclose(table._radial_norm_sum, want["radial_norm"], rtol=1e-12)


def test_float32_threshold_is_the_float64_comparison() -> None:
    rng = np.random.default_rng(0)
    for thr in (1.0, 0.5e-3 / 0.033, 0.1, 1e-7, 3.3):
        t = K.float32_threshold(thr)
        base = np.float32(thr)
        v = np.array([np.nextafter(base, np.float32(d)) for d in (0, np.inf)] + [base], dtype=np.float32)
        v = np.concatenate([v, (rng.random(1000) * 2 * thr).astype(np.float32)])
        assert np.array_equal(v < t, v.astype(np.float64) < thr)


def _histogram_per_voxel(x32: np.ndarray, t32: np.float32 | None) -> np.ndarray:
    """The histogram as the kernel made it before the cell table: ``_hist_bin`` of every voxel kept."""
    xt = np.maximum(x32, np.float32(0)) if t32 is None else np.where(x32 < t32, np.float32(0), x32)
    return np.bincount(K._hist_bin(xt[xt > 0]), minlength=len(VOXEL_LOG10_EDGES) - 1)


@pytest.mark.parametrize("thr", [1.0, 0.0, 0.5e-3 / 0.033, 0.3, 1e-40])
def test_voxel_histogram_cells_equal_per_voxel_bins(thr) -> None:
    """Every float32 on, just below and just above each bin edge and the threshold, zeros of both signs,
    negatives, denormals, values beyond the last edge and log-uniform values land in the per-voxel bin."""
    rng = np.random.default_rng(1)
    e32 = (10.0 ** VOXEL_LOG10_EDGES).astype(np.float32)
    vals = [e32]
    below = above = e32
    for _ in range(3):  # up to three float32 steps either side of each edge
        below, above = np.nextafter(below, np.float32(0)), np.nextafter(above, np.float32(np.inf))
        vals += [below, above]
    t32 = K.float32_threshold(thr) if thr > 0 else None
    special = [0.0, -0.0, -1.0, -1e-30, 1e-45, 1e-40, 1.2e-38, 3e38, 1e8, 1e7, 1e-6, 1e-7]
    if t32 is not None:
        special += [float(np.nextafter(t32, np.float32(0))), float(t32), float(np.nextafter(t32, np.float32(np.inf)))]
    vals += [np.array(special, dtype=np.float32), (10.0 ** rng.uniform(-8, 8, 20_000)).astype(np.float32)]
    x = np.concatenate(vals).astype(np.float32)
    x = np.concatenate([x, np.zeros(-x.size % 7, dtype=np.float32)]).reshape(-1, 7)  # a 2-D block, as the kernel gets
    table = K._cell_table(t32)
    got = K.voxel_histogram(x, t32, table)
    assert got.dtype == np.int64
    assert np.array_equal(got, _histogram_per_voxel(x, t32))
    # the per-voxel path is taken only in the few cells with an edge (or the threshold) inside
    assert int(np.sum(table == K._EXACT)) < 400


def test_block_kernel_histogram_unchanged_on_showers(reference) -> None:
    """On GFlash showers, the kernel's histogram is the per-voxel one (ds1 threshold and none)."""
    g = reference.geometry
    x = reference.showers[:500]
    for thr in (1.0, 0.0):
        k = K.BlockKernel(g, thr)
        got = k(reference.incident_energy[:500], x).voxel_hist
        assert np.array_equal(got, _histogram_per_voxel(x, k.t32))
        assert got.sum() > 0


def test_one_blas_thread_limits_blas_and_restores_it() -> None:
    from threadpoolctl import threadpool_info

    def blas() -> dict[str, int]:
        return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas()
    assert before  # numpy's BLAS is seen
    with K.one_blas_thread():
        assert set(blas().values()) == {1}
    assert blas() == before
