"""Training of the generators: a resumable loop with checkpoints, fine-tuning.

``train_generator(data, config, out_dir)`` trains a fresh generator of the recipe's kind
(:mod:`.recipes`) on a reference :class:`~simcompress.showers.data.ShowerSet`, holding out
``val_fraction`` of the events for the model card, checkpointing every ``checkpoint_every``
steps to ``out_dir/checkpoints/`` (safetensors + JSON, RNG and optimiser state included,
:mod:`.checkpoint`) so an interrupted run resumes exactly where it stopped, and finally writes
the bundle into ``out_dir``. The kind's objective (:mod:`.objectives`: WGAN-GP plus per-energy
moments for the GAN, maximum likelihood for the flow) supplies the step; the loop is one.

:func:`finetune` runs the same objectives for a few steps on an existing (e.g. compressed)
generator against reference showers. :func:`finetune_to_teacher` is the compression pipeline's
fine-tuning: knowledge distillation of the compressed student toward its uncompressed teacher
on the same noise and condition (the figure of merit of compression is damage against the
teacher, and adversarial training against the reference moves a student away from a teacher that
differs from the reference).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._progress import progress_bar
from .._provenance import sha256_arrays, software_versions, utc_now
from ..errors import ConfigError
from ..showers.data import ShowerSet
from ..showers.geometry import Geometry
from .base import ShowerGenerator
from .bundle import save_generator
from .checkpoint import (
    load_module_tensors,
    module_tensors,
    optimizer_tensors,
    read_checkpoint,
    read_info,
    restore_optimizer,
    write_checkpoint,
)
from .fidelity import compare_response
from .gan import GANGenerator
from .objectives import Objective, objective_for
from .recipes import (
    FlowModelConfig,
    FlowTrainConfig,
    GANModelConfig,
    GANTrainConfig,
    TrainConfig,
    build_from_config,
    load_train_config,
)

__all__ = [
    "FlowModelConfig",
    "FlowTrainConfig",
    "GANModelConfig",
    "GANTrainConfig",
    "TrainConfig",
    "build_from_config",
    "bundle_from_checkpoint",
    "evaluate_fidelity",
    "fidelity_summary",
    "finetune",
    "finetune_to_teacher",
    "load_train_config",
    "train_generator",
]

_STATE, _INFO = "state.safetensors", "state.json"


# ----------------------------------------------------------------------------- helpers
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        msg = "device: 'cuda' requested but no CUDA device is available"
        raise ConfigError(msg)
    return torch.device(name)


#: training showers a post-training response recalibration fits on (at most): about 13,000 per ds1
#: energy, so the fitted mean response at 256-512 MeV (resolution 15-22 %) is known to about 0.15 %
_RECALIBRATION_SHOWERS = 200_000


def _lr_factor(step: int, total: int, final: float) -> float:
    """Cosine decay from 1 to ``final`` over ``total`` steps."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17])).permutation(n)
    n_val = round(n * val_fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ----------------------------------------------------------------------------- checkpoints
def _model_tensors(gen: ShowerGenerator) -> dict[str, torch.Tensor]:
    tensors = module_tensors("model", gen)
    critic = getattr(gen, "critic", None)
    if critic is not None:
        tensors.update(module_tensors("critic", critic))
    return tensors


def _load_model_tensors(gen: ShowerGenerator, tensors: dict[str, torch.Tensor]) -> None:
    load_module_tensors("model", gen, tensors)
    critic = getattr(gen, "critic", None)
    if critic is not None:
        load_module_tensors("critic", critic, tensors)


def _save_checkpoint(ckpt: Path, gen: ShowerGenerator, objective: Objective, rng: torch.Generator, step: int,
                     meta: dict[str, Any]) -> None:
    tensors = _model_tensors(gen)
    opt_meta = {}
    for name, opt in objective.opts.items():
        t, m = optimizer_tensors(f"opt_{name}", opt)
        tensors.update(t)
        opt_meta[name] = m
    tensors["rng_state"] = rng.get_state()
    tensors["torch_rng_state"] = torch.get_rng_state()
    write_checkpoint(ckpt, _STATE, tensors, _INFO, {"step": step, "optimizers": opt_meta, **meta, "saved": utc_now()})


def _load_checkpoint(ckpt: Path, gen: ShowerGenerator, objective: Objective, rng: torch.Generator) -> dict[str, Any]:
    info, tensors = read_checkpoint(ckpt, _INFO, _STATE)
    _load_model_tensors(gen, tensors)
    for name, opt in objective.opts.items():
        restore_optimizer(f"opt_{name}", opt, tensors, info["optimizers"][name])
    rng.set_state(tensors["rng_state"])
    torch.set_rng_state(tensors["torch_rng_state"])
    return info


# ----------------------------------------------------------------------------- evaluation
def evaluate_fidelity(gen: ShowerGenerator, data: ShowerSet, seed: int = 12345, batch_size: int = 2000) -> dict[str, Any]:
    """Sample ``gen`` at the incident energies of ``data`` and compare response and layer fractions."""
    e = torch.as_tensor(data.incident_energy, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    fake = gen.sample(e, generator=g, batch_size=batch_size).cpu().numpy()
    return compare_response(data.incident_energy, data.showers, data.incident_energy, fake, data.geometry.layer_offsets)


def fidelity_summary(fid: dict[str, Any], goal_pct: float = 2.0) -> dict[str, Any]:
    """Plain-words verdict on :func:`evaluate_fidelity` output against the physics goal."""
    if not fid:
        return {}
    m, r, lf = fid["max_abs_mean_dev_pct"], fid["max_abs_resolution_dev_pct"], fid["max_abs_layer_fraction_dev"]
    devs = [abs(x) for x in fid["mean_response_dev_pct"] if x is not None and not math.isnan(x)]
    return {
        "goal": f"per-energy mean response within {goal_pct:g} % of the reference at every incident energy",
        "meets_goal": bool(m <= goal_pct),
        "max_abs_mean_response_dev_pct": round(m, 3),
        "median_abs_mean_response_dev_pct": round(float(np.median(devs)), 3) if devs else None,
        "max_abs_resolution_dev_pct": round(r, 2),
        "max_abs_layer_fraction_dev": round(lf, 5),
        "text": (
            f"worst per-energy mean response deviation {m:.2f} % (goal {goal_pct:g} %: "
            f"{'met' if m <= goal_pct else 'not met'}); worst resolution deviation {r:.1f} %; "
            f"worst mean layer-fraction deviation {lf:.4f}"
        ),
    }


# ----------------------------------------------------------------------------- training
def train_generator(
    data: ShowerSet,
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    progress: bool = True,
    data_source: str = "<in memory>",
    card_extra: dict[str, Any] | None = None,
    log: Any = None,
) -> ShowerGenerator:
    """Train a generator from scratch on ``data`` and write its bundle to ``out_dir``.

    Checkpoints go to ``out_dir/checkpoints``; with ``resume`` an existing checkpoint of the same
    recipe and data is continued. Returns the trained generator (eval mode).
    """
    cfg = config
    geometry = Geometry.from_name(cfg.geometry)
    if not data.geometry.same_binning(geometry):
        msg = f"{data_source}: data geometry {data.geometry.name!r} does not match recipe geometry {cfg.geometry!r}"
        raise ConfigError(msg)
    if len(data) < 10:
        msg = f"{data_source}: need at least 10 training showers, got {len(data)}"
        raise ConfigError(msg)
    out = Path(out_dir)
    ckpt = out / "checkpoints"
    device = _device(cfg.device)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        data_hash = sha256_arrays(data.incident_energy, data.showers)
        cfg_json = cfg.model_dump(mode="json")
        tr_idx, val_idx = _split(len(data), cfg.val_fraction, cfg.seed)
        train_set, val_set = data[tr_idx], data[val_idx]
        mon_set = val_set[: cfg.monitor_events] if len(val_set) else train_set[: cfg.monitor_events]

        torch.manual_seed(cfg.seed)
        gen = build_from_config(cfg).to(device)
        rng = torch.Generator().manual_seed(cfg.seed + 1)
        start = 0
        history: list[dict[str, Any]] = []
        info = read_info(ckpt, _INFO) if resume else None
        resuming = info is not None
        if info is not None and (info.get("config") != cfg_json or info.get("data_sha256") != data_hash):
            msg = f"{ckpt}: checkpoint was made with another recipe or other data; use a new --out or --no-resume"
            raise ConfigError(msg)
        init_info = _warm_start(gen, cfg.init_from) if cfg.init_from is not None else None
        objective = objective_for(gen)(gen, train_set, cfg, device, fresh=init_info is None)
        if resuming:
            info = _load_checkpoint(ckpt, gen, objective, rng)
            start = int(info["step"])
            history = list(info.get("history", []))
        meta = {"config": cfg_json, "data_sha256": data_hash}

        fid = float("nan")
        last_loss = float("nan")
        t0 = time.time()
        with progress_bar(f"train {cfg.kind}", cfg.steps, enabled=progress) as bar:
            bar.update(completed=start)
            gen.train()
            for step in range(start, cfg.steps):
                objective.set_lr(_lr_factor(step, cfg.steps, cfg.final_lr_fraction))
                rec = objective.step(rng)
                last_loss = rec["loss"]
                if not math.isfinite(last_loss):
                    msg = f"training diverged at step {step + 1}: loss {last_loss}"
                    raise FloatingPointError(msg)
                done = step + 1
                if done % cfg.monitor_every == 0 or done == cfg.steps:
                    fid = evaluate_fidelity(gen, mon_set)["max_abs_mean_dev_pct"]
                    gen.train()
                    history.append({"step": done, **{k: round(v, 5) for k, v in rec.items()}, "max_abs_mean_dev_pct": round(fid, 3),
                                    "seconds": round(time.time() - t0, 1)})
                    if log is not None:
                        log(json.dumps(history[-1]))
                if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                    _save_checkpoint(ckpt, gen, objective, rng, done, {**meta, "history": history})
                shown = f"{fid:.2f}%" if math.isfinite(fid) else "-"
                bar.advance(1, description=f"train {cfg.kind}  loss {last_loss:.4f}  max|Δ<E>/E| {shown}")
        gen.eval()
        recal = None
        if getattr(cfg, "recalibrate_response", False):
            sub = train_set[: min(len(train_set), _RECALIBRATION_SHOWERS)]
            recal = gen.recalibrate_response(  # type: ignore[operator]
                torch.as_tensor(sub.showers), torch.as_tensor(sub.incident_energy), torch.Generator().manual_seed(cfg.seed + 2)
            )
            recal["data"] = f"the first {len(sub)} training showers (not the held-out ones)"
        fidelity = evaluate_fidelity(gen, val_set) if len(val_set) >= 2 else {}
        card = {
            "name": out.name,
            "kind": cfg.kind,
            "training": {
                "recipe": cfg_json,
                "steps": cfg.steps,
                "data": {
                    "source": data_source,
                    "n_events": len(data),
                    "n_train": len(train_set),
                    "n_heldout": len(val_set),
                    "sha256": data_hash,
                    "metadata": {k: v for k, v in data.metadata.items() if k in ("generator", "energies", "seed", "simulator", "n_events")},
                },
                "history": history,
                **({"init_from": init_info} if init_info is not None else {}),
                **({"response_recalibration": recal} if recal is not None else {}),
                "device": str(device),
                "software": software_versions(),
                "finished": utc_now(),
            },
            "fidelity_heldout": fidelity,
            "fidelity_summary": fidelity_summary(fidelity),
            **(card_extra or {}),
        }
        save_generator(gen.cpu(), out, card=card)
        return gen
    finally:
        torch.set_num_threads(prev_threads)


def _warm_start(gen: ShowerGenerator, source: str) -> dict[str, Any]:
    """Load ``source``'s weights, buffers and critic into ``gen`` (a recipe's ``init_from``)."""
    from .bundle import load_generator

    src = load_generator(source)
    if src.kind != gen.kind:
        msg = f"init_from: {source!r} is a {src.kind} bundle; this recipe trains a {gen.kind}"
        raise ConfigError(msg)
    try:
        gen.load_state_dict(src.state_dict(), strict=True)
        if getattr(src, "has_trained_critic", False) and getattr(gen, "critic", None) is not None:
            gen.critic.load_state_dict(src.critic.state_dict(), strict=True)  # type: ignore[union-attr]
            gen.has_trained_critic = True
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        msg = f"init_from: {source!r} does not fit this recipe's model ({first[1].strip() if len(first) > 1 else first[0]})"
        raise ConfigError(msg) from None
    return {"bundle": str(source), "bundle_hash": getattr(src, "bundle_hash", None), "kind": src.kind}


def bundle_from_checkpoint(
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    heldout: ShowerSet,
    *,
    data_source: str = "<unknown>",
    card_extra: dict[str, Any] | None = None,
) -> ShowerGenerator:
    """Write a bundle at ``dest`` from the last checkpoint of an (unfinished) training run.

    ``config`` must be the run's recipe (checked against the checkpoint); the card records how
    many of the recipe's steps were done and the fidelity measured on ``heldout``, a reference
    sample not used in training.
    """
    ckpt = Path(run_dir) / "checkpoints"
    info = read_info(ckpt, _INFO)
    if info is None:
        msg = f"{ckpt}: no checkpoint found"
        raise ConfigError(msg)
    if info.get("config") != config.model_dump(mode="json"):
        msg = f"{ckpt}: checkpoint was made with another recipe"
        raise ConfigError(msg)
    gen = build_from_config(config)
    _load_model_tensors(gen, read_checkpoint(ckpt, _INFO, _STATE)[1])
    gen.eval()
    fidelity = evaluate_fidelity(gen, heldout)
    card = {
        "name": Path(dest).name,
        "kind": config.kind,
        "training": {
            "recipe": config.model_dump(mode="json"),
            "steps": int(info["step"]),
            "recipe_steps": config.steps,
            "from_checkpoint": True,
            "data": {"source": data_source, "sha256": info.get("data_sha256")},
            "history": info.get("history", []),
            "software": software_versions(),
            "finished": utc_now(),
        },
        "heldout": {"n_events": len(heldout), "metadata": {k: v for k, v in heldout.metadata.items() if isinstance(v, (str, int, float))}},
        "fidelity_heldout": fidelity,
        "fidelity_summary": fidelity_summary(fidelity),
        **(card_extra or {}),
    }
    save_generator(gen, dest, card=card)
    return gen


def finetune(
    gen: ShowerGenerator, data: ShowerSet, steps: int, lr: float, seed: int = 0, batch_size: int = 256, critic_warmup: int = 100
) -> ShowerGenerator:
    """Fine-tune ``gen`` in place for ``steps`` steps on ``data`` and return it.

    GAN: WGAN-GP against the critic stored with the generator (warmed up first for
    ``critic_warmup`` critic steps when the bundle carried none) plus the per-energy moment term; flow: maximum
    likelihood. Only the parameters of ``gen.network`` are trained.
    """
    if steps < 0 or lr <= 0:
        msg = f"finetune: need steps >= 0 and lr > 0, got steps={steps}, lr={lr}"
        raise ConfigError(msg)
    if not data.geometry.same_binning(gen.geometry):
        msg = f"finetune: data geometry {data.geometry.name!r} differs from the generator's {gen.geometry.name!r}"
        raise ConfigError(msg)
    device = gen.device
    rng = torch.Generator().manual_seed(seed)
    gen.train()
    kind = objective_for(gen, "finetune")
    objective = kind(gen, data, kind.finetune_config(batch_size, lr, seed), device, fresh=False)
    objective.warm_up(rng, critic_warmup)
    for _ in range(steps):
        objective.step(rng)
    gen.eval()
    return gen


def _distill_mode(student: ShowerGenerator, teacher: ShowerGenerator) -> tuple[str, list[tuple[int, int]] | None]:
    """How student and teacher are compared, and the column blocks weighted equally in the loss.

    ``"gan"`` (both GANs): the factorised features (log r | layer fractions | sqrt voxel
    fractions | shape block); ``"output"`` (same class otherwise): the network output;
    ``"showers"`` (different classes, e.g. an MLP student of a flow): log r | layer fractions |
    sqrt(voxel energy / incident energy), from the postprocessed showers.
    """
    n_l, n_v = teacher.geometry.n_layers, teacher.geometry.n_voxels
    if isinstance(teacher, GANGenerator) and isinstance(student, GANGenerator):
        edges = [0, 1, 1 + n_l, 1 + n_l + n_v]
        shape = teacher.shape_basis
        if shape is not None:
            edges.append(edges[-1] + shape.n_features)
        return "gan", list(itertools.pairwise(edges))
    if type(student) is type(teacher):
        return "output", None
    return "showers", list(itertools.pairwise([0, 1, 1 + n_l, 1 + n_l + n_v]))


def _distill_view(gen: ShowerGenerator, y: torch.Tensor, e: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "gan":  # what the physics sees, differentiable (no voxel threshold)
        g: Any = gen
        return g.features(g.postprocess(y, e, threshold=False), e)
    if mode == "showers":
        x = gen.postprocess(y, e)
        onehot = torch.nn.functional.one_hot(torch.as_tensor(gen.geometry.voxel_layer, dtype=torch.long, device=x.device),
                                             gen.geometry.n_layers).to(x.dtype)
        layer = x @ onehot
        total = layer.sum(1, keepdim=True)
        parts = [torch.log(total / e[:, None] + 1e-6), layer / (total + 1e-6), torch.sqrt(x.clamp_min(0) / e[:, None] + 1e-12)]
        return torch.cat(parts, dim=1)
    return y


def finetune_to_teacher(
    student: ShowerGenerator,
    teacher: ShowerGenerator,
    steps: int,
    lr: float,
    *,
    energies: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 512,
    grad_clip: float = 1.0,
) -> dict[str, float]:
    """Distil ``teacher`` into ``student`` in place: ``steps`` Adam steps at ``lr`` on fresh noise.

    Each step draws noise ``z`` and incident energies (from ``energies`` in MeV, e.g. the reference's,
    else log-uniform over the teacher's range) and minimises the squared difference of student and
    teacher on the *same* ``(z, c)``: for a GAN on its factorised shower features (log r, layer
    fractions, sqrt voxel fractions and the shape block), for a student of the teacher's class on
    the network output, for a student of another class (an MLP student of a flow) on log r, layer
    fractions and sqrt voxel energies of the showers; each column standardised by the teacher's
    spread, each block weighted equally. No critic and no reference showers: the target is the
    teacher, the figure compression is judged by. A student with a narrower latent (``distill_gan``'s
    ``latent_dim``) gets the first ``student.latent_dim`` coordinates of the teacher's noise. Only
    ``student.network``'s trainable parameters move. Returns the loss before and after
    (on one fixed held-out batch).

    Example:
        >>> import torch
        >>> from simcompress.showers import Geometry
        >>> from simcompress.generators.gan import GANGenerator
        >>> torch.manual_seed(0) is not None
        True
        >>> t = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=4, hidden=[8])
        >>> s = copy_generator(t)
        >>> with torch.no_grad():
        ...     _ = s.network.body[0].weight.mul_(0.5)
        >>> r = finetune_to_teacher(s, t, steps=30, lr=1e-2, batch_size=64)
        >>> r["loss_after"] < r["loss_before"]
        True
    """
    if steps < 0 or lr <= 0:
        msg = f"finetune_to_teacher: need steps >= 0 and lr > 0, got steps={steps}, lr={lr}"
        raise ConfigError(msg)
    k = int(student.latent_dim)
    if k > int(teacher.latent_dim):
        msg = (f"finetune_to_teacher: student latent width {student.latent_dim} is wider than the teacher's "
               f"{teacher.latent_dim}; same-noise distillation feeds the student the first coordinates of the teacher's noise")
        raise ConfigError(msg)
    if not student.geometry.same_binning(teacher.geometry):
        msg = f"finetune_to_teacher: student geometry {student.geometry.name!r} differs from the teacher's {teacher.geometry.name!r}"
        raise ConfigError(msg)
    mode, blocks = _distill_mode(student, teacher)
    device = student.device
    rng = torch.Generator().manual_seed(seed)
    lo, hi = (float(v) for v in teacher.energy_range_mev)
    pool = None if energies is None or len(energies) == 0 else torch.as_tensor(np.asarray(energies, dtype=np.float32))

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if pool is not None:
            e = pool[torch.randint(0, len(pool), (n,), generator=rng)]
        else:
            u = torch.rand(n, generator=rng, dtype=torch.float64)
            e = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))).to(torch.float32)
        z = torch.randn(n, int(teacher.latent_dim), generator=rng)
        return z.to(device), e.to(device)

    teacher.eval()

    @torch.no_grad()
    def target(z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return _distill_view(teacher, teacher.network(z, teacher.condition(e)), e, mode)

    z_ref, e_ref = draw(max(2048, batch_size))  # fixed batch: the teacher's spread and the reported loss
    t_ref = target(z_ref, e_ref)
    scale = t_ref.std(0).clamp_min(1e-3)
    if blocks is not None:
        weight = torch.zeros(t_ref.shape[1], device=device)
        for a, b in blocks:
            weight[a:b] = 1.0 / (b - a)
    else:
        weight = torch.full((t_ref.shape[1],), 1.0 / t_ref.shape[1], device=device)

    def loss_of(z: torch.Tensor, e: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        out = _distill_view(student, student.network(z[:, :k], student.condition(e)), e, mode)
        return ((((out - tgt) / scale) ** 2) * weight).sum(1).mean()

    was = student.training
    params = [p for p in student.network.parameters() if p.requires_grad]
    with torch.no_grad():
        before = float(loss_of(z_ref, e_ref, t_ref))
    if params and steps:
        opt = torch.optim.Adam(params, lr=lr)
        student.train()
        for _ in range(steps):
            z, e = draw(batch_size)
            loss = loss_of(z, e, target(z, e))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
    student.train(was)
    with torch.no_grad():
        after = float(loss_of(z_ref, e_ref, t_ref))
    return {"loss_before": before, "loss_after": after, "steps": float(steps)}


def copy_generator(gen: ShowerGenerator) -> ShowerGenerator:
    """Deep copy including the GAN critic (which is not a registered submodule)."""
    return copy.deepcopy(gen)
