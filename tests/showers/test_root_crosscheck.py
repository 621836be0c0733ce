"""Cross-check with real ROOT (6.40, CERN's ``ROOT`` wheel in ``.venv-root``, made by ``make root-env``).

ROOT writes files the way ROOT users write them (``RDataFrame.Snapshot`` of an ``RVec<float>``,
``TTree::Branch`` with ``std::vector<float>``, flat per-cell ``Double_t`` branches, fixed and
variable C arrays, one branch per layer) and simcompress must read them bit-identically; ROOT's
``RDataFrame`` reads simcompress's dense and sparse files and must find every value and the
provenance string. All ROOT work runs in one subprocess per session.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot

from simcompress.showers.io import open_showers, write_showers
from simcompress.showers.reference import simulate

N = 200
TOOL = Path(__file__).with_name("_root_tool.py")


def root_python() -> Path | None:
    env = os.environ.get("SIMCOMPRESS_ROOT_PYTHON")
    if env:
        return Path(env)
    p = Path(__file__).resolve().parents[2] / ".venv-root" / "bin" / "python"
    return p if p.exists() else None


@pytest.fixture(scope="session")
def root_side(tmp_path_factory: pytest.TempPathFactory, ds1_small, ds2_small) -> dict[str, Any]:
    py = root_python()
    if py is None:
        pytest.skip("no real-ROOT interpreter (.venv-root): run `make root-env` (pip install ROOT, ~250 MB)")
    wd = tmp_path_factory.mktemp("root_xcheck")
    s = ds1_small[:N]
    np.save(wd / "e.npy", s.incident_energy)
    np.save(wd / "v.npy", s.showers)
    e_gev = (s.incident_energy / np.float32(1000)).astype(np.float32)
    np.save(wd / "e_gev.npy", e_gev)
    # simcompress's own files, for ROOT to read
    write_showers(wd / "ours_dense.root", s, metadata={"note": "dense for ROOT"})
    write_showers(wd / "ours_sparse.root", s, layout="sparse", metadata={"note": "sparse for ROOT"})
    write_showers(wd / "ours_ds2.root", ds2_small)
    # CaloGAN's Geant4 layout: fancy_tree, TotalEnergy (GeV), cell_0 .. cell_506 (504 cells + 3 overflow)
    cg = simulate("calogan", 60, energies="log-uniform:1e3,1e5", seed=2, progress=False)
    overflow = np.random.default_rng(1).random((60, 3)).astype(np.float32)
    np.save(wd / "cg_e.npy", (cg.incident_energy / np.float32(1000)).astype(np.float32))
    np.save(wd / "cg_v.npy", np.concatenate([cg.showers, overflow], axis=1))
    widths = [layer.n_voxels for layer in s.geometry.layers]
    common = {"energies": str(wd / "e.npy"), "voxels": str(wd / "v.npy")}
    tasks = [
        {"kind": "snapshot_rvec", "out": str(wd / "rdf_rvec.root"), **common},
        {"kind": "vector_tree", "out": str(wd / "vector.root"), **common, "energies": str(wd / "e_gev.npy")},
        {"kind": "flat_cells", "out": str(wd / "cells.root"), **common},
        {"kind": "c_arrays", "out": str(wd / "carrays.root"), **common},
        {"kind": "flat_cells", "out": str(wd / "calogan_g4.root"), "energies": str(wd / "cg_e.npy"),
         "voxels": str(wd / "cg_v.npy")},
        {"kind": "per_layer", "out": str(wd / "layers.root"), "widths": widths, **common},
        {"kind": "read", "path": str(wd / "ours_dense.root"), "layout": "dense", "out": str(wd / "r_dense")},
        {"kind": "read", "path": str(wd / "ours_sparse.root"), "layout": "sparse", "n_voxels": 368,
         "out": str(wd / "r_sparse")},
        {"kind": "read", "path": str(wd / "ours_ds2.root"), "layout": "sparse", "n_voxels": 6480,
         "out": str(wd / "r_ds2")},
    ]
    (wd / "tasks.json").write_text(json.dumps(tasks))
    proc = subprocess.run([str(py), str(TOOL), str(wd / "tasks.json"), str(wd / "results.json")],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"ROOT side failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {"dir": wd, "results": json.loads((wd / "results.json").read_text()), "showers": s, "e_gev": e_gev,
            "ds2": ds2_small, "calogan": cg}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical float32 arrays (same shape, same bytes)."""
    return a.dtype == b.dtype == np.float32 and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_root_version(root_side) -> None:
    assert root_side["results"]["root_version"].startswith("6.")


def test_rdataframe_snapshot_rvec_is_read_bit_identically(root_side) -> None:
    p = root_side["dir"] / "rdf_rvec.root"
    br = uproot.open(p)["showers"]["voxels"]
    assert "RVec" in br.typename and type(br.interpretation).__name__ == "AsJagged"  # what ROOT 6.40 writes
    r = open_showers(p)  # no options: tree 'showers', 'incident_energy', 'voxels' as ROOT wrote them
    assert (r.geometry.name, r.n_events, r.layout) == ("ds1-photons", N, "vector")
    got = r.read()
    s = root_side["showers"]
    assert _same(got.incident_energy, s.incident_energy) and _same(got.showers, s.showers)
    # chunked reading across baskets gives the same
    chunks = list(r.iterate(step_size=37))
    assert _same(np.concatenate([c.showers for c in chunks]), s.showers)


def test_std_vector_branch_other_names_and_gev(root_side) -> None:
    p = root_side["dir"] / "vector.root"
    assert "vector<float>" in uproot.open(p)["events"]["cells"].typename
    r = open_showers(p, energy_branch="E0", voxels="cells", energy_unit="GeV")
    got = r.read()
    s = root_side["showers"]
    assert _same(got.showers, s.showers)
    want_e = (root_side["e_gev"].astype(np.float64) * 1000.0).astype(np.float32)
    assert _same(got.incident_energy, want_e)
    np.testing.assert_allclose(got.incident_energy, s.incident_energy, rtol=1e-6)
    assert r.source_layout["tree"] == "events" and r.source_layout["energy_unit"] == "GeV"


def test_flat_per_cell_double_branches(root_side) -> None:
    p = root_side["dir"] / "cells.root"
    t = uproot.open(p)["fancy_tree"]
    assert t["cell_0"].typename == "double" and len(t.keys()) == 369
    r = open_showers(p)  # TotalEnergy and cell_0 .. cell_367 found by name, in natural order
    assert r.layout == "cells" and r.source_layout["energy"] == "TotalEnergy"
    got = r.read()
    s = root_side["showers"]
    assert _same(got.showers, s.showers) and _same(got.incident_energy, s.incident_energy)
    # the same with an explicit pattern
    assert _same(open_showers(p, tree="fancy_tree", voxels="cell_*").read().showers, s.showers)


def test_calogan_geant4_layout_written_by_root(root_side) -> None:
    p = root_side["dir"] / "calogan_g4.root"
    assert len(uproot.open(p)["fancy_tree"].keys()) == 508
    r = open_showers(p, energy_unit="GeV")  # geometry from the 507 cells, 3 overflow cells dropped
    assert r.geometry.name == "calogan" and r.source_layout["overflow_values_dropped"] == 3
    cg = root_side["calogan"]
    got = r.read()
    assert _same(got.showers, cg.showers)
    np.testing.assert_allclose(got.incident_energy, cg.incident_energy, rtol=1e-6)


def test_fixed_and_variable_c_arrays(root_side) -> None:
    p = root_side["dir"] / "carrays.root"
    s = root_side["showers"]
    for tree in ("fixed", "var"):
        got = open_showers(p, tree=tree, voxels="vox").read()
        assert _same(got.showers, s.showers) and _same(got.incident_energy, s.incident_energy), tree


def test_one_branch_per_layer(root_side) -> None:
    p = root_side["dir"] / "layers.root"
    s = root_side["showers"]
    r = open_showers(p)  # layer_0 .. layer_4 found by name
    assert r.layout == "arrays"
    assert _same(r.read().showers, s.showers)
    # order given explicitly
    names = ",".join(f"layer_{i}" for i in range(s.geometry.n_layers))
    assert _same(open_showers(p, voxels=names).read().showers, s.showers)


def test_root_reads_our_dense_file(root_side) -> None:
    d = root_side["dir"]
    s = root_side["showers"]
    assert _same(np.load(d / "r_dense.energies.npy"), s.incident_energy)
    assert _same(np.load(d / "r_dense.voxels.npy"), s.showers)
    prov_root = (d / "r_dense.provenance.txt").read_text()
    r = open_showers(d / "ours_dense.root")
    assert json.loads(prov_root) == r.metadata and r.metadata["note"] == "dense for ROOT"
    assert prov_root == str(uproot.open(d / "ours_dense.root")["provenance"])
    types = next(t for t in root_side["results"]["tasks"] if t["kind"] == "read")["branch_types"]
    assert types["incident_energy"] == "Float_t"


def test_root_reads_our_sparse_files(root_side) -> None:
    d = root_side["dir"]
    s = root_side["showers"]
    assert _same(np.load(d / "r_sparse.energies.npy"), s.incident_energy)
    assert _same(np.load(d / "r_sparse.voxels.npy"), s.showers)
    assert json.loads((d / "r_sparse.provenance.txt").read_text()) == open_showers(d / "ours_sparse.root").metadata
    ds2 = root_side["ds2"]
    assert _same(np.load(d / "r_ds2.voxels.npy"), ds2.showers)
    assert _same(np.load(d / "r_ds2.energies.npy"), ds2.incident_energy)
    prov = json.loads((d / "r_ds2.provenance.txt").read_text())
    assert prov["layout"] == "sparse" and prov["content_hash"] == open_showers(d / "ours_ds2.root").metadata["content_hash"]


def test_cli_info_convert_validate_on_root_written_file(root_side, tmp_path, capsys) -> None:
    from simcompress.cli import main

    p = root_side["dir"] / "vector.root"
    # E0 is recognised as the energy, but 'cells' is no known voxel name: one line naming the option
    assert main(["info", str(p)]) == 2
    err = capsys.readouterr().err
    assert "has: E0, cells" in err and "--voxels" in err and len(err.strip().splitlines()) == 1
    assert main(["info", str(p), "--voxels", "cells", "--energy-unit", "GeV", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_events"] == N and info["geometry"] == "ds1-photons" and info["source"]["tree"] == "events"
    assert info["incident_energy_mev"]["max"] > 1000  # GeV converted
    assert main(["info", str(p), "--energy-unit", "furlong", "--voxels", "cells"]) == 2
    assert "energy_unit 'furlong' is not allowed; allowed: eV, keV, MeV, GeV, TeV" in capsys.readouterr().err
    out = tmp_path / "mine.root"
    assert main(["convert", str(p), "--voxels", "cells", "--energy-unit", "GeV", "-o", str(out), "--no-progress"]) == 0
    assert _same(open_showers(out).read().showers, root_side["showers"].showers)
    assert open_showers(out).metadata["converted_with"]["voxels"].startswith("cells (vector, 368 values)")
    # validate: the ROOT-written reference (needs the options) against our own file (opened with the defaults)
    rc = main(["validate", "--reference", str(root_side["dir"] / "cells.root"), "--candidate", f"ours={out}",
               "--tree", "fancy_tree", "--voxels", "cell_*", "--gate", "loose", "--no-html", "-q",
               "-o", str(tmp_path / "rep")])
    capsys.readouterr()
    assert rc in (0, 1)  # identical showers (the energies differ by GeV rounding only): the run itself must work
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["candidates"]["ours"]["n_events"] == N
