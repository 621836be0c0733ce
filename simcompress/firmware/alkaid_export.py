"""The IP folder of the alkaid route (:mod:`.alkaid_route`): Verilog, vectors, and the bit-exactness proof.

Written by :func:`simcompress.firmware.export_firmware` when hls4ml 1.3.0 cannot take the
network (transposed convolutions, Tanh/Sigmoid tables, ...) or the target asks for
``route: alkaid``. The folder holds:

* ``rtl/``: alkaid's Verilog (``src/``, with the lookup tables in ``src/*_tables.v``), Vivado and
  Quartus project scripts, the Verilator binder (``sim/``) and the traced graph (``model/``);
* ``vectors/``, ``precision.json``, ``firmware.json`` and ``README.md`` as on the hls4ml route.

``firmware.json``'s ``bit_exactness`` compares the float64 emulation with alkaid's C++
interpreter of the traced adder graph (the logic the Verilog is written from) on every check
input; with ``rtl`` on, ``rtl`` compares the emulation with the Verilator simulation of the
Verilog, and yosys counts LUTs. The resource figures are alkaid's own estimates (adder and
lookup-table LUTs, latency of the combinational path), not a vendor report.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._progress import progress_bar
from .alkaid_route import CastNetwork, bake
from .config import FirmwareConfig

__all__ = ["AlkaidModel", "build_alkaid_ip", "interpret", "write_rtl"]

log = logging.getLogger(__name__)


def interpret(comb: Any, inputs: list[np.ndarray], n_threads: int = 0) -> np.ndarray:
    """alkaid's bit-exact C++ interpreter on inputs already on the input grid: ``(N, n_out)`` float64."""
    flat = np.ascontiguousarray(np.concatenate([x.reshape(x.shape[0], -1) for x in inputs], axis=1), dtype=np.float64)
    return np.asarray(comb.predict(flat, n_threads=n_threads), dtype=np.float64).reshape(flat.shape[0], -1)


def write_rtl(comb: Any, out_dir: str | os.PathLike[str], *, flavor: str = "verilog", name: str = "simcompress_gen",
              latency_cutoff: float | None = None, part: str = "xcvu13p-flga2577-2-e",
              clock_period_ns: float = 5.0) -> Any:
    """Write alkaid's Verilog (or VHDL) of ``comb`` into ``out_dir``; returns alkaid's ``RTLModel``."""
    from alkaid.codegen import RTLModel

    with contextlib.redirect_stdout(io.StringIO()):
        model = RTLModel(comb, str(out_dir), prj_name=name, flavor=flavor, latency_cutoff=latency_cutoff or -1,
                         print_latency=False, part_name=part, clock_period=clock_period_ns)
        model.write()
    return model


class AlkaidModel:
    """What the C simulation is on the hls4ml route: ``predict`` runs alkaid's interpreter.

    :func:`simcompress.firmware.hls.csim_predict` accepts it, so showers can be generated
    through the firmware logic (``simcompress firmware --reference``) on either route.
    """

    def __init__(self, comb: Any, network: CastNetwork) -> None:
        self.comb = comb
        self.network = network

    def predict(self, inputs: np.ndarray | list[np.ndarray]) -> np.ndarray:
        xs = inputs if isinstance(inputs, list) else [inputs]
        return interpret(self.comb, self.network.quantize_inputs(xs))


def _float_outputs(net: nn.Module, inputs: list[np.ndarray]) -> np.ndarray:
    ref = bake(net, original=True).eval()
    with torch.no_grad():
        y = ref(*[torch.from_numpy(x).float() for x in inputs])
    return y.reshape(y.shape[0], -1).double().numpy()


def _verilator(model: Any, q: list[np.ndarray], ref: np.ndarray) -> dict[str, Any]:
    from .rtl import compile_verilator

    t0 = time.perf_counter()
    compile_verilator(model)
    t_build = time.perf_counter() - t0
    flat = np.ascontiguousarray(np.concatenate([x.reshape(x.shape[0], -1) for x in q], axis=1), dtype=np.float64)
    t1 = time.perf_counter()
    y = np.asarray(model.predict(flat), dtype=np.float64).reshape(ref.shape)
    return {"mismatches": int(np.count_nonzero(y != ref)), "max_abs_diff": float(np.max(np.abs(y - ref))) if y.size else 0.0,
            "seconds": {"verilator_build": t_build, "simulate": time.perf_counter() - t1}}


def build_alkaid_ip(network: CastNetwork, net: nn.Module, cfg: FirmwareConfig, tmp: Path, inputs: list[np.ndarray],
                    rtl: bool) -> tuple[dict[str, Any], AlkaidModel]:
    """Trace, interpret, write the Verilog (and with ``rtl`` simulate it); the report's route-specific keys.

    Returns ``(report part, model)``: ``bit_exactness``, ``deviation_from_float``, ``estimate``,
    ``timings``, ``rtl``, ``precisions`` and the vectors' integer codes are filled in here.
    """
    timings: dict[str, float] = {}
    n = inputs[0].shape[0]
    with progress_bar("firmware (alkaid)", 4, enabled=log.isEnabledFor(logging.INFO), transient=True) as progress:
        t0 = time.perf_counter()
        comb = network.trace()
        timings["convert_s"] = time.perf_counter() - t0
        progress.advance(1)
        t0 = time.perf_counter()
        y_emu = network.emulate(inputs)
        timings["emulate_s"] = time.perf_counter() - t0
        q = network.quantize_inputs(inputs)
        t0 = time.perf_counter()
        y_int = interpret(comb, q)
        timings["csim_s"] = time.perf_counter() - t0
        timings["csim_samples_per_s"] = n / max(timings["csim_s"], 1e-9)
        progress.advance(1)
        t0 = time.perf_counter()
        model = write_rtl(comb, tmp / "rtl", latency_cutoff=cfg.rtl.latency_cutoff, part=cfg.part,
                          clock_period_ns=cfg.clock_period_ns, name=cfg.project_name)
        timings["compile_s"] = time.perf_counter() - t0  # writing the Verilog (no compiler on this route)
        progress.advance(1)
        rtl_res = None
        if rtl:
            m = min(cfg.rtl.n_samples, n)
            rtl_res = {"tool": "alkaid -> Verilog -> Verilator 5.48", "n_samples": int(m),
                       **_verilator(model, [x[:m] for x in q], y_emu[:m]), "verilog_dir": "rtl"}
            if cfg.rtl.yosys:
                from .rtl import yosys_luts

                rtl_res["yosys"] = yosys_luts(tmp / "rtl", top=cfg.project_name, timeout_s=cfg.rtl.yosys_timeout_s)
        progress.advance(1)
    mism = int(np.count_nonzero(y_int != y_emu))
    bit = {
        "n_samples": int(n),
        "n_outputs": int(y_emu.size),
        "mismatches": mism,
        "max_abs_diff_emulation_vs_csim": float(np.max(np.abs(y_int - y_emu))) if y_emu.size else 0.0,
        "passed": mism == 0,
        "compared": "float64 emulation of the precision record vs alkaid's C++ interpreter of the traced adder graph",
        "inputs": "90% typical (noise N(0,1) clipped, conditioning over the energy range), "
        "10% uniform over 1.25x the input type range",
        "seed": cfg.check.seed,
    }
    y_float = _float_outputs(net, inputs)
    n_typ = n - n // 10
    d = np.abs(y_emu[:n_typ] - y_float[:n_typ])
    dev = {"max_abs": float(np.max(d)), "mean_abs": float(np.mean(d)), "float_output_std": float(np.std(y_float[:n_typ])),
           "max_abs_incl_out_of_range_inputs": float(np.max(np.abs(y_emu - y_float))), "n_samples": int(n_typ)}
    sur = model._comb  # the graph the Verilog is written from, with alkaid's cost annotation
    lat = [float(v) for v in np.ravel(sur.latency)][:2]
    latency_ns = lat[-1] if lat else 0.0
    stages = model.latency
    cycles = int(stages) if stages else max(1, math.ceil(latency_ns / cfg.clock_period_ns))
    est = {"total": {"dsp": 0, "lut": round(float(sur.cost)), "ff": int(model.reg_bits), "latency_cycles": cycles,
                     "latency_ns": latency_ns, "initiation_interval_cycles": 1},
           "source": "alkaid's surrogate model (LUTs of the adder graph and lookup tables, combinational delay); "
           "not a vendor report", "pipelined": bool(cfg.rtl.latency_cutoff)}
    out_t = network.output_type
    codes = np.ldexp(y_emu, out_t.frac).astype(np.int64) if out_t is not None else None
    part = {"bit_exactness": bit, "deviation_from_float": dev, "estimate": est, "timings": timings, "rtl": rtl_res,
            "precisions": network.layers, "output_codes": codes,
            "output": {"name": "output", "size": int(y_emu.shape[1]), "type": out_t.to_hls() if out_t else None},
            "emulated": y_emu, "quantized_inputs": q}
    return part, AlkaidModel(comb, network)
