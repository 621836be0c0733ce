"""hls4ml conversion + g++ compile + C simulation, bit-exact against the emulation (several precisions,
reuse factors, strategies, io types), and the IP folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simcompress.firmware import FirmwareConfig, build_graph, export_firmware
from simcompress.firmware.config import LayerFirmware
from simcompress.firmware.hls import compile_model, convert, csim_predict

pytestmark = [pytest.mark.firmware, pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")]
pytest.importorskip("hls4ml")


def _spec(w: int, r: str, o: str, **kw: Any) -> dict[str, Any]:
    return {"width": w, "rounding": r, "overflow": o, **kw}


# (RND/SAT with 8-bit weights, Latency, reuse factor 1, Vitis, io_parallel: the defaults, covered by
# test_export_firmware_ip_folder and the CLI test)
CASES = {
    # narrow TRN/WRAP results that really overflow, Resource strategy with reuse, Vivado backend
    "w5-trn-wrap-resource-rf": (
        {"weight": _spec(5, "TRN", "WRAP"), "bias": _spec(6, "TRN", "WRAP"), "input": _spec(8, "TRN", "WRAP"),
         "result": _spec(7, "TRN", "WRAP", integer=1), "activation": _spec(7, "TRN", "WRAP", integer=1)},
        FirmwareConfig(backend="Vivado", strategy="Resource", reuse_factor=4, layers={"fc1": LayerFirmware(reuse_factor=5)}),
    ),
    # convergent rounding, symmetric saturation, io_stream
    "w11-rndconv-satsym-stream": (
        {"weight": _spec(11, "RND_CONV", "SAT_SYM"), "bias": _spec(12, "RND_ZERO", "SAT"),
         "result": _spec(14, "RND_INF", "SAT_SYM"), "activation": _spec(13, "RND_MIN_INF", "SAT_ZERO")},
        FirmwareConfig(io_type="io_stream"),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_csim_is_bit_exact(case: str, quantize: Any, tmp_path: Path) -> None:
    options, cfg = CASES[case]
    res = quantize(**options)
    graph = build_graph(res.model)
    hm = convert(graph, res.model.inner, cfg, tmp_path / "prj")
    # hls4ml kept our per-layer reuse factors and strategies
    for layer in hm.get_layers():
        if layer.name in ("fc1", "fc2", "out"):
            want_rf = cfg.layers["fc1"].reuse_factor if (case.startswith("w5") and layer.name == "fc1") else cfg.reuse_factor
            assert layer.get_attr("reuse_factor") == want_rf
            assert layer.get_attr("strategy").lower() == cfg.strategy.lower()
    compile_model(hm)
    rng = np.random.default_rng(11)
    n = 1500
    x = [np.concatenate([rng.normal(size=(n - 300, 4)), rng.uniform(-12, 12, size=(300, 4))]),
         np.concatenate([rng.uniform(-1, 1, size=(n - 300, 1)), rng.uniform(-12, 12, size=(300, 1))])]
    y_emu = graph.emulate(x)
    y_csim = csim_predict(hm, graph, x)
    assert y_csim.shape == (n, 6)
    assert np.count_nonzero(y_csim != y_emu) == 0
    assert np.std(y_emu) > 0  # not a degenerate all-saturated output


def test_export_firmware_ip_folder(quantize: Any, tmp_path: Path) -> None:
    res = quantize(method="qat_fixed_point")
    out = tmp_path / "fw"
    result = export_firmware(res.model, FirmwareConfig(part="xcvu9p-flga2104-2L-e"), out, n_samples=600)
    rep = json.loads((out / "firmware.json").read_text())
    assert result.mismatches == 0 and rep["bit_exactness"]["passed"]
    assert rep["bit_exactness"]["n_outputs"] == 600 * 6
    assert rep["target"]["part"] == "xcvu9p-flga2104-2L-e"
    assert set(rep["precisions"]) == {"z", "c", "cat", "fc1", "act1", "fc2", "act2", "relu", "out"}
    assert rep["implementation"]["fc1"] == {"reuse_factor": 1, "strategy": "Latency"}
    assert rep["estimate"]["total"]["latency_cycles"] > 0 and rep["estimate"]["total"]["lut"] > 0
    assert rep["deviation_from_float"]["max_abs"] < 0.5
    for f in ("README.md", "precision.json", "hls/build_prj.tcl", "hls/firmware/simcompress_gen.cpp",
              "hls/tb_data/tb_input_features.dat", "hls/tb_data/tb_output_predictions.dat",
              "vectors/input_z.npy", "vectors/input_c.npy", "vectors/output.npy"):
        assert (out / f).is_file(), f
    # the co-simulation vectors are the emulated outputs of the quantized inputs
    zq, cq = np.load(out / "vectors" / "input_z.npy"), np.load(out / "vectors" / "input_c.npy")
    np.testing.assert_array_equal(result.graph.emulate([zq, cq]), np.load(out / "vectors" / "output.npy"))
    lines = (out / "hls" / "tb_data" / "tb_input_features.dat").read_text().splitlines()
    assert len(lines) == 600 and len(lines[0].split()) == 5
    assert "vitis_hls -f build_prj.tcl" in (out / "README.md").read_text()
    assert not any(p.name.startswith(".fw.") for p in tmp_path.iterdir())  # no temp folder left
    yml = (out / "hls" / "hls4ml_config.yml").read_text()
    assert "!!python" not in yml  # no pickled objects in the project
