"""Distillation recipes through ``simcompress compress`` end to end.

The compressed bundle of a distillation pipeline must be rebuilt as the *student* (not the
teacher) by ``load_generator`` in a fresh process, and sample bit-identically to the student
the pipeline held in memory; fixed-point students must load without importing the
compression methods first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from simcompress.cli import main
from simcompress.generators import build_generator, load_generator, save_generator
from simcompress.showers.geometry import Geometry

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = {
    "name": "toy",
    "layers": [
        {"id": 0, "r_edges_mm": [0, 1, 2, 4], "n_alpha": 1},
        {"id": 1, "r_edges_mm": [0, 2, 4], "n_alpha": 2},
    ],
}
TRAIN = {"steps": 8, "batch_size": 32, "lr": 1.0e-3, "pool_size": 128, "seed": 0, "checkpoint_every": 4}
SPEED = {"speed_batch_sizes": [1, 16], "speed_min_seconds": 0.01}
ENERGIES = [1024.0, 4096.0, 16384.0, 65536.0]

# recipe name -> (teacher kind, steps, student kind)
RECIPES: dict[str, tuple[str, list[dict[str, Any]], str]] = {
    "flow-to-mlp": ("flow", [{
        "method": "distill_mlp", "firmware": True, "student": {"width": 16, "depth": 2, "batchnorm": False},
        "physics": {"total_energy": 1.0, "layer_energies": 1.0}, "training": TRAIN, **SPEED,
    }], "mlp"),
    "flow-to-iaf": ("flow", [{
        "method": "distill_flow_iaf", "student": {"hidden": 16, "depth": 1, "init": "identity"},
        "training": TRAIN, **SPEED,
    }], "iaf"),
    "gan-to-small-gan": ("gan", [{
        "method": "distill_gan", "firmware": True, "max_param_fraction": 0.5, "student": {"width": 16, "depth": 2},
        "adversarial_steps": 0, "training": TRAIN, **SPEED,
    }], "gan"),
    "distill-then-fixed-point": ("flow", [
        {"method": "distill_mlp", "firmware": True, "student": {"width": 16, "depth": 2, "batchnorm": False},
         "training": TRAIN, **SPEED},
        {"method": "fixed_point", "network": "network", "input": {"width": 12, "headroom": 0}, "weight": {"width": 10},
         "bias": {"width": 14}, "result": {"width": 18, "headroom": 1}, "activation": {"width": 18, "headroom": 1}},
    ], "mlp"),
}

# sampled in a fresh interpreter that imports nothing but the generators' loader
LOAD_AND_SAMPLE = f"""
import sys, numpy as np, torch
from simcompress.generators import load_generator
assert "simcompress.compress.methods" not in sys.modules
g = load_generator(sys.argv[1])
e = torch.tensor({ENERGIES!r})
with torch.no_grad():
    y = g.sample(e, generator=torch.Generator().manual_seed(11))
np.save(sys.argv[2], y.numpy())
print(type(g).__name__, g.config_dict()["kind"])
"""


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    geo = Geometry.from_dict(TOY).to_dict()
    root = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(0)
    flow = build_generator({
        "kind": "flow", "geometry": geo, "energy_range_mev": [1e3, 1e5],
        "architecture": {"n_blocks": 2, "hidden": [16], "n_groups": 3},
    })
    with torch.no_grad():  # a non-trivial teacher
        for b in flow.network.blocks:
            b.made.out.weight.normal_(0, 0.1)
            b.made.out.bias.normal_(0, 0.3)
    gan = build_generator({
        "kind": "gan", "latent_dim": 8, "geometry": geo, "energy_range_mev": [1e3, 1e5],
        "architecture": {"hidden": [32, 32], "negative_slope": 0.2, "batchnorm": False, "critic_hidden": [16]},
    })
    return {"flow": save_generator(flow, root / "flow"), "gan": save_generator(gan, root / "gan")}


def _capture_saved_model(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record the in-memory model the CLI hands to save_compressed."""
    from simcompress.compress import bundle

    seen: dict[str, Any] = {}
    real = bundle.save_compressed

    def spy(model, base_config, steps, report, out_dir, *a, **kw):
        seen.update(model=model, base_config=base_config, steps=steps)
        return real(model, base_config, steps, report, out_dir, *a, **kw)

    monkeypatch.setattr(bundle, "save_compressed", spy)
    return seen


@pytest.mark.parametrize("name", list(RECIPES))
def test_distill_recipe_cli_bundle_loads_as_student_in_fresh_process(
    name: str, teachers: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher_kind, steps, student_kind = RECIPES[name]
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump({"name": name, "steps": steps}))
    seen = _capture_saved_model(monkeypatch)
    out = tmp_path / "out"
    rc = main(["compress", "--model", str(teachers[teacher_kind]), "--recipe", str(recipe), "--out", str(out),
               "--no-gate", "--no-onnx", "--report-samples", "64", "--calibration-events", "64"])
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    student = seen["model"]
    # the bundle is built on the student's architecture, not the teacher's
    assert config["kind"] == student_kind == student.config_dict()["kind"]
    assert config["architecture"] == student.config_dict()["architecture"]
    teacher = load_generator(teachers[teacher_kind]).config_dict()
    assert (config["kind"], config["architecture"]) != (teacher["kind"], teacher["architecture"])
    assert [s["method"] for s in config["compression"]["steps"]] == [s["method"] for s in steps]
    assert (out / "precision.json").exists() == (name == "distill-then-fixed-point")

    with torch.no_grad():
        expected = student.eval().sample(torch.tensor(ENERGIES), generator=torch.Generator().manual_seed(11)).numpy()
    npy = tmp_path / "fresh.npy"
    proc = subprocess.run([sys.executable, "-c", LOAD_AND_SAMPLE, str(out), str(npy)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == student_kind
    got = np.load(npy)
    assert got.shape == (len(ENERGIES), Geometry.from_dict(TOY).n_voxels)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, expected)  # bit-identical


def test_distilled_bundle_generates_through_cli(teachers: dict[str, Path], tmp_path: Path) -> None:
    import uproot

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "fp", "steps": RECIPES["distill-then-fixed-point"][1]}))
    out = tmp_path / "student"
    assert main(["compress", "--model", str(teachers["flow"]), "--recipe", str(recipe), "--out", str(out),
                 "--no-gate", "--no-onnx", "--report-samples", "64", "--calibration-events", "64"]) == 0
    showers = tmp_path / "s.root"
    assert main(["generate", "--model", str(out), "--events", "200", "--energies", "log-uniform:1e3,1e5",
                 "--out", str(showers), "--no-progress"]) == 0
    with uproot.open(showers) as f:
        tree = f[f.keys(cycle=False)[0]]
        assert tree.num_entries == 200


def _outcome(index: int, model: torch.nn.Module, extra: dict[str, Any], rolled_back: bool = False):
    from simcompress.compress import config_from_dict
    from simcompress.compress.base import CompressionResult
    from simcompress.compress.pipeline import StepOutcome

    cfg = config_from_dict({"method": "magnitude_prune", "sparsity": 0.5}, source="test")
    return StepOutcome(index, cfg, CompressionResult(model, cfg, extra=extra), None, None, rolled_back=rolled_back)


def test_base_and_steps_follows_the_last_kept_replacement() -> None:
    from simcompress.compress.pipeline import PipelineResult
    from simcompress.errors import BundleError

    class WithConfig(torch.nn.Linear):
        def config_dict(self) -> dict[str, Any]:
            return {"kind": "own"}

    m = torch.nn.Linear(2, 2)
    res = PipelineResult(m, [
        _outcome(1, m, {}),
        _outcome(2, m, {"replaces_model": True, "base_config": {"kind": "student"}}),
        _outcome(3, m, {}),
        _outcome(4, m, {"replaces_model": True, "base_config": {"kind": "discarded"}}, rolled_back=True),
    ])
    base, steps = res.base_and_steps({"kind": "teacher"})
    assert base == {"kind": "student"} and len(steps) == 2  # the replacing step and the one after it
    # a replacing step without base_config: the new model's own config, else a clear error
    assert PipelineResult(m, [_outcome(1, WithConfig(2, 2), {"replaces_model": True})]).base_and_steps({})[0] == {"kind": "own"}
    with pytest.raises(BundleError, match="replaced the model but left no base_config"):
        PipelineResult(m, [_outcome(1, m, {"replaces_model": True})]).base_and_steps({})
