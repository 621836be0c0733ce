"""Gradual magnitude pruning with a polynomial sparsity schedule during fine-tuning."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..base import CompressionResult, MethodConfig, register_method
from ..parametrizations import clone_model
from ._common import ALL_LAYER_TYPES, LAYER_TYPES, Trainer, record, require_trainer, targets, types_from_names
from .magnitude_prune import prune_to_sparsity_

__all__ = ["GradualPruneConfig", "gradual_prune", "polynomial_sparsity"]


def polynomial_sparsity(step: int, initial: float, final: float, total: int, power: float = 3.0) -> float:
    """Zhu & Gupta (arXiv:1710.01878) schedule: ``s_f + (s_i - s_f) (1 - t/T)^power``, clamped to ``[0, T]``.

    >>> polynomial_sparsity(0, 0.5, 0.9, 100), polynomial_sparsity(100, 0.5, 0.9, 100)
    (0.5, 0.9)
    """
    t = min(max(step, 0), total)
    frac = 1.0 - t / total if total > 0 else 0.0
    return final + (initial - final) * frac**power


class GradualPruneConfig(MethodConfig):
    """Prune from ``initial_sparsity`` to ``final_sparsity`` over ``steps`` fine-tuning
    steps, updating the masks every ``update_every`` steps along the polynomial schedule,
    then fine-tune ``recovery_steps`` more with the final masks fixed. Needs ``trainer=``.
    """

    method: ClassVar[str] = "gradual_prune"
    initial_sparsity: float = Field(0.5, ge=0.0, lt=1.0)
    final_sparsity: float = Field(0.9, ge=0.0, lt=1.0)
    steps: int = Field(400, ge=1)
    update_every: int = Field(50, ge=1)
    recovery_steps: int = Field(100, ge=0)
    power: float = Field(3.0, gt=0)
    lr: float = Field(1e-4, gt=0)
    scope: Literal["layer", "global"] = "global"
    types: tuple[str, ...] = ALL_LAYER_TYPES

    @model_validator(mode="after")
    def _order(self) -> GradualPruneConfig:
        if self.final_sparsity < self.initial_sparsity:
            msg = f"final_sparsity ({self.final_sparsity}) must be >= initial_sparsity ({self.initial_sparsity})"
            raise ValueError(msg)
        return self


@register_method(GradualPruneConfig)
def gradual_prune(model: nn.Module, config: GradualPruneConfig, trainer: Trainer | None = None, **_: Any) -> CompressionResult:
    train = require_trainer(trainer, config.method)
    layers = targets(model, config, types_from_names(config.types, LAYER_TYPES, config.method), subclasses=True)
    befores = {n: clone_model(m) for n, m in layers}
    schedule = []
    t = 0
    while True:
        s = polynomial_sparsity(t, config.initial_sparsity, config.final_sparsity, config.steps, config.power)
        prune_to_sparsity_(layers, s, config.scope)
        schedule.append({"step": t, "sparsity": s})
        if t >= config.steps:
            break
        n = min(config.update_every, config.steps - t)
        train(model, n, config.lr)
        t += n
    if config.recovery_steps:
        train(model, config.recovery_steps, config.lr)
    recs = []
    for name, mod in layers:
        w = mod.weight.detach()
        recs.append(record(name, "gradual_prune", befores[name], mod, sparsity=1 - int(torch.count_nonzero(w)) / w.numel()))
    return CompressionResult(model, config, tuple(recs), extra={"schedule": schedule})
