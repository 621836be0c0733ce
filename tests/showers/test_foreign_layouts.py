"""Files simcompress did not write (made here with uproot/h5py; real ROOT in test_root_crosscheck.py)."""

from __future__ import annotations

import json

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot

from simcompress.errors import ConfigError, ShowerFileError
from simcompress.showers.io import open_showers
from simcompress.showers.layout import ReadOptions, natural_key, select_names


@pytest.fixture
def small(ds1_small):
    return ds1_small[:50]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_natural_order_and_patterns() -> None:
    names = ["cell_10", "cell_2", "cell_1", "TotalEnergy", "cell_0"]
    assert sorted(names, key=natural_key)[:4] == ["TotalEnergy", "cell_0", "cell_1", "cell_2"]
    assert select_names("cell_*", names, "f") == ["cell_0", "cell_1", "cell_2", "cell_10"]
    assert select_names("cell_2,cell_1", names, "f") == ["cell_2", "cell_1"]
    with pytest.raises(ShowerFileError, match=r"f: no branch matches voxels pattern 'hit\*' \(has: TotalEnergy, cell_0"):
        select_names("hit*", names, "f")
    with pytest.raises(ConfigError, match="voxel_unit 'MEV' is not allowed; allowed: eV, keV, MeV, GeV, TeV"):
        ReadOptions.make(voxel_unit="MEV")


def test_jagged_vector_with_uproot_and_units(tmp_path, small) -> None:
    p = tmp_path / "jag.root"
    e_gev = (small.incident_energy / np.float32(1000)).astype(np.float32)
    vox_kev = small.showers.astype(np.float64) * 1000.0
    with uproot.recreate(p) as f:
        f.mktree("ev", {"E": np.float32, "cells": "var * float64"}, counter_name=lambda c: "n")
        f["ev"].extend({"E": e_gev, "cells": ak.Array(list(vox_kev))})
    r = open_showers(p, voxels="cells", energy_branch="E", energy_unit="GeV", voxel_unit="keV")
    s = r.read()
    assert r.layout == "vector"
    assert _same(s.incident_energy, (e_gev.astype(np.float64) * 1000).astype(np.float32))
    np.testing.assert_allclose(s.showers, small.showers, rtol=1e-6, atol=1e-9)


def test_jagged_vector_with_varying_length_is_refused(tmp_path, small) -> None:
    p = tmp_path / "ragged.root"
    rows = [list(r) for r in small.showers[:5]]
    rows[3] = rows[3][:-1]
    with uproot.recreate(p) as f:
        f.mktree("showers", {"incident_energy": np.float32, "voxels": "var * float32"})
        f["showers"].extend({"incident_energy": small.incident_energy[:5], "voxels": ak.Array(rows)})
    with pytest.raises(ShowerFileError, match="branch 'voxels' holds 367 values in an event where the first event has 368"):
        open_showers(p).read()


def test_rntuple_flat_cells(tmp_path, small) -> None:
    p = tmp_path / "rnt.root"
    data = {"TotalEnergy": small.incident_energy.astype(np.float64)}
    data.update({f"cell_{i}": small.showers[:, i] for i in range(small.showers.shape[1])})
    with uproot.recreate(p) as f:
        f["calo"] = data  # uproot >= 5.7: an RNTuple
    r = open_showers(p)
    assert r.layout == "cells" and r.source_layout["tree"] == "calo"
    assert _same(r.read().showers, small.showers)


def test_hdf5_per_layer_datasets_in_gev(tmp_path, small) -> None:
    """CaloGAN-style HDF5: ``energy`` (GeV) and one dataset per layer."""
    p = tmp_path / "layers.h5"
    geo = small.geometry
    with h5py.File(p, "w") as f:
        f["energy"] = (small.incident_energy / np.float32(1000)).reshape(-1, 1)
        for i, sl in enumerate(geo.layer_slices):
            f[f"layer_{i}"] = small.showers[:, sl]
    r = open_showers(p, energy_unit="GeV")
    assert r.source_layout["energy"] == "energy" and r.layout == "arrays"
    assert _same(r.read().showers, small.showers)
    with pytest.raises(ShowerFileError, match=r"no dataset 'E' for energy_branch= \(has: energy, layer_0"):
        open_showers(p, energy_branch="E")


def test_errors_name_what_the_file_holds(tmp_path, small) -> None:
    p = tmp_path / "odd.root"
    with uproot.recreate(p) as f:
        f.mktree("events", {"ebeam": np.float32, "hits": ("float32", (368,)), "pos": ("float32", (3,))}).extend(
            {"ebeam": small.incident_energy, "hits": small.showers, "pos": np.zeros((50, 3), np.float32)})
    with pytest.raises(ShowerFileError, match=r"TTree 'events' has no branch 'incident_energy' .*has: ebeam, hits, pos\); "
                       r"pass the incident-energy branch as energy_branch= \(--energy-branch\)"):
        open_showers(p)
    with pytest.raises(ShowerFileError, match=r"has no shower branches; .*\(has: ebeam, hits, pos\); name them with voxels= \(--voxels\)"):
        open_showers(p, energy_branch="ebeam")
    with pytest.raises(ShowerFileError, match="energy branch 'pos' holds 3 values per event; it must hold one"):
        open_showers(p, energy_branch="pos")
    with pytest.raises(ShowerFileError, match="cannot infer the geometry from 371 voxels per event .*voxels="):
        open_showers(p, energy_branch="ebeam", voxels="*")
    r = open_showers(p, energy_branch="ebeam", voxels="hits")
    assert _same(r.read().showers, small.showers) and _same(r.incident_energy(), small.incident_energy)


def test_read_options_attached_to_a_path(tmp_path, small) -> None:
    """``PATH;key=value`` reaches every reader (e.g. ``--energies file:...``, ``--data``, ``--reference``)."""
    from simcompress.showers.energies import parse_energy_spec
    from simcompress.showers.io import write_showers

    p = tmp_path / "user.root"
    with uproot.recreate(p) as f:
        f.mktree("events", {"ebeam": np.float32, "hits": ("float32", (368,))}).extend(
            {"ebeam": small.incident_energy / np.float32(1000), "hits": small.showers})
    ours = write_showers(tmp_path / "ours.root", small)
    r = open_showers([f"{p};energy_branch=ebeam;voxels=hits;energy-unit=GeV", ours])
    assert r.n_events == 100 and r.file_metadata[1]["n_events"] == 50
    both = r.read()
    assert _same(both.showers[:50], both.showers[50:])
    e = parse_energy_spec(f"file:{p};energy_branch=ebeam;voxels=hits;energy_unit=GeV").sample(5, np.random.default_rng(0))
    assert e.min() >= small.incident_energy.min() * 0.999
    with pytest.raises(ConfigError, match=r"'tre=events' is not a read option; expected PATH;key=value;\.\.\. with keys tree, energy_branch"):
        open_showers(f"{p};tre=events")


def test_cli_paths_with_read_options(tmp_path, small, capsys) -> None:
    """``validate`` / ``plot-layers`` / ``info`` take ``PATH;key=value`` (with or without NAME=)."""
    from simcompress.cli import main
    from simcompress.cli.validate import _parse_candidate
    from simcompress.showers.io import write_showers

    p = tmp_path / "user.root"
    with uproot.recreate(p) as f:
        f.mktree("events", {"ebeam": np.float32, "hits": ("float32", (368,))}).extend(
            {"ebeam": small.incident_energy / np.float32(1000), "hits": small.showers})
    spec = f"{p};energy_branch=ebeam;voxels=hits;energy_unit=GeV"
    assert _parse_candidate(spec, 0) == ("user", spec)
    assert _parse_candidate(f"mine={spec}", 0) == ("mine", spec)
    assert main(["info", "--json", spec]) == 0
    assert json.loads(capsys.readouterr().out)["source"]["energy"] == "ebeam"
    assert main(["plot-layers", spec, f"ours={write_showers(tmp_path / 'o.root', small)}", "-o", str(tmp_path / "i.png")]) == 0
    assert (tmp_path / "i.png").exists()
