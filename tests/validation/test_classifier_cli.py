"""``simcompress validate --classifier gate|calochallenge``: the preset reaches the classifier and its settings the report."""

from __future__ import annotations

import json

import pytest
import yaml

from simcompress.cli import main
from simcompress.showers.io import write_showers
from simcompress.showers.reference import simulate


@pytest.fixture(scope="module")
def files(tmp_path_factory, geometry, fast_spec):
    d = tmp_path_factory.mktemp("classifier-cli")
    paths = {n: write_showers(d / f"{n}.root", simulate(geometry, 1000, seed=s, progress=False))
             for n, s in (("R", 21), ("C", 22))}
    spec = fast_spec.model_dump(mode="json")
    # the spec file asks for the calochallenge preset (narrowed); --classifier gate replaces its training settings
    training = {"n_hidden", "n_layers", "dropout", "epochs", "batch_size", "lr", "calibrate", "standardize", "threads", "max_events",
                "precision", "patience"}
    kept = {k: v for k, v in spec["classifier"].items() if k not in training}  # the dump holds the gate preset's values
    spec["classifier"] = {**kept, "preset": "calochallenge", "n_hidden": 8, "epochs": 2}
    paths["spec"] = d / "cc.yaml"
    paths["spec"].write_text(yaml.safe_dump(spec))
    return paths


def test_classifier_option_selects_the_preset_and_the_report_shows_its_settings(files, tmp_path) -> None:
    out = tmp_path / "rep"
    main(["validate", "-r", str(files["R"]), "-c", f"c={files['C']}", "--gate", str(files["spec"]),
          "--classifier", "gate", "-o", str(out), "--no-html", "-q", "--no-cache"])
    d = json.loads((out / "metrics.json").read_text())
    assert d["gate_spec"]["classifier"]["preset"] == "gate" and d["gate_spec"]["classifier"]["n_hidden"] == 256
    s = d["candidates"]["c"]["classifier"]["high"]["settings"]
    assert s["preset"] == "gate" and s["label"].startswith("cheap preset for the compression gate")
    assert s["architecture"].endswith("2 x [Linear(256) -> LeakyReLU] -> Linear(1), BCEWithLogits")
    assert s["epochs"] == 20 and 1 <= s["selected_epoch"] <= s["epochs_run"] <= 20
    assert s["calibration"] == "isotonic regression on the test split" and s["seed"] == d["gate_spec"]["seed"]
    assert (s["n_train"], s["n_test"], s["n_heldout"]) == (1200, 400, 400)


def test_unknown_classifier_preset_exits_2_with_one_line(files, tmp_path, capsys) -> None:
    out = tmp_path / "rep"
    rc = main(["validate", "-r", str(files["R"]), "-c", str(files["C"]), "--classifier", "caloflow", "-o", str(out),
               "-q", "--no-cache"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert len(err) == 1 and "'caloflow'" in err[0] and "allowed: calochallenge, gate" in err[0]


def test_spec_preset_reaches_the_classifier_and_the_html_report(files, tmp_path) -> None:
    out = tmp_path / "rep"
    main(["validate", "-r", str(files["R"]), "-c", f"c={files['C']}", "--gate", str(files["spec"]), "-o", str(out),
          "-q", "--no-cache"])
    s = json.loads((out / "metrics.json").read_text())["candidates"]["c"]["classifier"]["high"]["settings"]
    assert s["preset"] == "calochallenge (modified: epochs=2, n_hidden=8)" and s["input_scaling"].startswith("none")
    html = (out / "report.html").read_text()
    assert "Classifier settings" in html and "c (high)" in html and "floor (high)" in html
