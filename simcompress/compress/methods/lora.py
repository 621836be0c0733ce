"""LoRA: train a low-rank update of a frozen model, then merge it."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from ...errors import UnsupportedLayerError
from ..base import CompressionResult, MethodConfig, register_method
from ..parametrizations import LoRA, parametrizations_of
from ._common import Trainer, record, require_trainer, targets

__all__ = ["LoRAConfig", "lora", "merge_lora_"]


class LoRAConfig(MethodConfig):
    """Add ``(alpha / rank) B A`` to each selected Linear's frozen weight (Hu et al.,
    arXiv:2106.09685), train only ``A, B`` for ``steps`` steps at ``lr`` (with the
    injected ``trainer=``, for example fine-tuning a generator to a new energy
    range), then merge (``merge=True``) so the result is the original architecture.
    """

    method: ClassVar[str] = "lora"
    rank: int = Field(4, ge=1)
    alpha: float = Field(4.0, gt=0)
    steps: int = Field(200, ge=0)
    lr: float = Field(1e-3, gt=0)
    merge: bool = True
    seed: int = 0


def merge_lora_(module: nn.Module) -> None:
    """Fold the LoRA update into ``module.weight`` (in place)."""
    if any(isinstance(p, LoRA) for p in parametrizations_of(module, "weight")):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


@register_method(LoRAConfig)
def lora(model: nn.Module, config: LoRAConfig, trainer: Trainer | None = None, **_: Any) -> CompressionResult:
    layers = targets(model, config, (nn.Linear,), subclasses=True)
    for name, mod in layers:
        if parametrize.is_parametrized(mod, "weight"):
            kinds = [type(p).__name__ for p in parametrizations_of(mod, "weight")]
            msg = f"lora: layer {name!r} already carries {kinds} on its weight; apply LoRA before quantizing or pruning"
            raise UnsupportedLayerError(msg)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(config.seed)
    before_w = {}
    for name, mod in layers:
        before_w[name] = mod.weight.detach().clone()
        parametrize.register_parametrization(
            mod, "weight", LoRA(mod.out_features, mod.in_features, config.rank, config.alpha, generator=g).to(mod.weight.dtype)
        )
    if config.steps:
        require_trainer(trainer, config.method)(model, config.steps, config.lr)
    recs = []
    for name, mod in layers:
        delta = float(torch.linalg.norm(mod.weight.detach() - before_w[name]))
        if config.merge:
            merge_lora_(mod)
        recs.append(record(name, "lora", mod, mod, rank=config.rank, update_norm=delta, merged=config.merge))
    for n, p in model.named_parameters():
        p.requires_grad_(flags.get(n.replace(".parametrizations.weight.original", ".weight"), True))
    return CompressionResult(model, config, tuple(recs), extra={"trained_steps": config.steps})
