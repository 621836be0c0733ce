"""Post-training integer quantization (weights and, optionally, layer inputs)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from ..base import CompressionResult, MethodConfig, register_method
from ..parametrizations import clone_model
from ._common import ALL_LAYER_TYPES, LAYER_TYPES, record, targets, types_from_names
from ._quant import ActSpec, QuantSpec, calibrate_inputs, quantize_weight_

__all__ = ["PTQConfig", "ptq"]


class PTQConfig(MethodConfig):
    """Post-training quantization.

    ``weights`` quantizes each selected layer's weight (biases stay float32 and
    are counted at 32 bits); ``activations`` (optional) adds a calibrated
    per-tensor quantizer on each selected layer's input, calibrated from the
    ``calibration=`` data passed to :func:`~simcompress.compress.compress`.
    """

    method: ClassVar[str] = "ptq"
    weights: QuantSpec | None = QuantSpec()
    activations: ActSpec | None = None
    types: tuple[str, ...] = ALL_LAYER_TYPES


def apply_ptq(model: nn.Module, config: PTQConfig, calibration: Any = None, kind: str = "ptq") -> list:
    layers = targets(model, config, types_from_names(config.types, LAYER_TYPES, config.method), subclasses=True)
    befores = {n: clone_model(m) for n, m in layers}
    if config.weights is not None:
        for _name, mod in layers:
            quantize_weight_(mod, config.weights)
    act = {}
    if config.activations is not None:
        act = calibrate_inputs(model, layers, config.activations, calibration)
    recs = []
    for name, mod in layers:
        details: dict[str, Any] = {}
        if config.weights is not None:
            details["weight_bits"] = config.weights.bits
            details["granularity"] = config.weights.granularity
            details["calibration"] = config.weights.calibration
        if name in act:
            details["input_bits"] = act[name].bits
            details["input_scale"] = float(act[name].scale)
            details["input_zero_point"] = float(act[name].zero_point)
        recs.append(record(name, kind, befores[name], mod, **details))
    return recs


@register_method(PTQConfig)
def ptq(model: nn.Module, config: PTQConfig, calibration: Any = None, **_: Any) -> CompressionResult:
    recs = apply_ptq(model, config, calibration)
    return CompressionResult(model, config, tuple(recs))
