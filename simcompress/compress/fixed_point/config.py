"""Configs of the fixed-point methods: how each ap_fixed type is chosen, globally and per layer.

>>> FixedSpec(width=8).build(-1.5, 2.7, True, "demo").to_hls()
'ap_fixed<8,3,AP_RND,AP_SAT>'
"""

from __future__ import annotations

import fnmatch
from typing import ClassVar

from pydantic import Field, model_validator

from ..._config import StrictModel
from ...errors import ConfigError
from ..base import MethodConfig
from .types import OVERFLOW_MODES, ROUNDING_MODES, FixedType, integer_bits_for_range

__all__ = ["FixedPointConfig", "FixedSpec", "LayerPrecision", "QATFixedPointConfig", "match_override"]


class FixedSpec(StrictModel):
    """How to build one fixed-point type: ``integer: null`` means "from the observed range"."""

    width: int = Field(ge=1, le=53)
    integer: int | None = None
    signed: bool | None = None
    rounding: str = "RND"
    overflow: str = "SAT"
    headroom: int = Field(default=0, ge=0, le=16)

    @model_validator(mode="after")
    def _check_modes(self) -> FixedSpec:
        if self.rounding not in ROUNDING_MODES:
            msg = f"rounding must be one of {', '.join(ROUNDING_MODES)}"
            raise ValueError(msg)
        if self.overflow not in OVERFLOW_MODES:
            msg = f"overflow must be one of {', '.join(OVERFLOW_MODES)}"
            raise ValueError(msg)
        return self

    def build(self, lo: float | None, hi: float | None, default_signed: bool, what: str) -> FixedType:
        signed = default_signed if self.signed is None else self.signed
        if self.integer is not None:
            integer = self.integer
        else:
            if lo is None or hi is None:
                msg = f"{what}: integer bits not given and no calibration range observed; set 'integer'"
                raise ConfigError(msg)
            if not signed:
                lo = max(lo, 0.0)
            integer = integer_bits_for_range(lo, hi, signed) + self.headroom
        return FixedType(self.width, integer, signed, self.rounding, self.overflow)


class LayerPrecision(StrictModel):
    """Per-layer overrides, keyed by an fnmatch pattern on the module name."""

    weight: FixedSpec | None = None
    bias: FixedSpec | None = None
    result: FixedSpec | None = None
    activation: FixedSpec | None = None
    param: FixedSpec | None = None


class FixedPointConfig(MethodConfig):
    """Post-training quantization onto HLS fixed-point types (see :mod:`simcompress.compress.fixed_point.methods`)."""

    method: ClassVar[str] = "fixed_point"
    network: str | None = None
    input: FixedSpec = FixedSpec(width=12, headroom=0)
    weight: FixedSpec = FixedSpec(width=8)
    bias: FixedSpec = FixedSpec(width=12)
    result: FixedSpec = FixedSpec(width=16, headroom=1)
    activation: FixedSpec = FixedSpec(width=16, headroom=1)
    param: FixedSpec = FixedSpec(width=16, signed=False)
    layers: dict[str, LayerPrecision] = Field(default_factory=dict)
    calibration_samples: int = Field(default=4096, ge=16)
    seed: int = 0
    fold_batchnorm: bool = True


class QATFixedPointConfig(FixedPointConfig):
    """Fixed-point fake quantization with straight-through gradients, for training."""

    method: ClassVar[str] = "qat_fixed_point"
    result: FixedSpec = FixedSpec(width=16, headroom=2)
    activation: FixedSpec = FixedSpec(width=16, headroom=2)


def match_override(cfg: FixedPointConfig, name: str, field: str) -> FixedSpec | None:
    """The first per-layer override of ``field`` whose pattern matches ``name``, or None."""
    for pattern, lp in cfg.layers.items():
        if fnmatch.fnmatchcase(name, pattern):
            spec = getattr(lp, field)
            if spec is not None:
                return spec
    return None
