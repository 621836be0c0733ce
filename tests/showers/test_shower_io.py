"""Shower files: ROOT (dense, sparse) and CaloChallenge HDF5 round trips, multi-file reading, atomic writes."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import uproot

from simcompress.errors import ShowerFileError
from simcompress.showers.data import ShowerSet
from simcompress.showers.geometry import Geometry
from simcompress.showers.io import (
    DENSE_MAX_VOXELS,
    content_hash,
    open_showers,
    write_showers,
)


def _assert_same(a: ShowerSet, b: ShowerSet) -> None:
    assert a.showers.dtype == b.showers.dtype == np.float32
    np.testing.assert_array_equal(a.showers, b.showers)  # bit-identical float32 (NaN-free)
    np.testing.assert_array_equal(a.incident_energy, b.incident_energy)
    assert a.showers.tobytes() == b.showers.tobytes()


@pytest.mark.parametrize(
    ("fixture", "suffix", "layout", "expected_layout"),
    [
        ("ds1_small", ".root", "auto", "dense"),
        ("ds1_small", ".root", "sparse", "sparse"),
        ("ds1_small", ".h5", "auto", "dense"),
        ("ds2_small", ".root", "auto", "sparse"),
        ("ds2_small", ".root", "dense", "dense"),
        ("ds2_small", ".hdf5", "auto", "dense"),
    ],
)
def test_round_trip_bit_identical(request, tmp_path, fixture, suffix, layout, expected_layout) -> None:
    s: ShowerSet = request.getfixturevalue(fixture)
    path = write_showers(tmp_path / f"out{suffix}", s, layout=layout, metadata={"note": "round trip", "shard": 3})
    r = open_showers(path)
    assert r.layout == expected_layout
    assert r.n_events == len(s)
    assert r.geometry == s.geometry and r.geometry.fingerprint == s.geometry.fingerprint
    back = r.read()
    _assert_same(back, s)
    np.testing.assert_array_equal(r.incident_energy(), s.incident_energy)
    # metadata: everything the data carried plus ours, unchanged through JSON
    for key, value in s.metadata.items():
        assert r.metadata[key] == json.loads(json.dumps(value))
    assert r.metadata["note"] == "round trip" and r.metadata["shard"] == 3
    assert r.metadata["n_events"] == len(s) and r.metadata["layout"] == expected_layout
    assert r.metadata["content_hash"] == content_hash(s)
    assert r.metadata["geometry"] == s.geometry.to_dict()
    assert r.metadata["incident_energy_range_mev"] == [float(s.incident_energy.min()), float(s.incident_energy.max())]
    assert {"numpy", "uproot", "python"} <= set(r.metadata["software"])
    assert back.metadata["content_hash"] == r.metadata["content_hash"]
    assert r.verify()


def test_layout_auto_threshold() -> None:
    assert Geometry.from_name("ds1-pions").n_voxels <= DENSE_MAX_VOXELS < Geometry.from_name("ds2").n_voxels


def test_root_file_structure_is_a_ttree_with_zstd(tmp_path, ds1_small, ds2_small) -> None:
    dense = write_showers(tmp_path / "d.root", ds1_small)
    sparse = write_showers(tmp_path / "s.root", ds2_small)
    with uproot.open(dense) as f:
        assert f.classnames() == {"showers;1": "TTree", "provenance;1": "TObjString"}
        t = f["showers"]
        assert t.typenames() == {"incident_energy": "float", "voxels": "float[368]"}
        assert f.file.fCompress == 501  # ZSTD (algorithm 5), level 1
        assert json.loads(str(f["provenance"]))["layout"] == "dense"
    with uproot.open(sparse) as f:
        t = f["showers"]
        assert t.typenames() == {"incident_energy": "float", "nhit": "int32_t", "hit_idx": "uint16_t[]", "hit_e": "float[]"}
        nhit = t["nhit"].array(library="np")
        np.testing.assert_array_equal(nhit, np.count_nonzero(ds2_small.showers, axis=1))


def test_streamed_chunks_and_rebatching(tmp_path, ds1_small) -> None:
    # many tiny chunks are re-batched into few large baskets; content identical
    path = write_showers(tmp_path / "s.root", ds1_small.iter_chunks(7))
    with uproot.open(path) as f:
        assert f["showers"]["voxels"].num_baskets == 1
    _assert_same(open_showers(path).read(), ds1_small)


def test_multi_file_glob_dir_and_chunked_iteration(tmp_path, ds1_small) -> None:
    parts = [ds1_small[0:100], ds1_small[100:200], ds1_small[200:300]]
    for i, part in enumerate(parts):
        write_showers(tmp_path / "shards" / f"shard_{i:05d}.root", part)
    write_showers(tmp_path / "shards" / "extra.h5", ds1_small[0:10])
    (tmp_path / "shards" / "notes.txt").write_text("not a shower file")
    r = open_showers(str(tmp_path / "shards" / "shard_*.root"))
    assert r.n_events == 300 and len(r.files) == 3
    chunks = list(r.iterate(step_size=70))
    assert [len(c) for c in chunks] == [70, 70, 70, 70, 20]  # chunks span file boundaries
    _assert_same(ShowerSet.concatenate(chunks), ds1_small)
    assert [len(c) for c in r.iterate(step_size=70, stop=150)] == [70, 70, 10]
    _assert_same(r.read(stop=120), ds1_small[:120])
    # a folder: every shower file in it, ROOT and HDF5 mixed, sorted by name
    rd = open_showers(tmp_path / "shards")
    assert rd.n_events == 310 and rd.formats == ["hdf5", "root"]
    # an explicit list
    rl = open_showers([tmp_path / "shards" / "shard_00002.root", tmp_path / "shards" / "shard_00000.root"])
    _assert_same(rl.read(), ShowerSet.concatenate([parts[2], parts[0]]))


def test_branch_selection_reads_only_named_columns(tmp_path, ds2_small) -> None:
    path = write_showers(tmp_path / "s.root", ds2_small)
    r = open_showers(path)
    batches = list(r.iterate_branches(["nhit", "hit_e"], step_size=1000))
    assert set(batches[0]) == {"nhit", "hit_e"}
    assert batches[0]["hit_e"].sum() == pytest.approx(float(ds2_small.showers.sum()), rel=1e-5)
    with pytest.raises(ShowerFileError, match="missing branch 'voxels'"):
        list(r.iterate_branches(["voxels"]))


def test_plain_calochallenge_hdf5_without_our_attributes(tmp_path, ds1_small) -> None:
    path = tmp_path / "dataset_1_photons_1.hdf5"
    with h5py.File(path, "w") as f:  # exactly what CaloChallenge files hold
        f.create_dataset("incident_energies", data=ds1_small.incident_energy.reshape(-1, 1), compression="gzip")
        f.create_dataset("showers", data=ds1_small.showers, compression="gzip")
    r = open_showers(path)
    assert r.geometry.name == "ds1-photons" and r.metadata == {}
    _assert_same(r.read(), ds1_small)
    # and a file we write is a valid CaloChallenge file: the two keys, the shapes, float32 MeV
    ours = write_showers(tmp_path / "ours.h5", ds1_small)
    with h5py.File(ours, "r") as f:
        assert set(f.keys()) == {"incident_energies", "showers"}
        assert f["incident_energies"].shape == (300, 1) and f["showers"].shape == (300, 368)
        np.testing.assert_array_equal(f["showers"][:], ds1_small.showers)


def test_geometry_passed_explicitly(tmp_path, ds1_small) -> None:
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["incident_energies"] = ds1_small.incident_energy  # (N,) also accepted
        f["showers"] = ds1_small.showers
    r = open_showers(path, geometry="ds1-photons")
    assert r.geometry.name == "ds1-photons"
    _assert_same(r.read(), ds1_small)


def test_interrupted_write_leaves_nothing(tmp_path, ds1_small) -> None:
    def chunks():
        yield ds1_small[:100]
        raise RuntimeError("worker killed")

    target = tmp_path / "out.root"
    with pytest.raises(RuntimeError, match="worker killed"):
        write_showers(target, chunks())
    assert list(tmp_path.iterdir()) == []
    # invalid data in a later chunk: one-line error, no file, no temporary left behind
    bad = ShowerSet(ds1_small.incident_energy[100:200], ds1_small.showers[100:200].copy(), ds1_small.geometry)
    bad.showers[5, 7] = np.nan  # a copy: the session fixture stays intact
    with pytest.raises(ShowerFileError, match=r"out\.h5 \(data to write\): NaN or infinite voxel energies"):
        write_showers(tmp_path / "out.h5", [ds1_small[:100], bad])
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic_replace(tmp_path, ds1_small) -> None:
    target = tmp_path / "out.root"
    write_showers(target, ds1_small[:50])
    write_showers(target, ds1_small[:80])
    assert open_showers(target).n_events == 80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.root"]


def test_sparse_layout_above_65536_voxels_uses_uint32_indices(tmp_path) -> None:
    from simcompress.showers.geometry import Layer

    geo = Geometry("fine", (Layer(0, tuple(float(x) for x in range(701)), 100, (0.0, 1.0)),))
    assert geo.n_voxels == 70_000
    rng = np.random.default_rng(0)
    vox = np.where(rng.random((6, geo.n_voxels)) < 0.01, rng.exponential(1.0, (6, geo.n_voxels)), 0.0)
    vox[:, -1] = 2.5  # the last voxel index needs more than 16 bits
    s = ShowerSet(np.full(6, 1000.0), vox, geo, {"origin": "random"})
    path = write_showers(tmp_path / "fine.root", s)
    with uproot.open(path) as f:
        assert f["showers"].typenames()["hit_idx"] == "uint32_t[]"
    r = open_showers(path)
    assert r.layout == "sparse" and r.geometry == geo
    _assert_same(r.read(), s)


def test_docstring_examples_run() -> None:
    import doctest

    from simcompress.showers import energies, io, reference

    for module in (energies, reference, io):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_step_size_in_events_or_bytes_and_default_memory_bound(tmp_path, ds1_small) -> None:
    r = open_showers(write_showers(tmp_path / "s.root", ds1_small))
    assert r.events_per_step("1 MB") == 1_000_000 // (4 * 369)
    assert r.events_per_step("2 MiB") == 2 * 1024**2 // (4 * 369)
    assert r.events_per_step(None) == 100_000
    assert [len(c) for c in r.iterate(step_size="0.2 MB")] == [135, 135, 30]
    assert sum(len(c) for c in r) == 300
    big = open_showers(write_showers(tmp_path / "ds3.root", ShowerSet(
        np.ones(2), np.zeros((2, 40500)), Geometry.from_name("ds3"))))
    assert big.events_per_step(None) == (256 << 20) // (4 * 40501)  # 256 MB of dense voxels, not 100k events
    with pytest.raises(Exception, match="expected a number of events or a size"):
        r.events_per_step("lots")


def test_rntuple_files_are_read_too(tmp_path, ds1_small, ds2_small) -> None:
    import awkward as ak

    dense = tmp_path / "dense_rntuple.root"
    with uproot.recreate(dense) as f:  # uproot >= 5.7 dict assignment writes an RNTuple
        f["showers"] = {"incident_energy": ds1_small.incident_energy, "voxels": ds1_small.showers}
    with uproot.open(dense) as f:
        assert f.classnames()["showers;1"] == "ROOT::RNTuple"
    r = open_showers(dense)
    assert r.geometry.name == "ds1-photons" and r.layout == "dense"
    _assert_same(r.read(), ds1_small)
    sparse = tmp_path / "sparse_rntuple.root"
    rows, cols = np.nonzero(ds2_small.showers)
    counts = np.bincount(rows, minlength=len(ds2_small))
    with uproot.recreate(sparse) as f:
        f["showers"] = {
            "incident_energy": ds2_small.incident_energy,
            "hit_idx": ak.unflatten(cols.astype(np.uint16), counts),
            "hit_e": ak.unflatten(ds2_small.showers[rows, cols], counts),
        }
    _assert_same(open_showers(sparse, geometry="ds2").read(), ds2_small)
