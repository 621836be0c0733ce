"""``simcompress demo``: the summary it prints is read from the files the stages wrote."""

from __future__ import annotations

import json
from pathlib import Path

from simcompress.cli import main
from simcompress.cli.demo import _summary
from simcompress.workflows.demo import reference_matches as _reference_matches


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_summary_reads_stage_outputs(tmp_path: Path, capsys, monkeypatch) -> None:
    from rich.console import Console

    import simcompress.cli.demo as demo_mod

    monkeypatch.setattr(demo_mod, "console", Console(width=300))  # no wrapping of the table
    checks = [{"candidate": "teacher", "passed": True}, {"candidate": "teacher", "passed": False},
              {"candidate": "combined", "passed": True}, {"candidate": "combined", "passed": True}]
    cands = {n: {"multivariate": {"fpd": {"value": 0.002, "floor": 0.001}}, "classifier": {"high": {"auc": 0.71}}}
             for n in ("teacher", "combined")}
    _write(tmp_path / "report" / "metrics.json", {"candidates": cands, "checks": checks})
    _write(tmp_path / "compressed-combined" / "report.json", {
        "original": {"params": 1000}, "compressed": {"params": 250},
        "ratios": {"storage": 5.5, "throughput": 1.8},
        "pipeline": {"steps": [{"method": "svd", "rolled_back": False}, {"method": "qat", "rolled_back": True}]},
    })
    samples = {"teacher": tmp_path / "t.root", "combined": tmp_path / "c.root"}
    _summary(tmp_path, samples, {"combined": tmp_path / "compressed-combined"}, {"combined": 0},
             tmp_path / "report", tmp_path / "fw", [], 12.0)
    out = capsys.readouterr().out
    assert "1000→250" in out and "5.50x" in out and "x1.80" in out
    assert "1/2" in out and "2/2" in out and "0.71" in out
    assert "svd -qat" in out  # qat was rolled back
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["models"]["combined"]["checks_passed"] == 2
    assert summary["models"]["teacher"]["checks"] == 2


def test_reference_reuse_needs_matching_provenance(tmp_path: Path) -> None:
    ref = tmp_path / "ref.root"
    assert not _reference_matches(ref, 100, 1, "ds1-photons")
    assert main(["simulate", "--geometry", "ds1-photons", "--events", "100", "--seed", "1", "--out", str(ref)]) == 0
    assert _reference_matches(ref, 100, 1, "ds1-photons")
    assert not _reference_matches(ref, 100, 2, "ds1-photons")  # other seed: simulated again
    assert not _reference_matches(ref, 200, 1, "ds1-photons")
    ref.write_bytes(b"garbage")  # a corrupt file is replaced, never reused
    assert not _reference_matches(ref, 100, 1, "ds1-photons")


def test_demo_help_lists_the_stages() -> None:
    assert main(["demo", "--help"]) == 0
