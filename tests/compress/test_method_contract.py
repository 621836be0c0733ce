"""Contract of every registered compression method (parametrised over the registry).

Each method: the input model is never mutated; the output runs with the same output shape;
layer records are filled; the config round-trips through YAML; save/load gives bit-identical
outputs; the config has a repr. A method added to the registry without an example config
here fails ``test_every_method_has_an_example``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import yaml
from compress_toys import make_mlp
from torch import nn

from simcompress.compress import compress, config_from_dict, list_methods
from simcompress.compress.bundle import load_compressed, save_compressed

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES: dict[str, dict[str, Any]] = {
    "ptq": {"weights": {"bits": 6}, "activations": {"bits": 8}},
    "qat": {"steps": 3, "lr": 1e-3},
    "mixed_precision": {"avg_bits": 5.0, "candidate_bits": [4, 8]},
    "magnitude_prune": {"sparsity": 0.6, "scope": "global"},
    "gradual_prune": {"initial_sparsity": 0.3, "final_sparsity": 0.6, "steps": 6, "update_every": 3, "recovery_steps": 2},
    "structured_prune": {"amount": 0.5},
    "svd": {"rank": 3},
    "tensor_train": {"max_rank": 2},
    "tucker": {"rank_ratio": 0.5, "only_if_smaller": False},
    "lora": {"rank": 2, "steps": 3, "merge": False},
    "lowrank_quant": {"svd": {"rank": 3}, "weights": {"bits": 4}},
    "fixed_point": {},
    "qat_fixed_point": {},
}
CONV = {"tucker"}
# teacher-student methods build a new generator from a ShowerGenerator teacher (tested in tests/distill)
NEEDS_GENERATOR = {"distill_flow_iaf", "distill_mlp", "distill_gan"}


class _Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv1d(2, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.c2 = nn.Conv1d(6, 4, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(self.act(self.c1(x)))


def _setup(method: str) -> tuple[nn.Module, torch.Tensor, Any]:
    if method in CONV:
        return _Conv().eval(), torch.randn(5, 2, 9, generator=torch.Generator().manual_seed(1)), _Conv
    return make_mlp(), torch.randn(64, 8, generator=torch.Generator().manual_seed(1)), lambda: make_mlp(seed=99)


def _snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_every_method_has_an_example() -> None:
    missing = set(list_methods()) - set(EXAMPLES) - NEEDS_GENERATOR
    assert not missing, f"add an example config for {sorted(missing)} to tests/compress/test_method_contract.py"


@pytest.mark.parametrize("method", sorted(set(list_methods()) - NEEDS_GENERATOR))
def test_method_contract(method: str, tmp_path: Any) -> None:
    torch.manual_seed(0)
    model, x, rebuild = _setup(method)
    before_state = _snapshot(model)
    before_modules = [(n, type(m)) for n, m in model.named_modules()]
    before_out = model(x).detach()
    teacher = copy.deepcopy(model)

    def trainer(m: nn.Module, steps: int, lr: float) -> nn.Module:
        params = [p for p in m.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), teacher(x).detach()).backward()
            opt.step()
        return m

    cfg = config_from_dict({"method": method, **EXAMPLES[method]}, source="example")
    res = compress(model, cfg, calibration=[x], trainer=trainer)

    # input never mutated: same modules, same tensors, same outputs, not parametrized
    assert [(n, type(m)) for n, m in model.named_modules()] == before_modules
    after_state = _snapshot(model)
    assert after_state.keys() == before_state.keys()
    assert all(torch.equal(after_state[k], before_state[k]) for k in before_state)
    assert torch.equal(model(x), before_out)
    assert res.model is not model

    # output runs with the same shape; the records are filled
    res.model.eval()
    out = res.model(x).detach()
    assert out.shape == before_out.shape and torch.isfinite(out).all()
    assert res.layers, "a method must record what it did per layer"
    for r in res.layers:
        assert r.name and r.params_before > 0 and r.bits_before > 0 and r.bits_after > 0
    assert res.seconds > 0
    assert res.report()["method"] == method

    # config round trip through YAML, and a readable repr
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())), source="roundtrip")
    assert again == cfg
    assert repr(cfg).startswith(type(cfg).__name__ + "(")

    # save/load: bit-identical outputs
    save_compressed(res.model, {"toy": True}, [cfg.to_dict()], res.report(), tmp_path / "bundle")
    loaded = load_compressed(tmp_path / "bundle", builder=lambda _cfg: rebuild().eval())
    assert torch.equal(loaded(x), out)
