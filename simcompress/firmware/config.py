"""Firmware target configuration (``configs/firmware/<target>.yaml``)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from .._config import StrictModel, load_yaml

__all__ = ["Budget", "CheckConfig", "FirmwareConfig", "LayerFirmware", "RTLConfig", "load_firmware_config"]


class LayerFirmware(StrictModel):
    """Per-layer implementation choices (keyed by hls4ml layer name, fnmatch patterns allowed)."""

    reuse_factor: int | None = Field(default=None, ge=1)
    strategy: Literal["Latency", "Resource"] | None = None


class Budget(StrictModel):
    """Resource budget for the reuse-factor planner (our own proxies, see :mod:`.estimate`)."""

    dsp: int | None = Field(default=None, ge=0)
    lut: int | None = Field(default=None, ge=0)
    max_latency_cycles: int | None = Field(default=None, ge=1)
    max_initiation_interval: int | None = Field(
        default=None, ge=1,
        description="largest reuse factor the planner may give a layer (io_parallel: the IP's initiation interval in cycles)",
    )


class CheckConfig(StrictModel):
    """Bit-exactness check of emulation vs hls4ml C simulation."""

    n_samples: int = Field(default=4096, ge=1)
    seed: int = 0
    noise_range: float = Field(default=3.0, gt=0, description="noise inputs drawn N(0,1) clipped to +-this")


class RTLConfig(StrictModel):
    """Open-source RTL: alkaid -> Verilog -> Verilator (bit-exact) [-> yosys LUT count]."""

    enabled: bool = False
    latency_cutoff: float | None = Field(default=None, gt=0, description="alkaid pipelining (None: combinational)")
    n_samples: int = Field(default=1000, ge=1)
    yosys: bool = True
    yosys_timeout_s: int = Field(default=600, ge=1)


class FirmwareConfig(StrictModel):
    """One FPGA target: part, clock, backend, I/O and per-layer implementation choices."""

    route: Literal["auto", "hls4ml", "alkaid"] = Field(
        default="auto", description="auto: hls4ml when it converts the network bit-exactly, else alkaid (Verilog)")
    part: str = "xcvu13p-flga2577-2-e"
    clock_period_ns: float = Field(default=5.0, gt=0)
    backend: Literal["Vitis", "Vivado"] = "Vitis"
    io_type: Literal["io_parallel", "io_stream"] = "io_parallel"
    project_name: str = Field(default="simcompress_gen", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    strategy: Literal["Latency", "Resource"] = "Latency"
    reuse_factor: int = Field(default=1, ge=1)
    layers: dict[str, LayerFirmware] = Field(default_factory=dict)
    budget: Budget | None = None
    check: CheckConfig = CheckConfig()
    rtl: RTLConfig = RTLConfig()


def load_firmware_config(path: str | os.PathLike[str]) -> FirmwareConfig:
    return load_yaml(FirmwareConfig, path)
