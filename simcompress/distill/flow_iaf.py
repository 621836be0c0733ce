"""``distill_flow_iaf``: MAF teacher -> IAF student by probability density distillation
(CaloFlow II, arXiv:2110.11377); see :class:`~simcompress.distill.config.FlowToIAFConfig`."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ..compress.base import CompressionResult, register_method
from ..errors import ConfigError, UnsupportedLayerError
from ..generators.flow import FlowGenerator
from .common import _f, _finish, _freeze, _kind, _teacher_fingerprint, build_student, draw_pool, student_builder
from .config import FlowToIAFConfig
from .students import IAFGenerator
from .train import Trainer, fingerprint_of

__all__ = ["distill_flow_iaf"]


@student_builder(FlowToIAFConfig)
def _iaf_student(teacher: Any, config: FlowToIAFConfig) -> IAFGenerator:
    sa = config.student
    return IAFGenerator.like(teacher, hidden=[sa.hidden] * sa.depth, n_blocks=sa.steps, transform=sa.transform, n_bins=sa.n_bins)


def _teacher_states(network: Any, y: torch.Tensor, c: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Density direction of a MAF network with every intermediate state ``[y, h_1, ..., z]``."""
    states = [y]
    logdet = torch.zeros(y.shape[0], dtype=y.dtype)
    h = y
    for block in network.blocks:
        h, ld = block(h, c)
        logdet = logdet + ld
        states.append(h)
    return states, logdet


@torch.no_grad()
def _state_scales(
    network: Any, y: torch.Tensor, c: torch.Tensor, batch: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-coordinate median and robust spread (1.4826 MAD, >= 1e-3) of every teacher state over the pool."""
    chunks = [_teacher_states(network, y[s : s + batch], c[s : s + batch])[0] for s in range(0, y.shape[0], batch)]
    medians, scales = [], []
    for k in range(len(chunks[0])):
        h = torch.cat([ch[k] for ch in chunks])
        med = h.median(dim=0).values
        medians.append(med)
        scales.append((1.4826 * (h - med).abs().median(dim=0).values).clamp_min(1e-3))
    return medians, scales


def _std_normal_logp(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.pow(2).sum(1) + z.shape[1] * float(np.log(2 * np.pi)))


@register_method(FlowToIAFConfig)
def distill_flow_iaf(model: nn.Module, config: FlowToIAFConfig, gate: Any = None, **_: Any) -> CompressionResult:
    """MAF teacher -> IAF student by probability density distillation (CaloFlow II, arXiv:2110.11377)."""
    if not isinstance(model, FlowGenerator) or _kind(model) != "flow":
        msg = f"distill_flow_iaf: teacher must be a masked autoregressive flow generator (kind 'flow'), got kind {_kind(model)!r}"
        raise UnsupportedLayerError(
            msg
        )
    t0 = time.perf_counter()
    teacher = model
    _freeze(teacher)
    sa = config.student
    hidden = [sa.hidden] * sa.depth
    student = build_student(teacher, config)
    same_blocks = len(student.network.blocks) == len(teacher.network.blocks)
    if sa.init == "teacher":
        if not same_blocks or hidden != teacher.hidden:
            msg = (
                "student.init 'teacher' needs the teacher's block count and MADE widths "
                f"(teacher: {len(teacher.network.blocks)} blocks, hidden {teacher.hidden}; student: "
                f"{len(student.network.blocks)} blocks, hidden {hidden})"
            )
            raise ConfigError(
                msg
            )
        for sb, tb in zip(student.network.blocks, teacher.network.blocks, strict=True):
            sb.made.load_state_dict(tb.made.state_dict())
    intermediate = config.intermediate and same_blocks
    fp = fingerprint_of(config.to_dict(), _teacher_fingerprint(teacher))
    pool = draw_pool(teacher, config, fp)
    c_pool = teacher.condition(pool.e)
    d = teacher.latent_dim
    medians, scales = _state_scales(teacher.network, pool.y, c_pool, config.training.pool_batch_size)
    clip = config.outlier_clip

    def dist(a: torch.Tensor, b: torch.Tensor, k: int, teacher_side: torch.Tensor | None = None) -> torch.Tensor:
        r = (a - b) / scales[k]
        if config.state_loss == "mse":
            per = r.pow(2)
        else:
            per = torch.nn.functional.huber_loss(r, torch.zeros_like(r), delta=config.huber_delta, reduction="none")
        if teacher_side is None or clip is None:
            return per.mean()
        # rare teacher samples far outside the bulk (|y| up to 1e5 in standardised flow space) are
        # not targets a one-pass student should chase: they would dominate every batch
        keep = ((teacher_side - medians[k]).abs() <= clip * scales[k]).to(per.dtype)
        return (per * keep).sum() / keep.sum().clamp_min(1.0)

    def match(a: list[torch.Tensor], b: list[torch.Tensor], ks: list[int], teacher_is_b: bool = False) -> torch.Tensor:
        return torch.stack([dist(a[k], b[k], k, b[k] if teacher_is_b else None) for k in ks]).mean()

    n_steps = len(student.network.blocks)

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        c = c_pool[idx]
        loss = torch.zeros(())
        parts: dict[str, float] = {}
        if config.weight_latent_pass > 0:
            # teacher pool sample y -> teacher states (fast density direction) -> student from the teacher's z
            with torch.no_grad():
                hs, _ = _teacher_states(teacher.network, pool.y[idx], c)
            gs, _ = student.network.sample_states(hs[-1], c)
            lz = match(gs, hs, list(range(n_steps)) if intermediate else [0], teacher_is_b=True)
            loss = loss + config.weight_latent_pass * lz
            parts["latent_pass"] = _f(lz)
        if config.weight_data_pass > 0 or config.weight_reverse_kl > 0:
            z = torch.randn(idx.shape[0], d, generator=gen)
            gs, ld_s = student.network.sample_states(z, c)
            hs, ld_t = _teacher_states(teacher.network, gs[0], c)
            if config.weight_data_pass > 0:
                ks = list(range(1, n_steps + 1)) if intermediate else [len(hs) - 1]
                lx = match(hs, gs, ks) if intermediate else dist(hs[-1], z, len(scales) - 1)
                loss = loss + config.weight_data_pass * lx
                parts["data_pass"] = _f(lx)
            if config.weight_reverse_kl > 0:
                log_q = _std_normal_logp(z) - ld_s
                log_p = _std_normal_logp(hs[-1]) + ld_t
                kl = (log_q - log_p).mean() / d
                loss = loss + config.weight_reverse_kl * kl
                parts["reverse_kl_per_dim"] = _f(kl)
        parts["loss"] = _f(loss)
        return loss, parts

    trainer = Trainer("flow_to_iaf", {"student": student.network}, config.training, fp)
    history = trainer.run(loss_fn, len(pool), "flow -> IAF")
    return _finish(teacher, student, config, {"flow_to_iaf": history}, t0, gate=gate, intermediate_states=intermediate)
