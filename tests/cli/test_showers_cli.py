"""``simcompress simulate`` and ``simcompress info``: outputs and exit codes (0 ok, 2 bad input)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from simcompress.cli import main
from simcompress.showers.io import open_showers


def test_simulate_root_then_info(tmp_path, capsys) -> None:
    out = tmp_path / "ref.root"
    rc = main(["simulate", "--geometry", "ds1-photons", "--events", "500", "--seed", "1", "--out", str(out), "--no-progress"])
    assert rc == 0
    r = open_showers(out)
    assert r.n_events == 500 and r.geometry.name == "ds1-photons" and r.layout == "dense"
    assert r.metadata["seed"] == 1 and r.metadata["energies"] == "ds1"
    assert set(np.unique(r.incident_energy())) <= set(2.0 ** np.arange(8, 23))
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ds1-photons: 5 layers, 368 voxels" in text
    assert "events      500" in text
    assert "root (dense)" in text
    assert r.metadata["content_hash"] in text
    assert main(["info", "--json", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_events"] == 500 and summary["n_voxels"] == 368
    assert summary["incident_energy_mev"]["min"] >= 256 and summary["incident_energy_mev"]["max"] <= 2**22
    assert summary["provenance"]["generator"].endswith("gflash")


def test_simulate_hdf5_is_a_calochallenge_file(tmp_path) -> None:
    out = tmp_path / "ref.data"
    rc = main(["simulate", "-n", "200", "--seed", "2", "--out", str(out), "--format", "hdf5", "--no-progress",
               "--energies", "log-uniform:1e3,1e5"])
    assert rc == 0
    with h5py.File(out, "r") as f:
        assert f["incident_energies"].shape == (200, 1) and f["showers"].shape == (200, 368)
        e = f["incident_energies"][:, 0]
        assert e.min() >= 1e3 and e.max() <= 1e5


def test_simulate_is_reproducible_and_independent_of_chunk_size(tmp_path) -> None:
    a, b = tmp_path / "a.root", tmp_path / "b.h5"
    assert main(["simulate", "-n", "300", "--seed", "4", "--out", str(a), "--no-progress"]) == 0
    assert main(["simulate", "-n", "300", "--seed", "4", "--out", str(b), "--no-progress", "--chunk-size", "64"]) == 0
    assert open_showers(a).metadata["content_hash"] == open_showers(b).metadata["content_hash"]


def test_info_on_a_folder_of_shards(tmp_path, capsys) -> None:
    for i in range(2):
        assert main(["simulate", "-n", "50", "--seed", str(i), "--out", str(tmp_path / "shards" / f"shard_{i}.root"),
                     "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["info", "--json", str(tmp_path / "shards")]) == 0
    assert json.loads(capsys.readouterr().out)["n_events"] == 100


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--geometry", "ds9", "-n", "10"], "unknown geometry 'ds9'"),
        (["simulate", "-n", "0"], "--events must be >= 1"),
        (["simulate", "-n", "10", "--energies", "gauss:1,2"], "unknown kind 'gauss'"),
        (["simulate", "-n", "10", "--format", "csv"], "--format 'csv' is not allowed"),
        (["simulate", "-n", "10", "--seed", "-3"], "seed must be a non-negative integer"),
        (["simulate", "-n", "10", "--step-x0", "0"], "--step-x0"),
        (["simulate", "-n", "10", "--layout", "zigzag"], "layout 'zigzag' is not allowed"),
    ],
)
def test_simulate_bad_input_exits_2_without_output(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "out.root"
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_simulate_unknown_suffix_exits_2(tmp_path, capsys) -> None:
    assert main(["simulate", "-n", "10", "--out", str(tmp_path / "x.csv"), "--no-progress"]) == 2
    assert "cannot tell the file format" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_info_bad_files_exit_2(tmp_path, capsys) -> None:
    assert main(["info", str(tmp_path / "missing.root")]) == 2
    assert "missing.root: file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"hello world, not hdf5")
    assert main(["info", str(junk)]) == 2
    assert "junk.h5: not a ROOT or HDF5 file" in capsys.readouterr().err
    empty = tmp_path / "empty.root"
    empty.touch()
    assert main(["info", str(empty)]) == 2
    assert "empty file" in capsys.readouterr().err


def test_info_on_a_plain_calochallenge_file(tmp_path, capsys) -> None:
    p = tmp_path / "dataset_2_1.hdf5"
    with h5py.File(p, "w") as f:
        f["incident_energies"] = np.array([[1000.0], [2000.0]], np.float32)
        f["showers"] = np.ones((2, 6480), np.float32)
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "ds2: 45 layers, 6480 voxels" in out
    assert "plain CaloChallenge file" in out


def test_simulate_with_a_config_file(tmp_path, capsys) -> None:
    cfg = tmp_path / "gflash.yaml"
    cfg.write_text("sampling_term: 0.0\nstep_x0: 1.0\n")
    out = tmp_path / "ref.root"
    assert main(["simulate", "-n", "100", "--energies", "fixed:16384", "--config", str(cfg), "--out", str(out),
                 "--no-progress"]) == 0
    r = open_showers(out)
    assert r.metadata["config"]["sampling_term"] == 0.0 and r.metadata["config"]["step_x0"] == 1.0
    s = r.read()
    assert (s.total_energy / 16384).std() < 0.005  # no sampling term configured
    cfg.write_text("sampling_trem: 0.0\n")
    assert main(["simulate", "-n", "10", "--config", str(cfg), "--out", str(tmp_path / "x.root"), "--no-progress"]) == 2
    assert "unknown key 'sampling_trem'; did you mean 'sampling_term'" in capsys.readouterr().err
    assert not (tmp_path / "x.root").exists()


def test_convert_root_to_hdf5_and_back_keeps_content(tmp_path, capsys) -> None:
    src = tmp_path / "ref.root"
    assert main(["simulate", "-n", "120", "--seed", "7", "--out", str(src), "--no-progress"]) == 0
    h5 = tmp_path / "ref.h5"
    assert main(["convert", str(src), "--out", str(h5)]) == 0
    back = tmp_path / "back.root"
    assert main(["convert", str(h5), "--out", str(back), "--layout", "sparse"]) == 0
    a, b, c = open_showers(src), open_showers(h5), open_showers(back)
    assert a.metadata["content_hash"] == b.metadata["content_hash"] == c.metadata["content_hash"]
    assert c.layout == "sparse" and c.metadata["seed"] == 7
    assert c.metadata["converted_from"] == [str(h5)]
    np.testing.assert_array_equal(c.read().showers, a.read().showers)
    # merging two inputs, first N events only
    merged = tmp_path / "merged.h5"
    assert main(["convert", str(src), str(back), "--out", str(merged), "--stop", "200"]) == 0
    assert open_showers(merged).n_events == 200
    capsys.readouterr()
    assert main(["convert", str(src), "--out", str(src)]) == 2
    assert "the output is one of the inputs" in capsys.readouterr().err


def test_info_stats(tmp_path, capsys) -> None:
    src = tmp_path / "ref.root"
    assert main(["simulate", "-n", "300", "--energies", "fixed:65536", "--out", str(src), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["info", "--json", "--stats", str(src)]) == 0
    st = json.loads(capsys.readouterr().out)["statistics"]
    assert 0.97 < st["e_dep_over_e_inc_mean"] < 1.01
    assert 0.0 < st["e_dep_over_e_inc_std"] < 0.03  # 0.11/sqrt(65.5) = 1.4 %
    assert sum(st["layer_energy_fraction"].values()) == pytest.approx(1.0)
    assert st["layer_energy_fraction"]["2"] > 0.5  # the ds1 middle layer takes most of a 65 GeV photon
    assert main(["info", "--stats", str(src)]) == 0
    assert "E_dep/E_inc" in capsys.readouterr().out
