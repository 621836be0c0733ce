"""``distill_gan``: GAN teacher -> smaller GAN (same-noise output matching, critic feature
matching, optional WGAN-GP fine-tuning); see :class:`~simcompress.distill.config.GANToGANConfig`."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ..compress.base import CompressionResult, register_method
from ..errors import ConfigError, UnsupportedLayerError
from ..generators.gan import Critic, GANGenerator
from .common import (
    _f,
    _finish,
    _freeze,
    _kind,
    _layer_stats,
    _n_params,
    _physics_terms,
    _teacher_fingerprint,
    build_student,
    draw_pool,
    mmd,
    student_builder,
)
from .config import GANToGANConfig
from .students import check_firmware_layers
from .train import Trainer, fingerprint_of

__all__ = ["distill_gan"]


@student_builder(GANToGANConfig)
def _gan_student(teacher: Any, config: GANToGANConfig) -> GANGenerator:
    """A smaller GAN with the teacher's architecture except the generator's widths: the same critic
    features, minibatch std, response mode and tables (a copy of its response calibration)."""
    sa = config.student
    arch = teacher.arch.model_copy(
        update={"hidden": [sa.width] * sa.depth, "negative_slope": sa.negative_slope, "batchnorm": sa.batchnorm}
    )
    latent = teacher.latent_dim if config.latent_dim is None else config.latent_dim
    if latent > teacher.latent_dim:
        msg = f"distill_gan: latent_dim {latent} is wider than the teacher's noise ({teacher.latent_dim}); allowed: 1..{teacher.latent_dim}"
        raise ConfigError(msg)
    student = GANGenerator(teacher.geometry, latent_dim=latent, energy_range_mev=teacher.energy_range_mev, arch=arch)
    student.critic.load_state_dict(teacher.critic.state_dict())
    if arch.response_mode == "calibrated":
        student.resp_mean.copy_(teacher.resp_mean)
        student.resp_std.copy_(teacher.resp_std)
    return student


def _critic_hidden(critic: Critic, feats: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Penultimate activations of the teacher's critic (feature matching, Salimans et al. 2016)."""
    h = critic.body_input(feats, c)
    for layer in list(critic.body)[:-1]:
        h = layer(h)
    return h


@register_method(GANToGANConfig)
def distill_gan(
    model: nn.Module, config: GANToGANConfig, gate: Any = None, reference: Any = None, **_: Any
) -> CompressionResult:
    """GAN teacher -> smaller GAN: same-noise output matching + critic feature matching,
    then optional WGAN-GP fine-tuning against reference showers."""
    if not isinstance(model, GANGenerator):
        msg = f"distill_gan: teacher must be a GAN generator (kind 'gan'), got kind {_kind(model)!r}"
        raise UnsupportedLayerError(msg)
    sa = config.student
    if sa.activation != "leaky_relu":
        msg = f"distill_gan: student.activation must be 'leaky_relu' (the GAN kind's activation), got {sa.activation!r}"
        raise ConfigError(msg)
    if config.adversarial_steps > 0 and config.adversarial_real == "reference" and reference is None:
        msg = (
            "distill_gan: adversarial_steps > 0 with adversarial_real 'reference' needs reference showers "
            "(reference=(energies, showers), CLI --reference); adversarial_real 'teacher' needs none"
        )
        raise ConfigError(msg)
    t0 = time.perf_counter()
    teacher = model
    _freeze(teacher)
    critic_t = teacher.critic
    _freeze(critic_t)
    student = build_student(teacher, config)
    pt, ps = _n_params(teacher.network), _n_params(student.network)
    if ps > config.max_param_fraction * pt:
        msg = (
            f"distill_gan: student has {ps} parameters, more than max_param_fraction={config.max_param_fraction} "
            f"of the teacher's {pt}; reduce student.width/depth"
        )
        raise ConfigError(
            msg
        )
    if config.firmware:
        check_firmware_layers(student.network, "distill_gan student")
    fp = fingerprint_of(config.to_dict(), _teacher_fingerprint(teacher))

    def feats(gen: GANGenerator, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return gen.features(x, e, threshold_mev=config.feature_threshold_mev, sparsity_sharpness=config.sparsity_sharpness)

    pool = draw_pool(teacher, config, fp)
    onehot = student.onehot
    c_pool = student.condition(pool.e)
    with torch.no_grad():
        xt_raw = teacher.postprocess(pool.y, pool.e, threshold=False)
        f_pool = feats(teacher, xt_raw, pool.e)
        h_pool = _critic_hidden(critic_t, f_pool, c_pool)
    f_scale = critic_t.feat_std
    lt_pool, scale = _layer_stats(xt_raw, pool.e, onehot)
    k = int(student.latent_dim)
    w = config.physics
    summary_cols = torch.as_tensor(student.moment_columns(), dtype=torch.long)
    summary_scale = f_scale[summary_cols]

    def distill_loss(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
        e, c = pool.e[idx], c_pool[idx]
        y = student.network(pool.z[idx, :k], c)  # same noise: the student reads the teacher's first k coordinates
        xs = student.postprocess(y, e, threshold=False)
        fs = feats(student, xs, e)
        lo = ((fs - f_pool[idx]) / f_scale).pow(2).mean()
        lf = (_critic_hidden(critic_t, fs, c) - h_pool[idx]).pow(2).mean()
        ll, ltot = _physics_terms(xs, lt_pool[idx], e, onehot, scale)
        loss = config.weight_output * lo + config.weight_features * lf + w.layer_energies * ll + w.total_energy * ltot
        parts = {"output": _f(lo), "features": _f(lf), "layer_energies": _f(ll), "total_energy": _f(ltot)}
        if config.weight_shape > 0:
            ls = ((fs[:, summary_cols] - f_pool[idx][:, summary_cols]) / summary_scale).pow(2).mean()
            loss = loss + config.weight_shape * ls
            parts["shape"] = _f(ls)
        if config.feature_mmd > 0:
            # the batch as a sample (same incident energies): where the same-noise terms compare shower by
            # shower, this compares the spread of log total, layer fractions and shapes as distributions
            lm = mmd(fs[:, summary_cols] / summary_scale, f_pool[idx][:, summary_cols] / summary_scale)
            loss = loss + config.feature_mmd * lm
            parts["feature_mmd"] = _f(lm)
        return loss, parts, fs, c

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        loss, parts, _, _ = distill_loss(idx)
        parts["loss"] = _f(loss)
        return loss, parts

    phases: dict[str, list[dict[str, float]]] = {}
    trainer = Trainer("gan_to_gan", {"student": student.network}, config.training, fp)
    phases["gan_to_gan"] = trainer.run(loss_fn, len(pool), "GAN -> small GAN")

    if config.adversarial_steps > 0:
        # teacher: the pool's own showers, fine-tuning toward the teacher; reference: toward the reference
        real = (f_pool, c_pool) if config.adversarial_real == "teacher" else _reference_features(student, reference, feats)
        phases["adversarial"] = _adversarial(student, config, real, distill_loss, fp, len(pool))
    return _finish(teacher, student, config, phases, t0, gate=gate)


def _reference_features(student: Any, reference: Any, feats: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic features and conditions of reference showers ``(energies (N,), showers (N, V))``."""
    e_ref = torch.as_tensor(np.asarray(reference[0]), dtype=torch.float32).reshape(-1)
    x_ref = torch.as_tensor(np.asarray(reference[1]), dtype=torch.float32)
    if x_ref.ndim != 2 or x_ref.shape[0] != e_ref.shape[0] or x_ref.shape[1] != student.geometry.n_voxels:
        msg = (
            f"reference: need energies (N,) and showers (N, {student.geometry.n_voxels}), got {tuple(e_ref.shape)} "
            f"and {tuple(x_ref.shape)}"
        )
        raise ConfigError(
            msg
        )
    with torch.no_grad():
        return feats(student, x_ref, e_ref), student.condition(e_ref)


def _adversarial(
    student: Any,
    config: GANToGANConfig,
    real: tuple[torch.Tensor, torch.Tensor],
    distill_loss: Any,
    fp: str,
    pool_size: int,
) -> list[dict[str, float]]:
    """WGAN-GP fine-tuning of the student against ``real`` (critic features, conditions): the reference's
    or the teacher pool's showers, starting from the teacher's critic.

    The critic gets its own Adam inside the step; its weights are checkpointed with the student
    (its optimizer moments are not, so a resumed adversarial phase is not bit-identical).
    """
    f_ref, c_ref = real
    critic = student.critic
    for p in critic.parameters():
        p.requires_grad_(True)
    critic.train()
    opt_c = torch.optim.Adam(critic.parameters(), lr=config.adversarial_lr, betas=(0.5, 0.9))
    n_ref = f_ref.shape[0]

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        ridx = torch.randint(n_ref, (idx.shape[0],), generator=gen)
        ld, parts, fs, c = distill_loss(idx)
        # critic step (WGAN-GP, lambda = 10) on real vs student features
        fr, cr = f_ref[ridx], c_ref[ridx]
        fake = fs.detach()
        eps = torch.rand(fr.shape[0], 1, generator=gen)
        mix = (eps * fr + (1 - eps) * fake).requires_grad_(True)
        cm = eps * cr + (1 - eps) * c
        grad = torch.autograd.grad(critic(mix, cm).sum(), mix, create_graph=True)[0]
        gp = (grad.norm(dim=1) - 1).pow(2).mean()
        lc = critic(fake, c).mean() - critic(fr, cr).mean() + 10.0 * gp
        opt_c.zero_grad(set_to_none=True)
        lc.backward()
        opt_c.step()
        # generator step: adversarial + distillation
        for p in critic.parameters():
            p.requires_grad_(False)
        lg = -critic(fs, c).mean()
        for p in critic.parameters():
            p.requires_grad_(True)
        loss = lg + config.adversarial_distill_weight * ld
        parts.update(critic=_f(lc), adversarial=_f(lg), loss=_f(loss))
        return loss, parts

    trainer = Trainer(
        "adversarial",
        {"student": student.network, "critic": critic},
        config.training,
        fp,
        steps=config.adversarial_steps,
        lr=config.adversarial_lr,
        seed_offset=1,
        optimize=("student",),
        betas=(0.5, 0.9),
    )
    history = trainer.run(loss_fn, pool_size, "adversarial fine-tuning")
    critic.eval()
    for p in critic.parameters():
        p.requires_grad_(False)
    return history
