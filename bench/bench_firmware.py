"""Firmware benchmark: hls4ml conversion + compile time, C-simulation throughput, estimates, two precisions.

A ds1-photons-sized generator network ``network(z, c)``: 10 noise + 1 conditioning ->
64 -> 128 -> 368 voxels (ReLU), quantized with ``fixed_point`` at two precisions
(8-bit and 12-bit weights), converted with hls4ml 1.3.0 (Vitis, io_parallel, Latency,
reuse factor 1, part xcvu13p) and checked bit-exact against the emulation.

``run(quick=True)`` uses 512 check inputs (full: 4096). Prints JSON when run as a script::

    .venv/bin/python bench/bench_firmware.py [--full]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn


class BenchGenerator(nn.Module):
    def __init__(self, latent: int = 10, hidden: tuple[int, int] = (64, 128), n_vox: int = 368) -> None:
        super().__init__()
        self.fc1 = nn.Linear(latent + 1, hidden[0])
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.act2 = nn.ReLU()
        self.out = nn.Linear(hidden[1], n_vox)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.out(self.act2(self.fc2(self.act1(self.fc1(torch.cat([z, c], dim=1))))))


PRECISIONS = {
    "w8-a16": {"input": {"width": 12}, "weight": {"width": 8}, "bias": {"width": 12},
               "result": {"width": 16, "headroom": 1}, "activation": {"width": 16, "headroom": 1}},
    "w12-a18": {"input": {"width": 14}, "weight": {"width": 12}, "bias": {"width": 16},
                "result": {"width": 18, "headroom": 1}, "activation": {"width": 18, "headroom": 1}},
}


def run(quick: bool = True) -> dict[str, Any]:
    from simcompress.compress import compress, config_from_dict
    from simcompress.firmware import FirmwareConfig, export_firmware

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = BenchGenerator().eval()
    g = torch.Generator().manual_seed(1)
    cal = [torch.randn(4096, 10, generator=g), torch.rand(4096, 1, generator=g) * 2 - 1]
    n = 512 if quick else 4096
    cfg = FirmwareConfig(part="xcvu13p-flga2577-2-e", clock_period_ns=5.0)
    results: dict[str, Any] = {"model": "11 -> 64 -> 128 -> 368 (ReLU)", "n_check_samples": n, "part": cfg.part,
                               "backend": cfg.backend, "io_type": cfg.io_type, "precisions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in PRECISIONS.items():
            t0 = time.perf_counter()
            q = compress(net, config_from_dict({"method": "fixed_point", **spec}), calibration=cal)
            t_quant = time.perf_counter() - t0
            res = export_firmware(q.model, cfg, Path(tmp) / name, n_samples=n)
            rep = res.report
            tot = rep["estimate"]["total"]
            results["precisions"][name] = {
                "weight_type": rep["precisions"]["fc2"]["weight"],
                "result_type": rep["precisions"]["fc2"]["result"],
                "quantize_s": round(t_quant, 3),
                "convert_s": round(rep["timings"]["convert_s"], 3),
                "compile_s": round(rep["timings"]["compile_s"], 2),
                "csim_showers_per_s": round(rep["timings"]["csim_samples_per_s"], 1),
                "emulation_showers_per_s": round(n / max(rep["timings"]["emulate_s"], 1e-9), 1),
                "mismatches": rep["bit_exactness"]["mismatches"],
                "max_abs_dev_float": rep["deviation_from_float"]["max_abs"],
                "mean_abs_dev_float": rep["deviation_from_float"]["mean_abs"],
                "estimate_dsp": tot["dsp"],
                "estimate_lut": tot["lut"],
                "estimate_multipliers": tot["multipliers"],
                "estimate_latency_cycles": tot["latency_cycles"],
                "estimate_latency_ns": tot["latency_ns"],
            }
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--full" not in sys.argv), indent=2))
