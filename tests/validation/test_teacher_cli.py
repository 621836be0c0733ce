"""``simcompress validate --teacher T --candidate s=S [--reference R]``: both comparisons side by side."""

from __future__ import annotations

import json

import pytest
import yaml

from simcompress.cli import main
from simcompress.showers.io import write_showers
from simcompress.showers.reference import simulate
from simcompress.validation.checks import TEACHER_RULE
from simcompress.validation.distortions import scale_energy


@pytest.fixture(scope="module")
def files(tmp_path_factory, geometry, fast_spec):
    d = tmp_path_factory.mktemp("teacher-cli")
    paths = {}
    for name, seed in (("T", 11), ("S", 12), ("R", 13)):
        paths[name] = write_showers(d / f"{name}.root", simulate(geometry, 1200, seed=seed, progress=False))
    paths["bad"] = write_showers(d / "bad.root", scale_energy(simulate(geometry, 1200, seed=14, progress=False), 1.1))
    paths["high"] = write_showers(d / "high.root", simulate(geometry, 300, energies="fixed:65536", seed=15, progress=False))
    spec = d / "fast.yaml"
    spec.write_text(yaml.safe_dump(fast_spec.model_dump(mode="json")))
    paths["spec"] = spec
    return paths


def test_teacher_and_reference_side_by_side(files, tmp_path, capsys) -> None:
    out = tmp_path / "rep"
    rc = main(["validate", "--teacher", str(files["T"]), "--candidate", f"s={files['S']}", "--candidate",
               f"bad={files['bad']}", "--reference", str(files["R"]), "--gate", str(files["spec"]), "-o", str(out),
               "--no-html", "-q", "--no-cache"])
    assert rc == 1  # 'bad' (10 % energy scale) is damaged; 's' is another teacher-like sample
    text = " ".join(capsys.readouterr().out.split())  # the table wraps at the terminal's width
    assert "damage against the teacher" in text and "PASS" in text and "FAIL" in text and TEACHER_RULE in text
    d = json.loads((out / "comparison.json").read_text())
    assert d["rule"] == TEACHER_RULE
    assert d["candidates"]["s"]["damage"]["passed"] and not d["candidates"]["bad"]["passed"]
    assert "reference" in d["candidates"]["s"] and (out / "vs_reference" / "metrics.json").is_file()


def test_teacher_and_candidate_at_different_energies(files, tmp_path, capsys) -> None:
    out = tmp_path / "rep"
    rc = main(["validate", "--teacher", str(files["T"]), "--candidate", f"s={files['high']}", "--gate",
               str(files["spec"]), "-o", str(out), "-q", "--no-cache"])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(files["T"]) in err[0] and str(files["high"]) in err[0] and "incident energies" in err[0]
