"""Mixed precision: per-layer weight bit widths from measured sensitivity under a bit budget."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from ...errors import ConfigError
from ..base import CompressionResult, MethodConfig, register_method
from ..modules import Layer
from ..parametrizations import clone_model
from ._common import ALL_LAYER_TYPES, LAYER_TYPES, collect_outputs, record, targets, types_from_names
from ._quant import QuantSpec, quantize_weight_

__all__ = ["MixedPrecisionConfig", "mixed_precision"]


class MixedPrecisionConfig(MethodConfig):
    """Choose a weight bit width per layer from ``candidate_bits`` so that the
    parameter-weighted mean width is at most ``avg_bits``.

    Sensitivity of layer ``l`` at ``b`` bits is the relative squared error of
    the model output (``sensitivity="output"``, needs ``calibration=``) or of
    the layer weight (``"weight"``) when only that layer is quantized. A greedy
    search starts every layer at the widest candidate and repeatedly narrows the
    layer whose next step costs the least added sensitivity per bit saved,
    until the budget holds.
    """

    method: ClassVar[str] = "mixed_precision"
    candidate_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
    avg_bits: float = Field(5.0, gt=0)
    sensitivity: Literal["output", "weight"] = "output"
    weights: QuantSpec = QuantSpec()
    types: tuple[str, ...] = ALL_LAYER_TYPES

    @field_validator("candidate_bits")
    @classmethod
    def _bits(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(b < 2 or b > 16 for b in v):
            msg = "candidate_bits must be non-empty integers in [2, 16]"
            raise ValueError(msg)
        return tuple(sorted(set(v)))


def _sensitivity(model: nn.Module, name: str, bits: int, config: MixedPrecisionConfig, ref: torch.Tensor | None, calibration: Any) -> float:
    trial = clone_model(model)
    mod: Layer = trial.get_submodule(name)
    spec = config.weights.model_copy(update={"bits": bits})
    if config.sensitivity == "weight":
        w = mod.weight.detach().to(torch.float64)
        quantize_weight_(mod, spec)
        wq = mod.weight.detach().to(torch.float64)
        return float(((wq - w) ** 2).sum() / max(float((w**2).sum()), 1e-300))
    quantize_weight_(mod, spec)
    out = collect_outputs(trial, calibration)
    assert ref is not None
    return float(((out - ref) ** 2).sum() / max(float((ref**2).sum()), 1e-300))


@register_method(MixedPrecisionConfig)
def mixed_precision(model: nn.Module, config: MixedPrecisionConfig, calibration: Any = None, **_: Any) -> CompressionResult:
    layers = targets(model, config, types_from_names(config.types, LAYER_TYPES, config.method), subclasses=True)
    if config.sensitivity == "output" and calibration is None:
        msg = "mixed_precision: sensitivity='output' needs calibration=... (or set sensitivity: weight)"
        raise ConfigError(msg)
    cands = config.candidate_bits
    if config.avg_bits < cands[0]:
        msg = f"mixed_precision.avg_bits={config.avg_bits} is below the narrowest candidate {cands[0]}"
        raise ConfigError(msg)
    ref = collect_outputs(model, calibration) if config.sensitivity == "output" else None
    sens: dict[str, dict[int, float]] = {}
    numel: dict[str, int] = {}
    for name, mod in layers:
        numel[name] = mod.weight.numel()
        sens[name] = {b: _sensitivity(model, name, b, config, ref, calibration) for b in cands}
    choice = {name: len(cands) - 1 for name, _ in layers}
    total = sum(numel.values())

    def mean_bits() -> float:
        return sum(numel[n] * cands[i] for n, i in choice.items()) / total

    while mean_bits() > config.avg_bits + 1e-12:
        best = None
        for n, i in choice.items():
            if i == 0:
                continue
            cost = (sens[n][cands[i - 1]] - sens[n][cands[i]]) / (numel[n] * (cands[i] - cands[i - 1]))
            if best is None or cost < best[0]:
                best = (cost, n)
        if best is None:
            break
        choice[best[1]] -= 1
    recs = []
    for name, mod in layers:
        before = clone_model(mod)
        b = cands[choice[name]]
        quantize_weight_(mod, config.weights.model_copy(update={"bits": b}))
        recs.append(record(name, "mixed_precision", before, mod, weight_bits=b, sensitivity={str(k): v for k, v in sens[name].items()}))
    return CompressionResult(model, config, tuple(recs), extra={"mean_weight_bits": mean_bits()})
