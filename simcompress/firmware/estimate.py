"""Resource and latency estimates without vendor tools, and the reuse-factor planner.

hls4ml 1.3.0 gives no resource estimate without Vivado/Vitis, so these are the
project's own *proxies*, computed from the fixed-point graph and the chosen
reuse factors. They are for comparing variants (precisions, reuse factors,
pruning) against each other, not vendor numbers; ``firmware.json`` labels them
``"estimate"``. The model (per Dense layer, io_parallel):

* multipliers: ``ceil(nonzero_weights / reuse_factor)`` parallel instances (hls4ml's
  ``multiplier_limit``; zero weights are removed by HLS constant propagation with
  the Latency strategy);
* DSP proxy: a multiplier of ``a x b`` bits (``a >= b``) maps to LUTs when
  ``b <= 4`` or ``a + b <= 12`` (what Vivado HLS does for narrow products),
  otherwise to ``ceil(a/27) * ceil(b/18)`` DSP48E2 slices;
* with reuse factor 1 and the Latency strategy the weights are constants: each
  multiplication is a shift-and-add network costing ``a * (csd(w) - 1)`` LUTs,
  ``csd(w)`` being the non-zero digits of the weight code in canonical signed-digit
  form (0 LUT for powers of two), and no DSP;
* LUT proxy: generic LUT multipliers cost ``ceil(0.6 * a * b)`` LUTs; each adder of the
  accumulation tree costs one LUT per accumulator bit (carry chain); the output
  cast and activations cost one LUT per output bit;
* latency (cycles): ``reuse_factor`` (serialised multiplications) + multiplier
  pipeline (3 for DSP, 1 for LUT) + ``ceil(log2(n_in + 1) / 2)`` adder-tree levels
  (two per cycle at 200 MHz) + 1 for the cast; activations and cat cost 1 cycle;
  the initiation interval is the largest reuse factor.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .config import FirmwareConfig
from .graph import FixedGraph

__all__ = ["LayerEstimate", "estimate", "plan_reuse_factors", "valid_reuse_factors"]


@dataclass(frozen=True)
class LayerEstimate:
    name: str
    kind: str
    n_in: int
    n_out: int
    nonzero_weights: int
    reuse_factor: int
    strategy: str
    multipliers: int
    adders: int
    dsp: int
    lut: int
    latency_cycles: int


@functools.lru_cache(maxsize=256)
def _valid_rf(n_in: int, n_out: int) -> tuple[int, ...]:
    out = []
    for rf in range(1, n_in * n_out + 1):
        mult_limit = math.ceil(n_in * n_out / min(n_in, rf))
        ok = (mult_limit % n_out == 0) or rf >= n_in
        ok = ok and ((rf % n_in == 0) or rf < n_in)
        ok = ok and ((n_in * n_out) % rf == 0)
        if ok:
            out.append(rf)
    return tuple(out)


def valid_reuse_factors(n_in: int, n_out: int) -> list[int]:
    """Reuse factors hls4ml accepts for a Dense layer (its ``_validate_reuse_factor`` rule)."""
    return list(_valid_rf(int(n_in), int(n_out)))


def _csd_digits(n: int) -> int:
    """Non-zero digits of ``n`` in canonical signed-digit (non-adjacent) form."""
    n = abs(n)
    count = 0
    while n:
        if n & 1:
            n -= 2 - (n & 3)  # digit +1 or -1
            count += 1
        n >>= 1
    return count


def _mult_cost(a: int, b: int) -> tuple[int, int]:
    a, b = max(a, b), min(a, b)
    if b <= 10:
        return 0, math.ceil(0.6 * a * b)
    return math.ceil(a / 27) * math.ceil(b / 18), 0


def _layer(graph: FixedGraph, op: Any, rf: int, strategy: str) -> LayerEstimate:
    src_t = graph.op(op.srcs[0]).out_t
    if op.kind == "linear":
        nnz = int(np.count_nonzero(op.w_int))
        n_out, n_in = op.w_int.shape
        mults = math.ceil(nnz / rf) if nnz else 0
        dsp1, lut1 = _mult_cost(src_t.width, op.w_t.width)
        adders = math.ceil((nnz + (n_out if op.b_int is not None else 0)) / rf)
        if rf == 1 and strategy == "Latency":
            dsp1 = 0
            mult_lut = int(sum(src_t.width * max(_csd_digits(int(w)) - 1, 0) for w in op.w_int.ravel() if w))
        else:
            mult_lut = mults * lut1
        lut = mult_lut + adders * op.acc_t.width + n_out * op.out_t.width
        dsp = mults * dsp1
        lat = rf + (3 if dsp1 else 1) + math.ceil(math.log2(n_in + 1) / 2) + 1
        return LayerEstimate(op.name, "Dense", n_in, n_out, nnz, rf, strategy, mults, adders, dsp, lut, lat)
    n = op.n_out
    return LayerEstimate(op.name, op.kind, n, n, 0, 1, "-", 0, 0, 0, n * op.out_t.width if op.kind != "cat" else 0, 1)


def estimate(graph: FixedGraph, cfg: FirmwareConfig, reuse: dict[str, int] | None = None) -> dict[str, Any]:
    """Per-layer and total resource / latency proxies (see the module docstring)."""
    from .hls import layer_implementation

    layers = []
    for op in graph.ops:
        if op.kind == "input":
            continue
        rf, strategy = layer_implementation(cfg, op.name, reuse) if op.kind == "linear" else (1, "-")
        layers.append(_layer(graph, op, rf, strategy))
    total_lat = sum(e.latency_cycles for e in layers)
    ii = max([e.reuse_factor for e in layers] + [1])
    return {
        "kind": "estimate (simcompress proxy, not a vendor report)",
        "part": cfg.part,
        "clock_period_ns": cfg.clock_period_ns,
        "layers": [asdict(e) for e in layers],
        "total": {
            "multipliers": sum(e.multipliers for e in layers),
            "adders": sum(e.adders for e in layers),
            "dsp": sum(e.dsp for e in layers),
            "lut": sum(e.lut for e in layers),
            "latency_cycles": total_lat,
            "latency_ns": total_lat * cfg.clock_period_ns,
            "initiation_interval_cycles": ii,
            "throughput_per_s": 1e9 / (ii * cfg.clock_period_ns),
        },
    }


def plan_reuse_factors(graph: FixedGraph, cfg: FirmwareConfig) -> dict[str, int]:
    """Smallest reuse factors whose estimate fits ``cfg.budget`` (DSP, LUT, latency, II).

    Greedy: start from the configured reuse factors; while over the DSP/LUT
    budget, raise the reuse factor of the Dense layer using the most of the
    scarcest resource to its next valid value, never above
    ``budget.max_initiation_interval`` (io_parallel: the IP accepts a new input every
    ``max(reuse factor)`` cycles). Raises :class:`ConfigError` when the budget cannot
    be met even at the largest allowed reuse factors (naming the layers whose
    hls4ml-valid reuse factors stop below the cap), when a configured reuse factor
    is above the cap, or when meeting the budget breaks the latency limit.
    """
    from .hls import layer_implementation

    budget = cfg.budget
    cap = budget.max_initiation_interval if budget is not None else None
    reuse = {op.name: layer_implementation(cfg, op.name)[0] for op in graph.linear_ops}
    allowed: dict[str, list[int]] = {}
    valid_of: dict[str, list[int]] = {}
    for op in graph.linear_ops:
        assert op.w_int is not None  # every linear op has weights (build_graph)
        n_out, n_in = op.w_int.shape
        valid = valid_of[op.name] = valid_reuse_factors(n_in, n_out)
        if cap is not None and reuse[op.name] > cap:
            msg = (
                f"firmware: layer {op.name!r} has reuse_factor {reuse[op.name]} > budget.max_initiation_interval={cap}; "
                f"lower its reuse factor or raise the cap"
            )
            raise ConfigError(msg)
        allowed[op.name] = [v for v in valid if cap is None or v <= cap]  # RF 1 is always valid
        if reuse[op.name] not in valid:
            up = [v for v in allowed[op.name] if v >= reuse[op.name]]
            reuse[op.name] = up[0] if up else allowed[op.name][-1]
    if budget is None:
        return reuse

    def over(est: dict[str, Any]) -> str | None:
        t = est["total"]
        if budget.dsp is not None and t["dsp"] > budget.dsp:
            return "dsp"
        if budget.lut is not None and t["lut"] > budget.lut:
            return "lut"
        return None

    while True:
        est = estimate(graph, cfg, reuse)
        res = over(est)
        if res is None:
            break
        per = {e["name"]: e[res] for e in est["layers"] if e["kind"] == "Dense"}
        for name in sorted(per, key=lambda k: -per[k]):
            bigger = [v for v in allowed[name] if v > reuse[name]]
            if bigger and per[name] > 0:
                reuse[name] = bigger[0]
                break
        else:
            t = est["total"]
            at = "the largest reuse factors" if cap is None else f"reuse factors <= max_initiation_interval={cap}"
            msg = (
                f"firmware budget cannot be met: at {at} the estimate is {t['dsp']} DSP and "
                f"{t['lut']} LUT (budget: dsp={budget.dsp}, lut={budget.lut}); use narrower precisions, a smaller network "
                f"or a bigger part"
            )
            if cap is not None:
                stuck = []
                for op in graph.linear_ops:
                    valid = valid_of[op.name]
                    if len(allowed[op.name]) < len(valid) and per.get(op.name, 0) > 0:  # valid reuse factors go on above the cap
                        assert op.w_int is not None
                        n_out, n_in = op.w_int.shape
                        stuck.append(f"{op.name} ({n_in} -> {n_out}: hls4ml accepts {', '.join(map(str, valid[:6]))}, ...)")
                if stuck:
                    msg += "; layers held at their largest reuse factor under the cap: " + "; ".join(stuck)
            raise ConfigError(msg)
    if budget.max_latency_cycles is not None:
        lat = estimate(graph, cfg, reuse)["total"]["latency_cycles"]
        if lat > budget.max_latency_cycles:
            msg = (
                f"firmware budget: fitting the resources needs a latency of {lat} cycles > max_latency_cycles="
                f"{budget.max_latency_cycles}"
            )
            raise ConfigError(
                msg
            )
    return reuse
