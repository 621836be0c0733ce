"""Registered distillation transforms: ``distill_flow_iaf``, ``distill_mlp``, ``distill_gan``.

Each receives the teacher (a copy, never the caller's object) and returns a
:class:`~simcompress.compress.base.CompressionResult` whose ``model`` is the student, an
ordinary :class:`~simcompress.generators.base.ShowerGenerator`. Optional keyword arguments,
injected by the caller (``compress`` never imports physics):

* ``gate``: a fidelity gate ``gate(model) -> GateResult``; evaluated on the teacher *and* on the
  student against the reference, both results in ``extra["fidelity"]``;
* ``reference``: ``(incident_energies (N,), showers (N, V))`` MeV arrays, needed for the
  adversarial fine-tuning of ``distill_gan``.

The report (``extra``) holds parameter counts, the loss history of every phase, the
same-noise agreement of student and teacher on fresh noise, and the sampling speed measured for
teacher and student in the same run at the configured batch sizes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ..compress.base import CompressionResult, GateResult, LayerRecord, register_method
from ..errors import ConfigError, UnsupportedLayerError
from .config import FlowToIAFConfig, GANToGANConfig, ToMLPConfig, _DistillBase
from .speed import compare_sampling_speed
from .train import Trainer, fingerprint_of, save_tensors_atomic

__all__ = ["Pool", "build_student", "distill_flow_iaf", "distill_gan", "distill_mlp", "draw_pool"]

log = logging.getLogger(__name__)


def _n_params(m: nn.Module) -> int:
    return int(sum(p.numel() for p in m.parameters()))


def _teacher_fingerprint(teacher: nn.Module) -> str:
    h = fingerprint_of(getattr(teacher, "config_dict", dict)())
    sums = [float(p.detach().double().sum()) for p in teacher.parameters()]
    return fingerprint_of(h, sums)


# --------------------------------------------------------------------------------------
# teacher pool: (z, E, teacher network output, teacher showers), drawn once with one seed
# --------------------------------------------------------------------------------------
@dataclass
class Pool:
    z: torch.Tensor
    e: torch.Tensor
    y: torch.Tensor
    showers: torch.Tensor

    def __len__(self) -> int:
        return int(self.z.shape[0])


def _pool_energies(teacher: Any, cfg: _DistillBase, n: int, gen: torch.Generator) -> torch.Tensor:
    lo, hi = teacher.energy_range_mev
    if cfg.discrete_energies_mev:
        vals = torch.tensor(cfg.discrete_energies_mev, dtype=torch.float32)
        if (vals <= 0).any():
            msg = "discrete_energies_mev: energies must be > 0 MeV"
            raise ConfigError(msg)
        return vals[torch.randint(len(vals), (n,), generator=gen)]
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))).to(torch.float32)


@torch.no_grad()
def draw_pool(teacher: Any, cfg: _DistillBase, fingerprint: str) -> Pool:
    """Teacher samples for fixed noise; cached in ``checkpoint_dir/pool.safetensors`` when set."""
    tc = cfg.training
    cache = Path(tc.checkpoint_dir) / "pool.safetensors" if tc.checkpoint_dir else None
    if cache is not None and cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("fingerprint") == fingerprint:
            t = load_file(str(cache))
            return Pool(t["z"], t["e"], t["y"], t["showers"])
        msg = f"{cache}: teacher pool of a different run; use another training.checkpoint_dir or delete it"
        raise ConfigError(msg)
    gen = torch.Generator().manual_seed(int(tc.seed))
    n = tc.pool_size
    e = _pool_energies(teacher, cfg, n, gen)
    z = torch.randn(n, teacher.latent_dim, generator=gen)
    teacher.eval()
    ys, xs = [], []
    from rich.progress import Progress

    with Progress(disable=not tc.progress) as bar:
        task = bar.add_task("teacher samples", total=n)
        for s in range(0, n, tc.pool_batch_size):
            zb, eb = z[s : s + tc.pool_batch_size], e[s : s + tc.pool_batch_size]
            y = teacher.network(zb, teacher.condition(eb))
            ys.append(y)
            xs.append(teacher.postprocess(y, eb))
            bar.update(task, advance=zb.shape[0])
    pool = Pool(z, e, torch.cat(ys), torch.cat(xs))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_tensors_atomic(
            {"z": pool.z, "e": pool.e, "y": pool.y, "showers": pool.showers}, cache, metadata={"fingerprint": fingerprint}
        )
    return pool


def build_student(teacher: Any, config: _DistillBase) -> Any:
    """The untrained student a config asks for (architecture from the config, the rest from the teacher).

    IAF: the teacher's preprocessing, standardisation buffers and permutations; MLP: the
    teacher's latent width, energy range and voxel threshold; GAN: the teacher's output
    parametrisation and a copy of its critic (for feature matching and fine-tuning).
    """
    if isinstance(config, FlowToIAFConfig):
        from .students import IAFGenerator

        sa = config.student
        return IAFGenerator.like(teacher, hidden=[sa.hidden] * sa.depth, n_blocks=sa.steps)
    if isinstance(config, ToMLPConfig):
        from .students import MLPGenerator

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
    if isinstance(config, GANToGANConfig):
        from ..generators.gan import GANGenerator

        sa = config.student
        student = GANGenerator(
            teacher.geometry,
            latent_dim=teacher.latent_dim,
            energy_range_mev=teacher.energy_range_mev,
            hidden=[sa.width] * sa.depth,
            negative_slope=sa.negative_slope,
            batchnorm=sa.batchnorm,
            response_scale=teacher.response_scale,
            threshold_mev=teacher.threshold_mev,
            critic_hidden=teacher.critic_hidden,
        )
        student.critic.load_state_dict(teacher.critic.state_dict())
        return student
    msg = f"build_student: not a distillation config: {type(config).__name__}"
    raise ConfigError(msg)


# --------------------------------------------------------------------------------------
# shared report pieces
# --------------------------------------------------------------------------------------
def _gate_dict(r: GateResult) -> dict[str, Any]:
    return {"passed": bool(r.passed), "summary": r.summary, "metrics": r.metrics}


def _fidelity(gate: Any, teacher: nn.Module, student: nn.Module) -> dict[str, Any] | None:
    if gate is None:
        return None
    t0 = time.perf_counter()
    out = {"teacher": _gate_dict(gate(teacher)), "student": _gate_dict(gate(student))}
    out["seconds"] = time.perf_counter() - t0
    return out


@torch.no_grad()
def _same_noise_agreement(teacher: Any, student: Any, seed: int, n: int = 1024) -> dict[str, float]:
    """Student vs teacher on fresh noise (not the training pool), in MeV-level physics terms."""
    gen = torch.Generator().manual_seed(int(seed) + 99991)
    lo, hi = teacher.energy_range_mev
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    e = torch.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))).to(torch.float32)
    z = torch.randn(n, teacher.latent_dim, generator=gen)
    teacher.eval()
    student.eval()
    xt = teacher.postprocess(teacher.network(z, teacher.condition(e)), e)
    xs = student.postprocess(student.network(z, student.condition(e)), e)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(teacher.geometry.voxel_layer, dtype=torch.long), teacher.geometry.n_layers).float()
    lt, ls = xt @ onehot / e[:, None], xs @ onehot / e[:, None]
    tt, ts = lt.sum(1), ls.sum(1)
    return {
        "events": n,
        "total_energy_mean_rel_diff": float((ts.mean() - tt.mean()) / tt.mean()),
        "total_energy_event_rms_rel_diff": float(((ts - tt) / tt.clamp_min(1e-9)).pow(2).mean().sqrt()),
        "layer_fraction_mean_abs_diff": float((ls - lt).abs().mean()),
        "voxel_mae_over_mean_voxel": float((xs - xt).abs().mean() / xt.abs().mean().clamp_min(1e-12)),
    }


def _phase_summary(history: list[dict[str, float]]) -> dict[str, Any]:
    if not history:
        return {"steps": 0}
    return {
        "steps": int(history[-1]["step"]),
        "first_loss": history[0].get("loss"),
        "final_loss": history[-1].get("loss"),
        "history": history,
    }


def _finish(
    teacher: Any,
    student: Any,
    config: _DistillBase,
    phases: dict[str, list[dict[str, float]]],
    t0: float,
    gate: Any = None,
    **kw: Any,
) -> CompressionResult:
    pt, ps = _n_params(teacher.network), _n_params(student.network)
    record = LayerRecord(
        name="network",
        kind=f"distill:{teacher.kind}->{student.kind}",
        params_before=pt,
        params_after=ps,
        bits_before=32 * pt,
        bits_after=32 * ps,
        details={"teacher_architecture": teacher.architecture(), "student_architecture": student.architecture()},
    )
    seconds_training = time.perf_counter() - t0
    speed = compare_sampling_speed(
        {"teacher": teacher, "student": student}, tuple(config.speed_batch_sizes), config.speed_min_seconds
    )
    extra: dict[str, Any] = {
        "distillation": {
            "teacher": {"kind": teacher.kind, "network_params": pt, "total_params": _n_params(teacher)},
            "student": {"kind": student.kind, "network_params": ps, "total_params": _n_params(student)},
            "param_ratio": ps / max(pt, 1),
            "phases": {k: _phase_summary(v) for k, v in phases.items()},
            "training_seconds": seconds_training,
            "same_noise": _same_noise_agreement(teacher, student, config.training.seed),
            **kw,
        },
        "speed": speed,
        # a distillation step replaces the model: later steps and the compressed bundle start from
        # this architecture (save_compressed's base_config), not from the teacher's
        "replaces_model": True,
        "base_config": student.config_dict(),
    }
    fid = _fidelity(gate, teacher, student)
    if fid is not None:
        extra["fidelity"] = fid
    student.eval()
    return CompressionResult(student, config, (record,), time.perf_counter() - t0, extra)


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _freeze(m: nn.Module) -> None:
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)


def _kind(model: Any) -> str:
    return str(getattr(model, "kind", type(model).__name__))


# --------------------------------------------------------------------------------------
# flow -> IAF
# --------------------------------------------------------------------------------------
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
    from ..generators.flow import FlowGenerator

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


# --------------------------------------------------------------------------------------
# any generator -> MLP
# --------------------------------------------------------------------------------------
def _physics_terms(
    xs: torch.Tensor, xt_layers: torch.Tensor, e: torch.Tensor, onehot: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer-fraction loss, total-fraction loss), standardised by the teacher pool's spread."""
    ls = xs @ onehot / e[:, None]
    layer = ((ls - xt_layers) / scale[:-1]).pow(2).mean()
    total = ((ls.sum(1) - xt_layers.sum(1)) / scale[-1]).pow(2).mean()
    return layer, total


def _layer_stats(showers: torch.Tensor, e: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lt = showers @ onehot / e[:, None]
    scale = torch.cat([lt.std(0), lt.sum(1).std().reshape(1)]).clamp_min(1e-4)
    return lt, scale


@register_method(ToMLPConfig)
def distill_mlp(model: nn.Module, config: ToMLPConfig, gate: Any = None, **_: Any) -> CompressionResult:
    """Any generator -> feed-forward MLP student: same-noise regression + physics terms."""
    from ..generators.base import ShowerGenerator
    from .students import check_firmware_layers

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

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        y = student.network(pool.z[idx], c_pool[idx])
        lv = (y - target[idx]).pow(2).mean()
        loss = config.weight_voxels * lv
        parts = {"voxels": _f(lv)}
        if w.layer_energies > 0 or w.total_energy > 0:
            xs = student.postprocess(y, pool.e[idx], threshold=False)
            ll, lt = _physics_terms(xs, lt_pool[idx], pool.e[idx], onehot, scale)
            loss = loss + w.layer_energies * ll + w.total_energy * lt
            parts.update(layer_energies=_f(ll), total_energy=_f(lt))
        parts["loss"] = _f(loss)
        return loss, parts

    trainer = Trainer("to_mlp", {"student": student.network}, config.training, fp)
    history = trainer.run(loss_fn, len(pool), f"{teacher.kind} -> MLP")
    return _finish(teacher, student, config, {"to_mlp": history}, t0, gate=gate, firmware_layers_checked=config.firmware)


# --------------------------------------------------------------------------------------
# GAN -> smaller GAN
# --------------------------------------------------------------------------------------
def _critic_hidden(critic: nn.Module, feats: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
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
    from ..generators.gan import GANGenerator
    from .students import check_firmware_layers

    if not isinstance(model, GANGenerator):
        msg = f"distill_gan: teacher must be a GAN generator (kind 'gan'), got kind {_kind(model)!r}"
        raise UnsupportedLayerError(msg)
    sa = config.student
    if sa.activation != "leaky_relu":
        msg = f"distill_gan: student.activation must be 'leaky_relu' (the GAN kind's activation), got {sa.activation!r}"
        raise ConfigError(msg)
    if config.adversarial_steps > 0 and reference is None:
        msg = "distill_gan: adversarial_steps > 0 needs reference showers (reference=(energies, showers), CLI --reference)"
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
    pool = draw_pool(teacher, config, fp)
    onehot = student.onehot
    c_pool = student.condition(pool.e)
    with torch.no_grad():
        xt_raw = teacher.postprocess(pool.y, pool.e, threshold=False)
        f_pool = teacher.features(xt_raw, pool.e)
        h_pool = _critic_hidden(critic_t, f_pool, c_pool)
    f_scale = critic_t.feat_std
    lt_pool, scale = _layer_stats(xt_raw, pool.e, onehot)
    w = config.physics

    def distill_loss(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], torch.Tensor, torch.Tensor]:
        e, c = pool.e[idx], c_pool[idx]
        y = student.network(pool.z[idx], c)
        xs = student.postprocess(y, e, threshold=False)
        fs = student.features(xs, e)
        lo = ((fs - f_pool[idx]) / f_scale).pow(2).mean()
        lf = (_critic_hidden(critic_t, fs, c) - h_pool[idx]).pow(2).mean()
        ll, ltot = _physics_terms(xs, lt_pool[idx], e, onehot, scale)
        loss = config.weight_output * lo + config.weight_features * lf + w.layer_energies * ll + w.total_energy * ltot
        parts = {"output": _f(lo), "features": _f(lf), "layer_energies": _f(ll), "total_energy": _f(ltot)}
        return loss, parts, fs, c

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        loss, parts, _, _ = distill_loss(idx)
        parts["loss"] = _f(loss)
        return loss, parts

    phases: dict[str, list[dict[str, float]]] = {}
    trainer = Trainer("gan_to_gan", {"student": student.network}, config.training, fp)
    phases["gan_to_gan"] = trainer.run(loss_fn, len(pool), "GAN -> small GAN")

    if config.adversarial_steps > 0:
        phases["adversarial"] = _adversarial(student, config, reference, distill_loss, fp, len(pool))
    return _finish(teacher, student, config, phases, t0, gate=gate)


def _adversarial(
    student: Any, config: GANToGANConfig, reference: Any, distill_loss: Any, fp: str, pool_size: int
) -> list[dict[str, float]]:
    """WGAN-GP fine-tuning of the student against reference showers, starting from the teacher's critic.

    The critic gets its own Adam inside the step; its weights are checkpointed with the student
    (its optimizer moments are not, so a resumed adversarial phase is not bit-identical).
    """
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
    critic = student.critic
    for p in critic.parameters():
        p.requires_grad_(True)
    critic.train()
    with torch.no_grad():
        f_ref = student.features(x_ref, e_ref)
        c_ref = student.condition(e_ref)
    opt_c = torch.optim.Adam(critic.parameters(), lr=config.adversarial_lr, betas=(0.5, 0.9))
    n_ref = e_ref.shape[0]

    def loss_fn(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        ridx = torch.randint(n_ref, (idx.shape[0],), generator=gen)
        ld, parts, fs, c = distill_loss(idx)
        # critic step (WGAN-GP, lambda = 10) on reference vs student features
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
