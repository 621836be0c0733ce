"""Pipelines: composition in any order, gates (stop / roll back), fine-tuning, recipes, error notes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from compress_toys import make_mlp
from torch import nn

from simcompress.compress import GateResult
from simcompress.compress.bundle import load_compressed, save_compressed
from simcompress.compress.pipeline import Pipeline, load_recipe
from simcompress.errors import ConfigError, UnsupportedLayerError

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "compress"
STEPS = {
    "prune": {"method": "magnitude_prune", "sparsity": 0.5},
    "quant": {"method": "ptq", "weights": {"bits": 8}},
    "svd": {"method": "svd", "rank": 6},
    "act": {"method": "ptq", "weights": None, "activations": {"bits": 8}},
}


ORDERS = list(itertools.permutations(["prune", "quant", "svd"])) + [
    ("act", "svd", "prune"), ("svd", "act", "quant"), ("prune", "quant", "act"), ("quant", "act", "svd")
]


@pytest.mark.parametrize("order", ORDERS)
def test_pipelines_compose_in_any_order(order: tuple[str, ...], x: torch.Tensor, tmp_path: Path) -> None:
    model = make_mlp()
    res = Pipeline([STEPS[s] for s in order]).run(model, calibration=x)
    out = res.model(x).detach()
    assert out.shape == (64, 4) and torch.isfinite(out).all()
    assert [s.config.method for s in res.steps] == [STEPS[s]["method"] for s in order]
    rel = float((out - model(x).detach()).norm() / model(x).detach().norm())
    assert rel < 1.0  # an approximation, not a broken model (a zero output would give 1.0)
    # the last step's effect is present in the final model
    last = order[-1]
    lin = res.model.get_submodule("2")
    if last == "svd":
        assert isinstance(lin, nn.Sequential)
    elif last == "prune":
        w = lin.weight if isinstance(lin, nn.Linear) else lin[1].weight
        assert float((w == 0).float().mean()) >= 0.5
    elif last == "act":
        assert hasattr(lin if isinstance(lin, nn.Linear) else lin[0], "input_quantizer")
    save_compressed(res.model, {}, [s.config.to_dict() for s in res.steps], None, tmp_path / "b")
    assert torch.equal(load_compressed(tmp_path / "b", builder=lambda _c: make_mlp(seed=7))(x), out)


def test_pipeline_never_mutates_input(x: torch.Tensor) -> None:
    model = make_mlp()
    ref = model(x).detach()
    Pipeline([STEPS["prune"], STEPS["quant"], STEPS["svd"]]).run(model, calibration=x)
    assert torch.equal(model(x), ref)
    assert not any(hasattr(m, "parametrizations") for m in model.modules())


class _CountingGate:
    def __init__(self, fail_at: set[int]) -> None:
        self.calls = 0
        self.fail_at = fail_at

    def __call__(self, model: nn.Module) -> GateResult:
        self.calls += 1
        ok = self.calls not in self.fail_at
        return GateResult(ok, "ok" if ok else "too far", {"call": self.calls})


def test_gate_failure_stops(x: torch.Tensor) -> None:
    gate = _CountingGate({2})
    res = Pipeline([STEPS["prune"], STEPS["svd"], STEPS["quant"]], gate=gate, on_failure="stop").run(make_mlp(), calibration=x)
    assert not res.passed and res.stopped_at == 2 and gate.calls == 2 and len(res.steps) == 2


def test_gate_failure_rolls_back(x: torch.Tensor) -> None:
    gate = _CountingGate({2})
    res = Pipeline([STEPS["prune"], STEPS["svd"], STEPS["quant"]], gate=gate, on_failure="rollback").run(make_mlp(), calibration=x)
    assert res.passed and gate.calls == 3
    assert [s.rolled_back for s in res.steps] == [False, True, False]
    assert isinstance(res.model.get_submodule("2"), nn.Linear)  # the SVD step was discarded
    assert [s.config.method for s in res.applied] == ["magnitude_prune", "ptq"]


def test_gate_at_last_gates_only_the_final_model(x: torch.Tensor, tmp_path: Path) -> None:
    """gate_at: last (a distil -> fixed-point chain): no gate on the intermediate model; the final one is gated,
    and a failure there stops with the final model as the rejected one."""
    steps = [STEPS["prune"], STEPS["svd"], STEPS["quant"]]
    gate = _CountingGate(set())
    res = Pipeline(steps, gate=gate, gate_at="last").run(make_mlp(), calibration=x)
    assert res.passed and gate.calls == 1 and [s.gate is None for s in res.steps] == [True, True, False]
    every = _CountingGate({1})  # fails its first call: an every-step pipeline stops at step 1, gate_at last at step 3
    assert Pipeline(steps, gate=every).run(make_mlp(), calibration=x).stopped_at == 1
    res = Pipeline(steps, gate=lambda m: GateResult(False, "too far", {}), gate_at="last").run(make_mlp(), calibration=x)
    assert not res.passed and res.stopped_at == 3 and len(res.steps) == 3
    assert hasattr(res.model.get_submodule("2")[0], "parametrizations")  # the final (quantized) model is the rejected one
    rec = tmp_path / "r.yaml"
    rec.write_text("name: r\ngate_at: last\nsteps:\n  - {method: magnitude_prune, sparsity: 0.5}\n")
    assert Pipeline.from_yaml(rec).gate_at == "last" and Pipeline.from_yaml(rec).describe()["gate_at"] == "last"
    rec.write_text("name: r\ngate_at: first\nsteps:\n  - {method: magnitude_prune, sparsity: 0.5}\n")
    with pytest.raises(ConfigError, match="gate_at"):
        load_recipe(rec)
    with pytest.raises(ConfigError, match="gate_at 'last' needs on_failure 'stop'"):
        Pipeline(steps, gate=gate, gate_at="last", on_failure="rollback")


def test_finetune_between_steps_and_trainer_for_methods(x: torch.Tensor) -> None:
    calls: list[tuple[int, float]] = []

    def finetune(model: nn.Module, steps: int, lr: float) -> nn.Module:
        calls.append((steps, lr))
        return model

    steps = [
        {"method": "magnitude_prune", "sparsity": 0.5, "finetune": {"steps": 7, "lr": 0.01}},
        {"method": "qat", "steps": 3, "lr": 0.002},
    ]
    Pipeline(steps, finetune=finetune).run(make_mlp(), calibration=x)
    assert calls == [(7, 0.01), (3, 0.002)]


def test_step_errors_carry_a_note_naming_the_step() -> None:
    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x) + x)

    pipe = Pipeline([STEPS["prune"], {"method": "structured_prune", "include": ["a"]}], source="my.yaml")
    with pytest.raises(UnsupportedLayerError) as info:
        pipe.run(Res())
    assert "while running step 2/2 'structured_prune' (my.yaml)" in info.value.__notes__


def test_finetune_requested_without_callable_is_a_clear_error(x: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match="no finetune callable"):
        Pipeline([{**STEPS["prune"], "finetune": {"steps": 2}}]).run(make_mlp())


@pytest.mark.parametrize("name", ["int8-ptq", "prune-gradual-80", "svd-energy", "combined"])
def test_shipped_recipes_load_and_run_on_a_toy_model(name: str, x: torch.Tensor) -> None:
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    assert recipe.name == name

    def finetune(model: nn.Module, steps: int, lr: float) -> nn.Module:
        return model  # the maths of each step is what is checked here, not training

    # shrink training lengths: same steps, 1/50th of the work
    pipe = Pipeline.from_yaml(RECIPES / f"{name}.yaml", finetune=finetune)
    res = pipe.run(make_mlp(widths=(8, 48, 48, 4)), calibration=x)
    assert res.passed and len(res.steps) == len(recipe.steps)


def test_bad_recipes_give_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {method: svdd, rank: 2}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: steps\[0\].method: unknown compression method 'svdd'; did you mean 'svd'"):
        load_recipe(bad)
    bad.write_text("steps:\n  - {method: svd, rnak: 2}\n")
    with pytest.raises(ConfigError, match=r"steps\[0\]: rnak: unknown key 'rnak'; did you mean 'rank'\?"):
        load_recipe(bad)
    bad.write_text("steps:\n  - {method: svd, rank: 2, energy: 0.9}\n")
    with pytest.raises(ConfigError, match="exactly one of rank, energy, max_rel_error"):
        load_recipe(bad)
    bad.write_text("stepz: []\nsteps: [{method: ptq}]\n")
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        load_recipe(bad)
    bad.write_text("steps:\n  - {method: ptq, weights: {bits: 1}}\n")
    with pytest.raises(ConfigError, match=r"weights.bits"):
        load_recipe(bad)
    bad.write_text("on_failure: retry\nsteps:\n  - {method: ptq}\n")
    with pytest.raises(ConfigError, match="on_failure"):
        load_recipe(bad)
