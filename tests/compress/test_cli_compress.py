"""``simcompress compress`` end to end on a tiny random GAN (exit codes 0, 1, 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from simcompress.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "compress"


@pytest.fixture(scope="module")
def tiny_gan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import simcompress.generators as gens
    from simcompress.showers.geometry import Geometry

    torch.manual_seed(0)
    gen = gens.build_generator({
        "kind": "gan", "latent_dim": 8, "geometry": Geometry.from_name("ds1-photons").to_dict(),
        "energy_range_mev": [256.0, 4194304.0],
        "architecture": {"hidden": [32, 64], "negative_slope": 0.2, "batchnorm": False, "critic_hidden": [16]},
    })
    out = tmp_path_factory.mktemp("gan") / "tiny-gan"
    gens.save_generator(gen, out)
    return out


def test_cli_compress_writes_bundle_and_report(tiny_gan: Path, tmp_path: Path) -> None:
    from simcompress.generators import load_generator

    out = tmp_path / "c"
    rc = main(["compress", "--model", str(tiny_gan), "--recipe", str(RECIPES / "int8-ptq.yaml"), "--out", str(out),
               "--no-gate", "--report-samples", "64", "--calibration-events", "128", "--no-onnx",
               "--deploy-batch", "256", "--measure-seconds", "0.01"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["ratios"]["storage"] > 3.0  # 8-bit weights, float32 biases and scales
    assert rep["compressed"]["bundle_bytes"] < rep["original"]["bundle_bytes"]  # int8 codes on disk
    assert (out / "report.md").read_text().startswith("# Compression report")
    assert "<table>" in (out / "report.html").read_text()
    gen = load_generator(out)
    showers = gen.sample(torch.full((4,), 1e4), generator=torch.Generator().manual_seed(0))
    assert showers.shape == (4, 368) and torch.isfinite(showers).all()


def test_cli_compress_bad_recipe_exits_2(tiny_gan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {method: prune}\n")
    rc = main(["compress", "--model", str(tiny_gan), "--recipe", str(bad), "--out", str(tmp_path / "o"), "--no-gate"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown compression method 'prune'" in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "o").exists()


def test_cli_compress_needs_reference_for_gate(tiny_gan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["compress", "--model", str(tiny_gan), "--recipe", str(RECIPES / "int8-ptq.yaml"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "--reference" in capsys.readouterr().err


def test_cli_compress_failed_gate_exits_1_keeps_rejected_student(tiny_gan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's wiring of a failing gate (the physics gate itself is tested in tests/validation)."""
    import simcompress.validation.gate as vgate
    from simcompress.compress import GateResult

    seen: dict[str, object] = {}
    calls: list[int] = []

    def fake_gate(reference: object, spec: object, n_events: int, seed: int) -> object:
        seen.update(reference=reference, spec=spec, n_events=n_events)
        def gate(model: object) -> GateResult:
            calls.append(1)
            return GateResult(len(calls) == 1, "w1(e_total)=9 > 3", {"checks": []})  # baseline passes, step fails

        return gate

    monkeypatch.setattr(vgate, "make_model_gate", fake_gate)
    ref = tmp_path / "ref.root"
    from simcompress.showers.io import write_showers
    from simcompress.showers.reference import simulate

    write_showers(ref, simulate("ds1-photons", 50, seed=3, progress=False))
    out = tmp_path / "c"
    rc = main(["compress", "--model", str(tiny_gan), "--recipe", str(RECIPES / "int8-ptq.yaml"), "--out", str(out),
               "--reference", str(ref), "--gate-spec", "loose", "--n-events", "250", "--report-samples", "64", "--no-onnx",
               "--deploy-batch", "256", "--measure-seconds", "0.01"])
    assert rc == 1
    assert seen == {"reference": ref, "spec": "loose", "n_events": 250}
    rep = json.loads((out / "report.json").read_text())
    assert rep["pipeline"]["passed"] is False and rep["pipeline"]["stopped_at"] == 1
    assert rep["pipeline"]["steps"][0]["gate"]["summary"] == "w1(e_total)=9 > 3"
    assert rep["fidelity"]["original_gate_passed"] is True and len(calls) == 2
    assert not (out / "weights.safetensors").exists()
    # the rejected student and its report stay, marked as rejected
    assert rep["status"] == "rejected" and rep["rejected"]["student_bundle"] == "rejected-student"
    assert (out / "REJECTED").is_file() and "REJECTED" in (out / "report.md").read_text().splitlines()[0]
    from simcompress.generators import load_generator

    student = load_generator(out / "rejected-student")
    assert json.loads((out / "rejected-student" / "config.json").read_text())["compression"]["steps"][0]["method"] == "ptq"
    assert torch.isfinite(student.sample(torch.full((3,), 1e4), generator=torch.Generator().manual_seed(0))).all()
