"""Sampling speed of the shipped spline flow: the previous code path against today's, in one run.

Three variants of the same network and the same numbers (up to float rounding), interleaved:

* ``previous``: every group pass computes the whole output layer (``n_params * D`` rows) and
  builds zuko's spline from the coordinate-major view (softmax over a short last dimension);
* ``spline_dim1``: the spline's bins normalised over dimension 1 (``generators.flow.rqs_spline``);
* ``group_rows`` (what ships): as ``spline_dim1``, and each group pass computes only its own
  group's output rows (``MADE.group_heads``).

``sample()`` end to end, one torch thread, showers per second; best of ``repeats`` calls per
variant and batch size after a warm-up call. The teacher of the flow distillation recipes is
this flow, so its speed is the baseline of every student's speed-up.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

import torch
from zuko.transforms import MonotonicRQSTransform

from simcompress.generators import flow as flow_mod
from simcompress.generators import load_generator


def _zuko_spline(params: torch.Tensor, n_bins: int, bound: float) -> MonotonicRQSTransform:
    p = params.transpose(1, 2)
    k = int(n_bins)
    return MonotonicRQSTransform(p[..., :k], p[..., k : 2 * k], p[..., 2 * k :], bound=float(bound))


@contextmanager
def _variant(name: str):  # type: ignore[no-untyped-def]
    heads, spline = flow_mod.MADE.group_heads, flow_mod.rqs_spline
    try:
        if name in ("previous", "spline_dim1"):
            flow_mod.MADE.group_heads = lambda self: None  # type: ignore[method-assign,assignment,return-value]
        if name == "previous":
            flow_mod.rqs_spline = _zuko_spline  # type: ignore[assignment]
        yield
    finally:
        flow_mod.MADE.group_heads = heads  # type: ignore[method-assign]
        flow_mod.rqs_spline = spline


@torch.no_grad()
def run(quick: bool = False) -> dict[str, Any]:
    torch.set_num_threads(1)
    gen = load_generator("ds1-photons-flow").eval()
    batches = (1, 1000) if quick else (1, 1000, 10000)
    repeats = 2 if quick else 3
    variants = ("previous", "spline_dim1", "group_rows")
    rates: dict[str, dict[str, float]] = {v: {} for v in variants}
    for bs in batches:
        e = torch.full((bs,), 8192.0)
        n_calls = max(1, 50 // bs) if bs < 100 else 1
        best = {v: float("inf") for v in variants}
        for v in variants:
            with _variant(v):
                gen.sample(e, torch.Generator().manual_seed(0), batch_size=bs)  # warm-up
        for _ in range(repeats):
            for v in variants:  # interleaved: the load changes for all three alike
                with _variant(v):
                    t0 = time.perf_counter()
                    for _ in range(n_calls):
                        gen.sample(e, torch.Generator().manual_seed(1), batch_size=bs)
                    best[v] = min(best[v], (time.perf_counter() - t0) / n_calls)
        for v in variants:
            rates[v][str(bs)] = bs / best[v]
    # the maths is the same: the variants' samples agree to float rounding
    e = torch.full((256,), 8192.0)
    out = {}
    for v in ("previous", "group_rows"):
        with _variant(v):
            out[v] = gen.network(torch.randn(256, gen.latent_dim, generator=torch.Generator().manual_seed(2)), gen.condition(e))
    return {
        "model": "ds1-photons-flow (4 spline blocks x 21 groups, hidden 192)",
        "torch_threads": 1,
        "showers_per_second": rates,
        "speedup_vs_previous": {v: {b: rates[v][b] / rates["previous"][b] for b in rates[v]} for v in variants[1:]},
        "max_abs_diff_standardised": float((out["previous"] - out["group_rows"]).abs().max()),
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
