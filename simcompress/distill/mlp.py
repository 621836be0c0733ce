"""``distill_mlp``: any generator -> feed-forward MLP student (same-noise regression plus
physics terms); see :class:`~simcompress.distill.config.ToMLPConfig`."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ..compress.base import CompressionResult, register_method
from ..errors import UnsupportedLayerError
from ..generators.base import ShowerGenerator
from .common import (
    _f,
    _finish,
    _freeze,
    _layer_stats,
    _physics_terms,
    _shape_stats,
    _teacher_fingerprint,
    build_student,
    draw_pool,
    mmd,
    shape_basis,
    shape_features,
    student_builder,
)
from .config import ToMLPConfig
from .students import MLPGenerator, check_firmware_layers
from .train import Trainer, fingerprint_of

__all__ = ["distill_mlp"]


@student_builder(ToMLPConfig)
def _mlp_student(teacher: Any, config: ToMLPConfig) -> MLPGenerator:
    sa = config.student
    return MLPGenerator(
        teacher.geometry,
        latent_dim=teacher.latent_dim,
        energy_range_mev=teacher.energy_range_mev,
        width=sa.width,
        depth=sa.depth,
        activation=sa.activation,
        negative_slope=sa.negative_slope,
        batchnorm=sa.batchnorm,
        log_offset=config.log_offset,
        threshold_mev=float(getattr(teacher, "threshold_mev", getattr(teacher, "noise_mev", 0.0))),
    )


@register_method(ToMLPConfig)
def distill_mlp(model: nn.Module, config: ToMLPConfig, gate: Any = None, **_: Any) -> CompressionResult:
    """Any generator -> feed-forward MLP student: same-noise regression + physics terms."""
    if not isinstance(model, ShowerGenerator):
        msg = f"distill_mlp: teacher must be a ShowerGenerator, got {type(model).__name__}"
        raise UnsupportedLayerError(msg)
    t0 = time.perf_counter()
    teacher = model
    _freeze(teacher)
    student = build_student(teacher, config)
    if config.firmware:
        check_firmware_layers(student.network, "distill_mlp student")
    fp = fingerprint_of(config.to_dict(), _teacher_fingerprint(teacher))
    pool = draw_pool(teacher, config, fp)
    student.set_standardisation(pool.showers, pool.e)
    target = student.target(pool.showers, pool.e)
    c_pool = student.condition(pool.e)
    onehot = student.onehot
    lt_pool, scale = _layer_stats(pool.showers, pool.e, onehot)
    w = config.physics
    if config.shape_features > 0 or config.shape_mmd > 0:
        basis = shape_basis(teacher.geometry)
        sf_pool, sf_scale = _shape_stats(pool.showers, onehot, basis)
        sf_mean = sf_pool.mean(0)
        lt_mean = lt_pool.mean(0)

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        y = student.network(pool.z[idx], c_pool[idx])
        lv = (y - target[idx]).pow(2).mean()
        loss = config.weight_voxels * lv
        parts = {"voxels": _f(lv)}
        if w.layer_energies > 0 or w.total_energy > 0 or config.shape_features > 0 or config.shape_mmd > 0:
            xs = student.postprocess(y, pool.e[idx], threshold=False)
            if w.layer_energies > 0 or w.total_energy > 0:
                ll, lt = _physics_terms(xs, lt_pool[idx], pool.e[idx], onehot, scale)
                loss = loss + w.layer_energies * ll + w.total_energy * lt
                parts.update(layer_energies=_f(ll), total_energy=_f(lt))
            if config.shape_features > 0 or config.shape_mmd > 0:
                fs = (shape_features(xs, onehot, basis) - sf_mean) / sf_scale
                ft = (sf_pool[idx] - sf_mean) / sf_scale
            if config.shape_features > 0:
                ls = (fs - ft).pow(2).mean()
                loss = loss + config.shape_features * ls
                parts["shape_features"] = _f(ls)
            if config.shape_mmd > 0:
                # the batch as a sample: centres, widths and layer fractions against the teacher's, standardised
                ls_frac = (xs @ onehot / pool.e[idx, None] - lt_mean) / scale[:-1]
                lt_frac = (lt_pool[idx] - lt_mean) / scale[:-1]
                lm = mmd(torch.cat([fs, ls_frac], 1), torch.cat([ft, lt_frac], 1))
                loss = loss + config.shape_mmd * lm
                parts["shape_mmd"] = _f(lm)
        parts["loss"] = _f(loss)
        return loss, parts

    trainer = Trainer("to_mlp", {"student": student.network}, config.training, fp)
    history = trainer.run(loss_fn, len(pool), f"{teacher.kind} -> MLP")
    return _finish(teacher, student, config, {"to_mlp": history}, t0, gate=gate, firmware_layers_checked=config.firmware)
