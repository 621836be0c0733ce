"""Unstructured magnitude pruning, layer-wise or global, as mask parametrizations."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..base import CompressionResult, MethodConfig, register_method
from ..modules import Layer
from ..parametrizations import Mask, clone_model
from ._common import ALL_LAYER_TYPES, LAYER_TYPES, record, targets, types_from_names

__all__ = ["MagnitudePruneConfig", "magnitude_prune", "prune_to_sparsity_", "set_mask_"]


class MagnitudePruneConfig(MethodConfig):
    """Zero the smallest-magnitude weights: ``sparsity`` of each layer
    (``scope="layer"``) or of all selected weights together (``scope="global"``).
    Magnitudes are those of the effective weight (after earlier masks or quantizers).
    """

    method: ClassVar[str] = "magnitude_prune"
    sparsity: float = Field(0.5, ge=0.0, lt=1.0)
    scope: Literal["layer", "global"] = "layer"
    types: tuple[str, ...] = ALL_LAYER_TYPES


def set_mask_(module: Layer, keep: Tensor) -> None:
    """AND ``keep`` into the module's weight mask, creating the mask parametrization if needed."""
    for p in (module.parametrizations["weight"] if parametrize.is_parametrized(module, "weight") else []):
        if isinstance(p, Mask):
            p.mask = p.mask & keep.to(torch.bool)
            return
    parametrize.register_parametrization(module, "weight", Mask(keep))


def _kth_threshold(scores: Tensor, n_prune: int) -> Tensor:
    if n_prune <= 0:
        return torch.tensor(-1.0, dtype=scores.dtype)
    return torch.kthvalue(scores.reshape(-1), n_prune).values


def prune_to_sparsity_(layers: list[tuple[str, Layer]], sparsity: float, scope: str) -> None:
    """Mask weights of ``layers`` in place so each (or all together) reach ``sparsity``.

    Exactly ``round(sparsity * n)`` weights are pruned; ties at the threshold
    are broken by position (stable order), so the count is exact.
    """
    with torch.no_grad():
        weights = [m.weight.detach().abs().to(torch.float64) for _, m in layers]
        if scope == "global":
            flat = torch.cat([w.reshape(-1) for w in weights])
            n_prune = round(sparsity * flat.numel())
            order = torch.argsort(flat, stable=True)
            keep_flat = torch.ones_like(flat, dtype=torch.bool)
            keep_flat[order[:n_prune]] = False
            keeps = list(torch.split(keep_flat, [w.numel() for w in weights]))
            keeps = [k.reshape(w.shape) for k, w in zip(keeps, weights, strict=False)]
        else:
            keeps = []
            for w in weights:
                n_prune = round(sparsity * w.numel())
                order = torch.argsort(w.reshape(-1), stable=True)
                k = torch.ones(w.numel(), dtype=torch.bool)
                k[order[:n_prune]] = False
                keeps.append(k.reshape(w.shape))
        for (_, mod), keep in zip(layers, keeps, strict=False):
            set_mask_(mod, keep)


@register_method(MagnitudePruneConfig)
def magnitude_prune(model: nn.Module, config: MagnitudePruneConfig, **_: Any) -> CompressionResult:
    layers = targets(model, config, types_from_names(config.types, LAYER_TYPES, config.method), subclasses=True)
    befores = {n: clone_model(m) for n, m in layers}
    prune_to_sparsity_(layers, config.sparsity, config.scope)
    recs = []
    for name, mod in layers:
        w = mod.weight.detach()
        recs.append(record(name, "magnitude_prune", befores[name], mod, sparsity=1 - int(torch.count_nonzero(w)) / w.numel()))
    return CompressionResult(model, config, tuple(recs))
