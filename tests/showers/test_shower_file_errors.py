"""Every bad input gives a one-line ShowerFileError naming the file (issue 2, "Bad input")."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import uproot

from simcompress.errors import ShowerFileError, UnknownNameError
from simcompress.showers.io import open_showers, write_showers


def _one_line(err: pytest.ExceptionInfo, path) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg


def _raw_root(path, voxels: np.ndarray, energies: np.ndarray | None = None, **extra) -> None:
    """A ROOT file in our dense layout but written straight with uproot (bypassing our checks)."""
    n = len(voxels)
    e = np.full(n, 1000.0, np.float32) if energies is None else energies
    with uproot.recreate(path) as f:
        t = f.mktree("showers", {"incident_energy": np.float32, "voxels": ("float32", (voxels.shape[1],))})
        if n:
            t.extend({"incident_energy": e, "voxels": voxels})
        for k, v in extra.items():
            f[k] = v


def test_missing_file(tmp_path) -> None:
    p = tmp_path / "nope.root"
    with pytest.raises(ShowerFileError, match="file not found") as err:
        open_showers(p)
    _one_line(err, p)


def test_glob_matching_nothing(tmp_path) -> None:
    with pytest.raises(ShowerFileError, match="no files match"):
        open_showers(str(tmp_path / "shard_*.root"))


def test_not_a_root_or_hdf5_file(tmp_path) -> None:
    p = tmp_path / "text.root"
    p.write_text("incident_energy,voxels\n1,2\n")
    with pytest.raises(ShowerFileError, match="not a ROOT or HDF5 file") as err:
        open_showers(p)
    _one_line(err, p)


def test_empty_file(tmp_path) -> None:
    p = tmp_path / "empty.h5"
    p.touch()
    with pytest.raises(ShowerFileError, match=r"empty file \(0 bytes\)") as err:
        open_showers(p)
    _one_line(err, p)


def test_file_with_no_events(tmp_path) -> None:
    p = tmp_path / "none.root"
    _raw_root(p, np.zeros((0, 368), np.float32))
    with pytest.raises(ShowerFileError, match="holds no events") as err:
        open_showers(p)
    _one_line(err, p)
    with pytest.raises(ShowerFileError, match="nothing to write"):
        write_showers(tmp_path / "w.root", [])


@pytest.mark.parametrize("suffix", [".root", ".h5"])
def test_truncated_file(tmp_path, ds1_small, suffix) -> None:
    good = write_showers(tmp_path / f"good{suffix}", ds1_small)
    p = tmp_path / f"cut{suffix}"
    data = good.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShowerFileError, match="truncated") as err:
        open_showers(p).read()
    _one_line(err, p)


def test_corrupt_baskets_are_reported_at_read(tmp_path, ds1_small) -> None:
    good = write_showers(tmp_path / "good.root", ds1_small)
    data = bytearray(good.read_bytes())
    mid = len(data) // 3  # inside the compressed voxel basket; the header and directory stay intact
    data[mid : mid + 64] = b"\x00" * 64
    p = tmp_path / "corrupt.root"
    p.write_bytes(bytes(data))
    with pytest.raises(ShowerFileError) as err:
        open_showers(p).read()
    _one_line(err, p)


def test_missing_tree(tmp_path) -> None:
    p = tmp_path / "events.root"
    with uproot.recreate(p) as f:
        f.mktree("events", {"x": np.float32}).extend({"x": np.ones(3, np.float32)})
        f.mktree("runs", {"y": np.float32}).extend({"y": np.ones(1, np.float32)})
    with pytest.raises(
        ShowerFileError, match=r"no TTree 'showers' \(TTrees/RNTuples in file: events \(TTree\), runs \(TTree\)\); pass the tree's name as tree= \(--tree\)"
    ) as err:
        open_showers(p)
    _one_line(err, p)
    with pytest.raises(ShowerFileError, match=r"no TTree 'evts' \(TTrees/RNTuples in file: events"):
        open_showers(p, tree="evts")
    # the only tree, or the named one, is used: here it lacks an energy branch, and the message says which option to pass
    with pytest.raises(ShowerFileError, match=r"TTree 'events' has no branch 'incident_energy' .*has: x\); pass the incident-energy branch as energy_branch= \(--energy-branch\)"):
        open_showers(p, tree="events")


def test_missing_branch(tmp_path) -> None:
    p = tmp_path / "nobranch.root"
    with uproot.recreate(p) as f:
        f.mktree("showers", {"incident_energy": np.float32}).extend({"incident_energy": np.ones(3, np.float32)})
    with pytest.raises(ShowerFileError, match="no shower branches; need 'voxels'") as err:
        open_showers(p)
    _one_line(err, p)
    p2 = tmp_path / "noenergy.root"
    with uproot.recreate(p2) as f:
        f.mktree("showers", {"voxels": ("float32", (368,))}).extend({"voxels": np.ones((3, 368), np.float32)})
    with pytest.raises(ShowerFileError, match="no branch 'incident_energy'"):
        open_showers(p2)


def test_missing_hdf5_dataset(tmp_path) -> None:
    p = tmp_path / "partial.h5"
    with h5py.File(p, "w") as f:
        f["showers"] = np.ones((3, 368), np.float32)
    with pytest.raises(ShowerFileError, match="missing dataset 'incident_energies'") as err:
        open_showers(p)
    _one_line(err, p)


def test_voxel_count_does_not_match_geometry(tmp_path, ds1_small) -> None:
    p = write_showers(tmp_path / "ds1.root", ds1_small)
    with pytest.raises(ShowerFileError, match="368 voxels per event but geometry 'ds1-pions' has 533") as err:
        open_showers(p, geometry="ds1-pions")
    _one_line(err, p)
    h = tmp_path / "odd.h5"
    with h5py.File(h, "w") as f:
        f["incident_energies"] = np.ones((2, 1), np.float32)
        f["showers"] = np.ones((2, 100), np.float32)
    with pytest.raises(ShowerFileError, match="cannot infer the geometry from 100 voxels"):
        open_showers(h)
    with pytest.raises(ShowerFileError, match="100 voxels per event but geometry 'ds1-photons' has 368"):
        open_showers(h, geometry="ds1-photons")
    with pytest.raises(ShowerFileError, match="1 incident energies but 2 showers"):
        with h5py.File(h, "w") as f:
            f["incident_energies"] = np.ones((1, 1), np.float32)
            f["showers"] = np.ones((2, 368), np.float32)
        open_showers(h)


def test_files_with_different_binnings_cannot_be_mixed(tmp_path, ds1_small, ds2_small) -> None:
    a = write_showers(tmp_path / "a.root", ds1_small)
    b = write_showers(tmp_path / "b.root", ds2_small)
    with pytest.raises(ShowerFileError, match="b.root: 6480 voxels per event but geometry 'ds1-photons' has 368"):
        open_showers([a, b])


def test_sparse_hit_index_out_of_range(tmp_path, ds2_small) -> None:
    import awkward as ak

    p = tmp_path / "badidx.root"
    with uproot.recreate(p) as f:
        t = f.mktree(
            "showers",
            {"incident_energy": np.float32, "hit_idx": "var * uint16", "hit_e": "var * float32"},
            counter_name=lambda c: "nhit",
        )
        t.extend(
            {
                "incident_energy": np.ones(1, np.float32),
                "hit_idx": ak.Array([np.array([7000], np.uint16)]),
                "hit_e": ak.Array([np.array([1.0], np.float32)]),
            }
        )
        f["provenance"] = json.dumps({"geometry_name": "ds2", "n_voxels": 6480})
    with pytest.raises(ShowerFileError, match="hit index 7000 out of range for geometry 'ds2' with 6480 voxels") as err:
        open_showers(p).read()
    _one_line(err, p)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_energies(tmp_path, bad) -> None:
    vox = np.ones((5, 368), np.float32)
    vox[3, 10] = bad
    p = tmp_path / "nan.root"
    _raw_root(p, vox)
    r = open_showers(p)  # opening is cheap; values are checked while reading
    with pytest.raises(ShowerFileError, match="NaN or infinite voxel energies \\(first in event 3\\)") as err:
        r.read()
    _one_line(err, p)
    e = np.ones(5, np.float32)
    e[1] = np.nan
    p2 = tmp_path / "nan_e.root"
    _raw_root(p2, np.ones((5, 368), np.float32), energies=e)
    with pytest.raises(ShowerFileError, match="NaN or infinite incident energies"):
        open_showers(p2).read()
    with pytest.raises(ShowerFileError, match="incident energies must be finite"):
        open_showers(p2).incident_energy()


def test_negative_energies_beyond_tolerance(tmp_path) -> None:
    vox = np.ones((4, 368), np.float32)
    vox[2, 5] = -1e-4  # float noise: accepted
    p_ok = tmp_path / "noise.root"
    _raw_root(p_ok, vox)
    assert open_showers(p_ok).read().showers[2, 5] == np.float32(-1e-4)
    vox[1, 9] = -0.5
    p = tmp_path / "neg.root"
    _raw_root(p, vox)
    with pytest.raises(ShowerFileError, match=r"negative voxel energy -0.5 MeV in event 1 \(allowed down to -0.001 MeV\)") as err:
        open_showers(p).read()
    _one_line(err, p)


def test_unknown_geometry_name(tmp_path, ds1_small) -> None:
    p = write_showers(tmp_path / "ok.root", ds1_small)
    with pytest.raises(UnknownNameError, match=r"unknown geometry 'ds4'; did you mean 'ds3'\? known: calogan, ds1-photons"):
        open_showers(p, geometry="ds4")
    p2 = tmp_path / "foreign.root"
    _raw_root(p2, np.ones((2, 368), np.float32), provenance=json.dumps({"geometry_name": "atlas-fcal"}))
    with pytest.raises(ShowerFileError, match="foreign.root: unknown geometry 'atlas-fcal'") as err:
        open_showers(p2)
    _one_line(err, p2)


def test_unknown_suffix_when_writing(tmp_path, ds1_small) -> None:
    with pytest.raises(ShowerFileError, match="cannot tell the file format from suffix '.csv'"):
        write_showers(tmp_path / "out.csv", ds1_small)
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_wrong_voxel_count(tmp_path, ds1_small) -> None:
    with pytest.raises(ShowerFileError, match="368 voxels per event but geometry 'ds2' has 6480"):
        write_showers(tmp_path / "out.root", ds1_small, geometry="ds2")
    assert list(tmp_path.iterdir()) == []


def test_sparse_file_without_provenance_needs_a_geometry(tmp_path, ds2_small) -> None:
    import awkward as ak

    p = tmp_path / "bare_sparse.root"
    rows, cols = np.nonzero(ds2_small.showers)
    counts = np.bincount(rows, minlength=len(ds2_small))
    with uproot.recreate(p) as f:
        t = f.mktree(
            "showers",
            {"incident_energy": np.float32, "hit_idx": "var * uint16", "hit_e": "var * float32"},
            counter_name=lambda c: "nhit",
        )
        t.extend(
            {
                "incident_energy": ds2_small.incident_energy,
                "hit_idx": ak.unflatten(cols.astype(np.uint16), counts),
                "hit_e": ak.unflatten(ds2_small.showers[rows, cols], counts),
            }
        )
    with pytest.raises(ShowerFileError, match="sparse file without geometry provenance; pass geometry=") as err:
        open_showers(p)
    _one_line(err, p)
    np.testing.assert_array_equal(open_showers(p, geometry="ds2").read().showers, ds2_small.showers)


def test_output_path_that_is_a_folder_or_unwritable(tmp_path, ds1_small) -> None:
    (tmp_path / "out.root").mkdir()
    with pytest.raises(ShowerFileError, match="out.root: is a folder"):
        write_showers(tmp_path / "out.root", ds1_small)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ShowerFileError, match="cannot create the output folder"):
        write_showers(tmp_path / "file" / "sub" / "out.root", ds1_small)


def test_writer_rejects_chunks_with_different_binnings(tmp_path, ds1_small) -> None:
    from simcompress.showers.data import ShowerSet
    from simcompress.showers.geometry import Geometry, Layer

    g = ds1_small.geometry
    other = Geometry("shuffled", tuple(Layer(l.id + 100, l.r_edges_mm, l.n_alpha, l.depth_x0) for l in g.layers), g.material)
    assert other.n_voxels == g.n_voxels and not other.same_binning(g)
    second = ShowerSet(ds1_small.incident_energy[:10], ds1_small.showers[:10], other)
    with pytest.raises(ShowerFileError, match="chunks with different binnings \\('ds1-photons' and 'shuffled'\\)"):
        write_showers(tmp_path / "mixed.root", [ds1_small[:10], second])
    assert list(tmp_path.iterdir()) == []
