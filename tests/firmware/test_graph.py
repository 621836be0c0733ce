"""Fixed-point graph, integer emulation, refusals, hls4ml config generation, estimates and planner (no compiler)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from _fw_nets import TinyGen, calibration
from torch import nn

from simcompress.compress.fixed_point import FixedType, parse_fixed
from simcompress.errors import BundleError, ConfigError, UnsupportedLayerError
from simcompress.firmware.config import Budget, FirmwareConfig, LayerFirmware
from simcompress.firmware.estimate import _csd_digits, estimate, plan_reuse_factors, valid_reuse_factors
from simcompress.firmware.graph import build_graph, check_supported, clean_float_network
from simcompress.firmware.hls import hls_config


def _inputs(n: int = 500, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 4)) * 1.5, rng.uniform(-2, 2, size=(n, 1))]


def test_emulation_equals_quantized_torch_model(quantize: Any) -> None:
    """The integer emulation reproduces the torch fake-quant model exactly (float64 forward)."""
    res = quantize(weight={"width": 7}, result={"width": 12, "headroom": 1})
    graph = build_graph(res.model)
    assert [o.kind for o in graph.ops] == ["input", "input", "cat", "linear", "relu", "linear", "leaky_relu", "relu", "linear"]
    x = _inputs()
    y = graph.emulate(x)
    with torch.no_grad():
        yt = res.model.double()(*[torch.from_numpy(a) for a in x]).numpy()
    np.testing.assert_array_equal(y, yt)
    # outputs are integer codes of the output type
    codes = graph.emulate_int(x)
    t = graph.output_type
    assert codes.dtype == np.int64 and codes.min() >= t.int_min and codes.max() <= t.int_max


def test_emulation_handles_wrap_overflow(quantize: Any) -> None:
    """Narrow WRAP result types overflow on purpose; emulation still equals the torch model."""
    wrap = {"width": 6, "integer": 1, "rounding": "TRN", "overflow": "WRAP"}
    res = quantize(result=wrap, activation={"width": 6, "integer": 1, "rounding": "TRN", "overflow": "WRAP"})
    graph = build_graph(res.model)
    x = _inputs(seed=5)
    with torch.no_grad():
        yt = res.model.double()(*[torch.from_numpy(a) for a in x]).numpy()
    np.testing.assert_array_equal(graph.emulate(x), yt)


def test_clean_network_has_on_grid_weights_and_no_batchnorm(quantize: Any) -> None:
    res = quantize()
    graph = build_graph(res.model)
    clean = clean_float_network(graph, res.model.inner)
    names = [n.name for n in clean.graph.nodes if n.op == "call_module"]
    assert "bn1" not in names and names[0] == "fc1"
    for op in graph.linear_ops:
        w = clean.get_submodule(op.module).weight.detach().double().numpy()
        np.testing.assert_array_equal(w, np.ldexp(op.w_int.astype(np.float64), -op.w_t.frac))
    # the original quantized model still works (no shared-class parametrization damage)
    with torch.no_grad():
        res.model(*calibration(8))


def test_hls_config_carries_every_precision(quantize: Any) -> None:
    """Precision propagation quantizer record -> hls4ml config: nothing auto, nothing defaulted."""
    res = quantize(weight={"width": 6, "rounding": "RND_CONV"}, bias={"width": 10})
    graph = build_graph(res.model)
    rec = res.extra["precision"]
    cfg = FirmwareConfig(reuse_factor=2, strategy="Resource", layers={"out": LayerFirmware(reuse_factor=4, strategy="Latency")})
    hc = hls_config(graph, cfg)
    L = hc["LayerName"]
    assert set(L) == {"z", "c", "cat", "fc1", "act1", "fc2", "act2", "relu", "out"}
    for name in ("z", "c"):
        assert parse_fixed(L[name]["Precision"]["result"]) == FixedType.from_dict(rec["input"])
    for name in ("fc1", "fc2", "out"):
        p = L[name]["Precision"]
        assert parse_fixed(p["weight"]) == FixedType.from_dict(rec["layers"][name]["weight"])
        assert parse_fixed(p["bias"]) == FixedType.from_dict(rec["layers"][name]["bias"])
        assert parse_fixed(p["result"]) == FixedType.from_dict(rec["layers"][name]["result"])
        assert parse_fixed(p["accum"]).contains(parse_fixed(p["weight"]))  # exact accumulator
    assert parse_fixed(L["act2"]["Precision"]["param"]) == FixedType.from_dict(rec["layers"]["act2"]["param"])
    assert parse_fixed(L["act1"]["Precision"]["result"]).signed is False
    assert all("auto" not in str(v) for e in L.values() for v in e["Precision"].values())
    assert (L["fc1"]["ReuseFactor"], L["fc1"]["Strategy"]) == (2, "Resource")
    assert (L["out"]["ReuseFactor"], L["out"]["Strategy"]) == (4, "Latency")


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (nn.ConvTranspose1d(2, 2, 3), "ConvTranspose1d.*Upsample"),
        (nn.Softplus(), "Softplus.*ReLU"),
        (nn.SiLU(), "SiLU.*LeakyReLU"),
        (nn.GELU(), "GELU"),
        (nn.LayerNorm(8), "LayerNorm.*BatchNorm1d"),
        (nn.Tanh(), "Tanh.*lookup table.*postprocess"),
        (nn.Sigmoid(), "Sigmoid.*lookup table"),
        (nn.ELU(), "ELU.*lookup table"),
    ],
)
def test_unsupported_layers_refused_with_alternative(layer: nn.Module, match: str) -> None:
    net = nn.Sequential(nn.Linear(4, 8), layer)
    with pytest.raises(UnsupportedLayerError, match=f"layer '1' .*{match}"):
        check_supported(net)


def test_linear_view_conv_pattern_refused() -> None:
    class ProjectReshape(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 16)
            self.conv = nn.Conv1d(4, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.fc(x).view(-1, 4, 4))

    net = ProjectReshape()
    # the Conv1d alone is refused first; without the refusal table the pattern itself is named
    with pytest.raises(UnsupportedLayerError, match="conv"):
        check_supported(net)
    from simcompress.firmware import graph as g

    saved = dict(g._REFUSED)
    try:
        g._REFUSED.pop(nn.Conv1d)
        with pytest.raises(UnsupportedLayerError, match="Linear -> view -> Conv.*wrong numbers"):
            check_supported(net)
    finally:
        g._REFUSED.clear()
        g._REFUSED.update(saved)


def test_float_model_without_record_is_refused() -> None:
    with pytest.raises(BundleError, match="fixed_point"):
        build_graph(TinyGen())


def test_valid_reuse_factors_match_hls4ml() -> None:
    hls4ml = pytest.importorskip("hls4ml")
    backend = hls4ml.backends.get_backend("Vitis")
    for n_in, n_out in [(11, 64), (16, 10), (12, 8)]:
        assert valid_reuse_factors(n_in, n_out) == backend.get_valid_reuse_factors(n_in, n_out)


def test_csd_digits() -> None:
    assert [_csd_digits(v) for v in (0, 1, 2, 3, 7, 11, -5, 127)] == [0, 1, 1, 2, 2, 3, 2, 2]


def test_estimate_scales_with_reuse(quantize: Any) -> None:
    res = quantize(weight={"width": 12}, input={"width": 14}, result={"width": 16}, activation={"width": 16})
    graph = build_graph(res.model)
    e1 = estimate(graph, FirmwareConfig(strategy="Resource", reuse_factor=1))
    e4 = estimate(graph, FirmwareConfig(strategy="Resource", reuse_factor=4))
    fc2 = {e["name"]: e for e in e1["layers"]}["fc2"]
    assert fc2["multipliers"] == np.count_nonzero(graph.op("fc2").w_int)
    assert fc2["dsp"] == fc2["multipliers"]  # 16 x 12-bit products: one DSP48 each
    assert e4["total"]["dsp"] < e1["total"]["dsp"]
    assert e4["total"]["latency_cycles"] > e1["total"]["latency_cycles"]
    assert e1["kind"].startswith("estimate")


def test_planner_meets_budget_with_smallest_reuse(quantize: Any) -> None:
    res = quantize(weight={"width": 12}, input={"width": 14}, result={"width": 16}, activation={"width": 16})
    graph = build_graph(res.model)
    free = estimate(graph, FirmwareConfig(strategy="Resource"))["total"]["dsp"]
    budget = free // 3
    cfg = FirmwareConfig(strategy="Resource", budget=Budget(dsp=budget))
    reuse = plan_reuse_factors(graph, cfg)
    est = estimate(graph, cfg, reuse)
    assert est["total"]["dsp"] <= budget
    assert max(reuse.values()) > 1
    breaks = []
    for name, rf in reuse.items():
        op = graph.op(name)
        assert rf in valid_reuse_factors(op.w_int.shape[1], op.w_int.shape[0])
        smaller = [v for v in valid_reuse_factors(op.w_int.shape[1], op.w_int.shape[0]) if v < rf]
        if smaller:  # one step less reuse on this layer: does it break the budget?
            trial = {**reuse, name: smaller[-1]}
            breaks.append(estimate(graph, cfg, trial)["total"]["dsp"] > budget)
    # the greedy planner's last step was needed: undoing at least one layer's step breaks the budget
    assert breaks and any(breaks)
    with pytest.raises(ConfigError, match="budget cannot be met"):
        plan_reuse_factors(graph, FirmwareConfig(strategy="Resource", budget=Budget(dsp=0, lut=10)))


def test_planner_keeps_every_reuse_factor_under_the_ii_cap(quantize: Any) -> None:
    """budget.max_initiation_interval caps the planner's reuse factors (io_parallel II = the largest one)."""
    res = quantize(weight={"width": 12}, input={"width": 14}, result={"width": 16}, activation={"width": 16})
    graph = build_graph(res.model)
    free = estimate(graph, FirmwareConfig(strategy="Resource"))["total"]["dsp"]
    uncapped = plan_reuse_factors(graph, FirmwareConfig(strategy="Resource", budget=Budget(dsp=free // 3)))
    assert max(uncapped.values()) > 4  # the budget needs more reuse than a cap of 4 allows somewhere
    high = Budget(dsp=free // 3, max_initiation_interval=max(uncapped.values()))
    assert plan_reuse_factors(graph, FirmwareConfig(strategy="Resource", budget=high)) == uncapped
    # the cheapest plan under a cap of 4: fc1 (5 inputs) only accepts 1, 5, ..., so it stays at 1
    best = {}
    for op in graph.linear_ops:
        best[op.name] = max(v for v in valid_reuse_factors(op.w_int.shape[1], op.w_int.shape[0]) if v <= 4)
    assert best["fc1"] == 1 and max(best.values()) == 4
    reachable = estimate(graph, FirmwareConfig(strategy="Resource"), best)["total"]["dsp"]
    cfg = FirmwareConfig(strategy="Resource", budget=Budget(dsp=reachable, max_initiation_interval=4))
    reuse = plan_reuse_factors(graph, cfg)
    assert max(reuse.values()) <= 4 and estimate(graph, cfg, reuse)["total"]["dsp"] <= reachable
    assert estimate(graph, cfg, reuse)["total"]["initiation_interval_cycles"] <= 4
    # one DSP fewer cannot be met under the cap, and the message says which layer is held by hls4ml's rule
    with pytest.raises(ConfigError, match=r"max_initiation_interval=4.*fc1 \(5 -> 12: hls4ml accepts 1, 5"):
        plan_reuse_factors(graph, FirmwareConfig(strategy="Resource", budget=Budget(dsp=reachable - 1, max_initiation_interval=4)))
    with pytest.raises(ConfigError, match=r"reuse_factor 8 > budget.max_initiation_interval=4"):
        plan_reuse_factors(graph, FirmwareConfig(strategy="Resource", reuse_factor=8, budget=Budget(max_initiation_interval=4)))


def test_firmware_config_rejects_unknown_keys(tmp_path: Any) -> None:
    from simcompress.firmware import load_firmware_config

    p = tmp_path / "t.yaml"
    p.write_text("part: xcvu9p\nclock_mhz: 200\n")
    with pytest.raises(ConfigError, match="unknown key 'clock_mhz'"):
        load_firmware_config(p)
    p.write_text("io_type: io_serial\n")
    with pytest.raises(ConfigError, match="io_type"):
        load_firmware_config(p)


def test_shipped_firmware_configs_load() -> None:
    from pathlib import Path

    from simcompress.firmware import load_firmware_config

    root = Path(__file__).resolve().parents[2] / "configs" / "firmware"
    files = sorted(root.glob("*.yaml"))
    assert files
    for f in files:
        assert load_firmware_config(f).part.startswith("xc")


def test_graph_from_plain_weights_and_the_record_json(quantize: Any) -> None:
    """The firmware needs only the record and the float weights: a plain network holding the
    float (folded, unquantized) weights and the record's JSON give the same graph and emulation."""
    res = quantize(weight={"width": 7})
    plain = TinyGen()
    plain.bn1 = nn.Identity()  # folded into fc1 by the method
    weights = {}
    for name, mod in res.model.inner.named_modules():
        if isinstance(mod, nn.Linear):
            for p in ("weight", "bias"):
                weights[f"{name}.{p}"] = getattr(mod.parametrizations, p).original.detach().clone()
    plain.load_state_dict(weights)
    from_model = build_graph(res.model)
    from_json = build_graph(plain, json.loads(json.dumps(res.extra["precision"])))
    x = _inputs()
    np.testing.assert_array_equal(from_json.emulate_int(x), from_model.emulate_int(x))
    assert [(o.w_t, o.acc_t) for o in from_json.linear_ops] == [(o.w_t, o.acc_t) for o in from_model.linear_ops]
