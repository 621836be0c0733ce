"""Runs in the real-ROOT interpreter (``.venv-root``, CERN's ``ROOT`` wheel), never in the main venv.

``python _root_tool.py TASKS.json`` executes each task and writes its outputs next to the
inputs; tests/showers/test_root_crosscheck.py prepares the inputs and checks the outputs.
Task kinds:

* ``snapshot_rvec``: ``RDataFrame(n).Define(...).Snapshot`` of ``float incident_energy`` and a
  ``ROOT::VecOps::RVec<float> voxels`` column (the most common way ROOT users store arrays);
* ``vector_tree``: ``TTree::Branch`` with a ``std::vector<float>`` (tree ``events``, ``E0``, ``cells``);
* ``flat_cells``: one ``Double_t`` branch per cell, ``cell_0 .. cell_N`` and ``TotalEnergy``
  (CaloGAN's Geant4 ``fancy_tree``);
* ``c_arrays``: a fixed-size ``vox[N]/F`` C array (tree ``fixed``) and a variable-size
  ``vox[nv]/F`` with its counter (tree ``var``);
* ``per_layer``: one fixed-size C-array branch per layer, ``layer_<i>[w]/F``;
* ``read``: read a simcompress file (dense or sparse) with ``RDataFrame``/``TFile`` and dump
  incident energies, dense voxels and the provenance string.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")  # the wheel warns that it is an alpha distribution

import numpy as np
import ROOT

ROOT.gROOT.SetBatch(True)

CPP = r"""
#include <string>
#include <vector>
#include "TFile.h"
#include "TTree.h"
#include "ROOT/RVec.hxx"

namespace sct {
const float* E = nullptr;
const float* V = nullptr;
long NV = 0;
void set(const float* e, const float* v, long nv) { E = e; V = v; NV = nv; }
float e_of(ULong64_t i) { return E[i]; }
ROOT::RVec<float> v_of(ULong64_t i) { return ROOT::RVec<float>(V + i * NV, V + (i + 1) * NV); }

void vector_tree(const char* path, long n) {
  TFile f(path, "RECREATE");
  TTree t("events", "showers in a std::vector");
  float e0 = 0;
  std::vector<float> cells;
  t.Branch("E0", &e0, "E0/F");
  t.Branch("cells", &cells);
  for (long i = 0; i < n; ++i) {
    e0 = E[i];
    cells.assign(V + i * NV, V + (i + 1) * NV);
    t.Fill();
  }
  t.Write();
}

void flat_cells(const char* path, long n) {
  TFile f(path, "RECREATE");
  TTree t("fancy_tree", "one branch per cell");
  double total = 0;
  std::vector<double> cell(NV);
  t.Branch("TotalEnergy", &total, "TotalEnergy/D");
  for (long j = 0; j < NV; ++j) {
    std::string name = "cell_" + std::to_string(j);
    t.Branch(name.c_str(), &cell[j], (name + "/D").c_str());
  }
  for (long i = 0; i < n; ++i) {
    total = E[i];
    for (long j = 0; j < NV; ++j) cell[j] = V[i * NV + j];
    t.Fill();
  }
  t.Write();
}

void c_arrays(const char* path, long n) {
  TFile f(path, "RECREATE");
  std::vector<float> buf(NV);
  float e = 0;
  int nv = (int)NV;
  TTree fixed("fixed", "fixed-size C array");
  fixed.Branch("incident_energy", &e, "incident_energy/F");
  fixed.Branch("vox", buf.data(), ("vox[" + std::to_string(NV) + "]/F").c_str());
  TTree var("var", "variable-size C array with a counter");
  var.Branch("incident_energy", &e, "incident_energy/F");
  var.Branch("nv", &nv, "nv/I");
  var.Branch("vox", buf.data(), "vox[nv]/F");
  for (long i = 0; i < n; ++i) {
    e = E[i];
    for (long j = 0; j < NV; ++j) buf[j] = V[i * NV + j];
    fixed.Fill();
    var.Fill();
  }
  fixed.Write();
  var.Write();
}

void per_layer(const char* path, long n, const std::vector<int>& widths) {
  TFile f(path, "RECREATE");
  TTree t("layers", "one branch per layer");
  float e = 0;
  std::vector<std::vector<float>> bufs;
  for (int w : widths) bufs.emplace_back(w);
  t.Branch("incident_energy", &e, "incident_energy/F");
  for (size_t k = 0; k < widths.size(); ++k) {
    std::string name = "layer_" + std::to_string(k);
    t.Branch(name.c_str(), bufs[k].data(), (name + "[" + std::to_string(widths[k]) + "]/F").c_str());
  }
  for (long i = 0; i < n; ++i) {
    e = E[i];
    long off = 0;
    for (size_t k = 0; k < widths.size(); ++k)
      for (int j = 0; j < widths[k]; ++j) bufs[k][j] = V[i * NV + off++];
    t.Fill();
  }
  t.Write();
}
}  // namespace sct
"""


def _load(task: dict) -> tuple[np.ndarray, np.ndarray]:
    e = np.ascontiguousarray(np.load(task["energies"]), dtype=np.float32)
    v = np.ascontiguousarray(np.load(task["voxels"]), dtype=np.float32)
    ROOT.sct.set(e, v, int(v.shape[1]))
    return e, v


def _rvecs(col: object) -> np.ndarray:
    return np.array([np.asarray(x) for x in col])


def run(task: dict) -> dict:
    kind, out = task["kind"], task["out"]
    if kind == "read":
        path = task["path"]
        df = ROOT.RDataFrame("showers", path)
        if task["layout"] == "dense":
            cols = df.AsNumpy(["incident_energy", "voxels"])
            vox = _rvecs(cols["voxels"]).astype(np.float32)
        else:
            cols = df.AsNumpy(["incident_energy", "nhit", "hit_idx", "hit_e"])
            n = len(cols["incident_energy"])
            vox = np.zeros((n, int(task["n_voxels"])), np.float32)
            for i, (idx, e) in enumerate(zip(cols["hit_idx"], cols["hit_e"], strict=False)):
                vox[i, np.asarray(idx).astype(np.int64)] = np.asarray(e)
            assert (np.asarray(cols["nhit"]) == np.count_nonzero(vox, axis=1)).all()
        f = ROOT.TFile.Open(path)
        prov = str(f.Get("provenance").GetString().Data())
        types = {b.GetName(): b.GetLeaf(b.GetName()).GetTypeName() if b.GetLeaf(b.GetName()) else b.GetClassName()
                 for b in f.Get("showers").GetListOfBranches()}
        f.Close()
        np.save(out + ".energies.npy", np.asarray(cols["incident_energy"], np.float32))
        np.save(out + ".voxels.npy", vox)
        Path(out + ".provenance.txt").write_text(prov)
        return {"kind": kind, "events": len(vox), "branch_types": types}
    e, _v = _load(task)
    n = len(e)
    if kind == "snapshot_rvec":
        df = (ROOT.RDataFrame(n).Define("incident_energy", "sct::e_of(rdfentry_)")
              .Define("voxels", "sct::v_of(rdfentry_)"))
        df.Snapshot("showers", out, ["incident_energy", "voxels"])
    elif kind == "vector_tree":
        ROOT.sct.vector_tree(out, n)
    elif kind == "flat_cells":
        ROOT.sct.flat_cells(out, n)
    elif kind == "c_arrays":
        ROOT.sct.c_arrays(out, n)
    elif kind == "per_layer":
        widths = ROOT.std.vector("int")()
        for w in task["widths"]:
            widths.push_back(int(w))
        ROOT.sct.per_layer(out, n, widths)
    else:
        raise SystemExit(f"unknown task kind {kind!r}")
    return {"kind": kind, "events": n}


def main() -> None:
    tasks = json.loads(Path(sys.argv[1]).read_text())
    ROOT.gInterpreter.Declare(CPP)
    results = {"root_version": str(ROOT.gROOT.GetVersion()), "tasks": [run(t) for t in tasks]}
    Path(sys.argv[2]).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
