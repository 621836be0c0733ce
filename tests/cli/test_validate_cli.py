"""``simcompress validate``: exit codes 0 (pass), 1 (gate failed), 2 (bad input); report files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import yaml

from simcompress.cli import main
from simcompress.showers.geometry import Geometry
from simcompress.showers.io import write_showers
from simcompress.showers.reference import simulate
from simcompress.validation.distortions import scale_energy
from simcompress.validation.gate import GateSpec


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("showers")
    g = Geometry.from_name("ds1-photons")
    ref = simulate(g, 2000, seed=10, progress=False)
    gen = simulate(g, 2000, seed=11, progress=False)
    spec = GateSpec(
        name="cli-fast",
        classifier={"inputs": ["high"], "epochs": 3, "n_hidden": 16, "max_events": 1000},
        fpd={"num_batches": 4, "num_points": 3},
        kpd={"num_batches": 4, "batch_size": 500},
        bootstrap={"n_boot": 3, "n_boot_hist": 30},
    )
    gate = d / "gate.yaml"
    gate.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    out = {
        "ref": write_showers(d / "ref.root", ref),
        "good": write_showers(d / "gen.root", gen),
        "shifted": write_showers(d / "shifted.h5", scale_energy(gen, 1.02)),
        "gate": gate,
    }
    pions = Geometry.from_name("ds1-pions")
    out["pions"] = write_showers(d / "pions.root", _flat(pions, 300))
    out["tiny"] = write_showers(d / "tiny.root", gen[:40])
    nan = d / "nan.h5"
    with h5py.File(nan, "w") as f:
        s = gen.showers[:300].copy()
        s[5, 7] = np.nan
        f["incident_energies"] = gen.incident_energy[:300].reshape(-1, 1)
        f["showers"] = s
    out["nan"] = nan
    return out


def _flat(g, n):
    from simcompress.showers.data import ShowerSet

    return ShowerSet(np.full(n, 1000.0), np.full((n, g.n_voxels), 1.0), g)


def test_pass_writes_report_and_exits_0(files, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    rc = main(["validate", "-r", str(files["ref"]), "-c", f"teacher={files['good']}", "--gate", str(files["gate"]),
               "--out", str(out), "--max-figures", "1", "-q"])
    assert rc == 0, capsys.readouterr().err
    d = json.loads((out / "metrics.json").read_text())
    assert d["passed"] and d["reference"]["n_events"] == 2000 and d["gate_spec"]["name"] == "cli-fast"
    assert "teacher: PASS" in (out / "report.html").read_text()
    assert "PASS" in capsys.readouterr().out


def test_failed_gate_exits_1_with_several_candidates(files, tmp_path, capsys) -> None:
    rc = main(["validate", "-r", str(files["ref"]), "-c", str(files["good"]), "-c", str(files["shifted"]),
               "--gate", str(files["gate"]), "--out", str(tmp_path / "r"), "--no-html", "-q"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "gate failed" in err and "shifted" in err
    d = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert d["candidates"]["gen"]["passed"] and not d["candidates"]["shifted"]["passed"]
    assert not (tmp_path / "r" / "report.html").exists()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("missing", "missing.root"),
        ("pions", "533 voxels per event but geometry 'ds1-photons' has 368"),
        ("nan", "NaN"),
        ("tiny", "40 candidate events"),
    ],
)
def test_bad_input_exits_2(files, tmp_path, capsys, key, message) -> None:
    cand = str(tmp_path / "missing.root") if key == "missing" else str(files[key])
    rc = main(["validate", "-r", str(files["ref"]), "-c", cand, "--gate", str(files["gate"]), "-q", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 3
    assert not (tmp_path / "o").exists()  # no partial output


def test_bad_gate_spec_exits_2(files, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("classifier: {max_acu: 0.6}\n")
    assert main(["validate", "-r", str(files["ref"]), "-c", str(files["good"]), "--gate", str(bad), "-q"]) == 2
    assert "max_acu" in capsys.readouterr().err
    assert main(["validate", "-r", str(files["ref"]), "-c", str(files["good"]), "--gate", "nope", "-q"]) == 2
    assert "did you mean" not in (err := capsys.readouterr().err) and "default, loose, strict" in err


def test_energy_mismatch_warns_and_per_bin_gate(files, tmp_path, capsys) -> None:
    from simcompress.showers.io import open_showers

    gen = open_showers(files["good"]).read()
    high = write_showers(tmp_path / "high.root", gen[gen.incident_energy > 3e4])
    args = ["validate", "-r", str(files["ref"]), "-c", str(high), "--gate", str(files["gate"]), "-q"]
    assert main(args) == 1  # inclusive histograms are distorted by the different E_inc spectrum
    err = capsys.readouterr().err
    assert "WARNING" in err and "incident-energy distribution differs" in err and "--per-energy-bin" in err
    assert main([*args, "--per-energy-bin"]) == 0


@pytest.mark.parametrize("flag", ["--no-progress", "-q", "--quiet"])
def test_progress_spelled_like_the_other_commands(files, flag, monkeypatch) -> None:
    """``--progress/--no-progress`` as everywhere; ``-q``/``--quiet`` stay as its aliases."""
    import simcompress.validation as vpkg

    seen: list[bool] = []
    real = vpkg.validate

    def spy(*args, **kwargs):
        seen.append(kwargs["progress"])
        return real(*args, **kwargs)

    monkeypatch.setattr(vpkg, "validate", spy)
    assert main(["validate", "-r", str(files["ref"]), "-c", str(files["good"]), "--gate", str(files["gate"]), flag]) == 0
    assert seen == [False]
