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
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._atomic import atomic_dir
from .._progress import progress_bar
from .._provenance import software_versions, utc_now
from ..compress.fixed_point.record import PrecisionRecord
from .alkaid_route import CastNetwork, bake
from .config import FirmwareConfig
from .export import (
    FIRMWARE_FORMAT_VERSION,
    FirmwareResult,
    SynthesisUnavailableError,
    _input_specs,
    _write_json,
    check_inputs,
)

__all__ = ["AlkaidModel", "build_alkaid_ip", "export_alkaid", "interpret", "write_rtl"]

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


def export_alkaid(network: Any, net: nn.Module, model: nn.Module, record: PrecisionRecord, desc: str,
                   cfg: FirmwareConfig, out: Path, n: int, synth: bool, rtl: bool | None, keep_model: bool) -> FirmwareResult:
    """The alkaid-route IP folder (written atomically), as :func:`~.export.export_firmware` returns it."""
    inputs = check_inputs(network, n, cfg.check.seed, cfg.check.noise_range, model)
    software = {**software_versions(), "alkaid": version("alkaid")}
    with atomic_dir(out, overwrite=True) as tmp:
        part, am = build_alkaid_ip(network, net, cfg, tmp, inputs, rtl if rtl is not None else cfg.rtl.enabled)
        vec = tmp / "vectors"
        vec.mkdir()
        for name, arr in zip(network.inputs, part.pop("quantized_inputs"), strict=False):
            np.save(vec / f"input_{name}.npy", arr)
        np.save(vec / "output.npy", part.pop("emulated"))
        codes = part.pop("output_codes")
        if codes is not None:
            np.save(vec / "output_codes.npy", codes)
        _write_json(tmp / "precision.json", record.to_dict())
        report = {
            "format_version": FIRMWARE_FORMAT_VERSION, "created": utc_now(), "software": software,
            "source": desc, "route": "alkaid", "target": cfg.model_dump(mode="json"),
            "inputs": [{"name": nm, "size": s, "type": t.to_hls()} for nm, s, t in _input_specs(network)],
            "output": part.pop("output"), **part, "implementation": {"strategy": "distributed arithmetic (alkaid), no DSPs"},
            "synthesis": None, "physics": None,
        }
        if synth:
            report["synthesis"] = {"status": "unavailable", "reason": "vendor synthesis of the alkaid Verilog is not run "
                                   "by simcompress; run vivado -mode batch -source build_vivado_prj.tcl in rtl/"}
        (tmp / "README.md").write_text(_readme(report, cfg))
        _write_json(tmp / "firmware.json", report)
    if synth:
        msg = f"{report['synthesis']['reason']} (the Verilog is ready in {out / 'rtl'})"
        raise SynthesisUnavailableError(msg)
    return FirmwareResult(out, report, network, am if keep_model else None, model)


def _readme(report: dict[str, Any], cfg: FirmwareConfig) -> str:
    b, t = report["bit_exactness"], report["estimate"]["total"]
    ins = ", ".join(f"`{i['name']}` ({i['size']} x {i['type']})" for i in report["inputs"])
    lines = [
        f"# {cfg.project_name}: fixed-point generator RTL (alkaid route, part {cfg.part})", "",
        (f"Generated by simcompress on {report['created']} from `{report['source']}` with alkaid "
        f"{report['software'].get('alkaid', '?')} (hls4ml 1.3.0 cannot convert this network)."), "",
        (f"* Inputs: {ins} (all inputs concatenated, flattened, in this order); output "
        f"{report['output']['size']} x {report['output']['type']}."),
        (f"* Bit-exactness: {b['mismatches']} mismatches on {b['n_samples']} random inputs ({b['n_outputs']} outputs) "
        "between the simcompress float64 emulation and alkaid's interpreter of the traced logic."),
        (f"* Estimate (alkaid's surrogate model, not a vendor report): {t['lut']} LUT, 0 DSP, "
        f"{t['latency_ns']:.1f} ns combinational path."), "",
        "`rtl/src/` holds the Verilog (lookup tables in `*_tables.v`), `rtl/build_vivado_prj.tcl` the Vivado project;",
        "`vectors/*.npy` the quantized inputs and the emulated outputs; `precision.json` the precision record.",
    ]
    if report.get("rtl"):
        lines.append(f"* Verilator: {report['rtl']['mismatches']} mismatches on {report['rtl']['n_samples']} inputs.")
    return "\n".join(lines) + "\n"
