"""``simcompress.workflows.run_recipe`` from Python: what ``simcompress compress`` writes, in one call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from simcompress.workflows import RecipeResult, run_recipe

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "compress"
FAST = {"report_samples": 64, "calibration_events": 128, "onnx": False, "deploy_batch": 256, "measure_seconds": 0.01}


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


def test_run_recipe_then_write(tiny_gan: Path, tmp_path: Path) -> None:
    from simcompress.generators import load_generator

    torch.set_num_threads(1)
    res = run_recipe(tiny_gan, RECIPES / "int8-ptq.yaml", gate=False, **FAST)
    assert isinstance(res, RecipeResult) and res.passed and res.status == "accepted"
    out = tmp_path / "c"
    assert not out.exists()  # nothing written before write()
    assert res.write(out) == out
    names = sorted(p.name for p in out.iterdir())
    assert {"config.json", "weights.safetensors", "report.json", "report.md", "report.html"} <= set(names)
    assert "REJECTED" not in names and "rejected-student" not in names and not any(n.startswith(".") for n in names)
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "accepted" and rep["ratios"]["storage"] > 3.0
    assert rep["compressed"]["bundle_bytes"] < rep["original"]["bundle_bytes"]
    gen = load_generator(out)
    assert torch.isfinite(gen.sample(torch.full((4,), 1e4), generator=torch.Generator().manual_seed(0))).all()
    res.write(out)  # a second write replaces the folder with the same files
    assert sorted(p.name for p in out.iterdir()) == names


def test_run_recipe_rejected_writes_the_student_aside(tiny_gan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import simcompress.validation.gate as vgate
    from simcompress.compress import GateResult
    from simcompress.showers.io import write_showers
    from simcompress.showers.reference import simulate

    calls: list[int] = []

    def fake_gate(reference: object, spec: object, n_events: int, seed: int) -> object:
        def gate(model: object) -> GateResult:
            calls.append(1)
            return GateResult(len(calls) == 1, "w1(e_total)=9 > 3", {"checks": []})  # baseline passes, step fails

        return gate

    monkeypatch.setattr(vgate, "make_model_gate", fake_gate)
    ref = tmp_path / "ref.root"
    write_showers(ref, simulate("ds1-photons", 50, seed=3, progress=False))
    lines: list[str] = []
    res = run_recipe(str(tiny_gan), RECIPES / "int8-ptq.yaml", reference=ref, gate_spec="loose", n_events=250,
                     say=lines.append, **FAST)
    assert not res.passed and res.status == "rejected"
    assert any("uncompressed model: gate pass" in ln for ln in lines) and any("gate: FAIL" in ln for ln in lines)
    out = res.write(tmp_path / "c")
    assert (out / "REJECTED").is_file() and not (out / "weights.safetensors").exists()
    assert (out / "rejected-student" / "config.json").is_file()
    assert json.loads((out / "report.json").read_text())["status"] == "rejected"
