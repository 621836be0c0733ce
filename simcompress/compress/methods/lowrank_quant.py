"""Low rank followed by quantization: factorize, then quantize the factors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from torch import nn

from ..base import CompressionResult, MethodConfig, register_method
from ..modules import Factorized
from ._common import ALL_LAYER_TYPES, record
from ._quant import QuantSpec, quantize_weight_
from .svd import SVDOptions, factorize_layers

__all__ = ["LowRankQuantConfig", "lowrank_quant"]


class LowRankQuantConfig(MethodConfig):
    """Truncated SVD (``svd``: as :class:`~simcompress.compress.methods.svd.SVDConfig`)
    then weight quantization (``weights``) of both factors of every factorized
    layer (and of layers kept unfactorized), so the gains multiply."""

    method: ClassVar[str] = "lowrank_quant"
    svd: SVDOptions = SVDOptions(energy=0.95)
    weights: QuantSpec = QuantSpec()
    types: tuple[str, ...] = ALL_LAYER_TYPES


@register_method(LowRankQuantConfig)
def lowrank_quant(model: nn.Module, config: LowRankQuantConfig, **_: Any) -> CompressionResult:
    recs = []
    for r in factorize_layers(model, config, config.svd, "lowrank_quant"):
        mod = model.get_submodule(r.name)
        parts = list(mod) if isinstance(mod, Factorized) else [mod]
        for p in parts:
            quantize_weight_(p, config.weights)
        now = record(r.name, r.kind, mod, mod)
        recs.append(replace(r, params_after=now.params_after, bits_after=now.bits_after,
                            details={**r.details, "weight_bits": config.weights.bits}))
    return CompressionResult(model, config, tuple(recs))
