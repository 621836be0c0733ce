"""Quantization-aware training with straight-through estimators."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field
from torch import nn

from ..base import CompressionResult, register_method
from ..parametrizations import clone_model
from ._common import Trainer, record, require_trainer
from .ptq import PTQConfig, apply_ptq

__all__ = ["QATConfig", "qat"]


class QATConfig(PTQConfig):
    """Quantization-aware training: attach fake quantizers (as :class:`PTQConfig`),
    then train ``steps`` steps at ``lr`` through them. Rounding uses a
    straight-through estimator (identity gradient inside the clipping range,
    zero outside); scales stay at their calibrated values.
    """

    method: ClassVar[str] = "qat"
    steps: int = Field(200, ge=0)
    lr: float = Field(1e-4, gt=0)


@register_method(QATConfig)
def qat(model: nn.Module, config: QATConfig, calibration: Any = None, trainer: Trainer | None = None, **_: Any) -> CompressionResult:
    before = clone_model(model)
    recs = apply_ptq(model, config, calibration, kind="qat")
    if config.steps:
        require_trainer(trainer, config.method)(model, config.steps, config.lr)
        recs = [record(r.name, r.kind, before.get_submodule(r.name), model.get_submodule(r.name), **r.details) for r in recs]
    return CompressionResult(model, config, tuple(recs), extra={"trained_steps": config.steps})
