"""Sampling-rate measurement of teacher and student in the same run, same batch sizes."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

__all__ = ["compare_sampling_speed", "sampling_rate"]


@torch.no_grad()
def sampling_rate(model: Any, batch_size: int, energy_mev: float, min_seconds: float = 0.5, seed: int = 0) -> dict[str, float]:
    """Showers per second of ``model.sample`` at ``batch_size`` (wall clock, >= one batch, >= ``min_seconds``).

    The warm-up is one untimed batch of the full size: the allocator's first touch of the large
    buffers (a spline IAF's parameters at batch 10,000 are ~4 GB) would otherwise fall into the one
    timed batch. With a 2-shower warm-up, the spline IAF student of ``flow-to-iaf-rqs`` measured x1.42
    against the shipped flow at batch 10,000, against x2.83 as the best of 5 warm rounds.
    """
    e = torch.full((batch_size,), float(energy_mev))
    gen = torch.Generator().manual_seed(seed)
    model.sample(e, generator=gen, batch_size=batch_size)  # warm-up at full size, untimed
    n = 0
    t0 = time.perf_counter()
    while True:
        model.sample(e, generator=gen, batch_size=batch_size)
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    return {
        "batch_size": batch_size,
        "batches": n,
        "seconds": elapsed,
        "showers_per_second": n * batch_size / elapsed,
        "ms_per_shower": 1e3 * elapsed / (n * batch_size),
    }


def compare_sampling_speed(
    models: dict[str, nn.Module],
    batch_sizes: tuple[int, ...] = (1, 100, 10000),
    min_seconds: float = 0.5,
    energy_mev: float | None = None,
    baseline: str = "teacher",
) -> dict[str, Any]:
    """Measure every model at every batch size, interleaved, and the speed-up over ``baseline``.

    The energy defaults to the geometric mean of the first model's ``energy_range_mev``.
    """
    first = next(iter(models.values()))
    if energy_mev is None:
        lo, hi = getattr(first, "energy_range_mev", (1e3, 1e5))
        energy_mev = float((lo * hi) ** 0.5)
    rates: dict[str, dict[str, Any]] = {name: {} for name in models}
    for bs in batch_sizes:
        for name, m in models.items():
            rates[name][str(bs)] = sampling_rate(m, bs, energy_mev, min_seconds)
    out: dict[str, Any] = {
        "measured": True,
        "device": "cpu" if not torch.cuda.is_available() else "cuda-available (models on their own device)",
        "torch_threads": torch.get_num_threads(),
        "energy_mev": energy_mev,
        "batch_sizes": list(batch_sizes),
        "rates": rates,
    }
    if baseline in models:
        out["speedup"] = {
            name: {
                str(bs): rates[name][str(bs)]["showers_per_second"] / rates[baseline][str(bs)]["showers_per_second"]
                for bs in batch_sizes
            }
            for name in models
            if name != baseline
        }
    return out
