"""Training of the generators: typed recipes, a resumable loop with checkpoints, fine-tuning.

``train_generator(kind, data, config, out_dir)`` trains a fresh GAN or flow on a reference
:class:`~simcompress.showers.data.ShowerSet`, holding out ``val_fraction`` of the events for
the model card, checkpointing every ``checkpoint_every`` steps to ``out_dir/checkpoints/``
(safetensors + JSON, RNG and optimiser state included) so an interrupted run resumes exactly
where it stopped, and finally writes the bundle into ``out_dir``.

GAN objective: WGAN-GP (critic ``n_critic`` steps per generator step, gradient penalty on
interpolated features) plus a per-energy moment-matching term on the response ``log r`` and
the layer fractions (weight ``moment_weight``), normalised by the reference spread in each
energy bin: it ties the generated mean response and resolution to the reference at every
incident energy, which is what calorimeter physics needs first.

Flow objective: maximum likelihood of the dequantised preprocessed showers.

:func:`finetune` runs the same objectives for a few steps on an existing (e.g. compressed)
generator, as the compression pipeline's injected ``finetune`` callable.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from .._config import StrictModel, load_yaml, parse_config
from .._provenance import sha256_arrays, software_versions, utc_now
from ..errors import ConfigError
from ..showers.data import ShowerSet
from ..showers.geometry import Geometry
from .base import DEFAULT_ENERGY_RANGE_MEV, ShowerGenerator
from .bundle import save_generator
from .fidelity import compare_response
from .flow import FlowArchitecture, FlowGenerator
from .gan import GANArchitecture, GANGenerator

__all__ = [
    "FlowModelConfig",
    "FlowTrainConfig",
    "GANModelConfig",
    "GANTrainConfig",
    "build_from_config",
    "bundle_from_checkpoint",
    "evaluate_fidelity",
    "fidelity_summary",
    "finetune",
    "load_train_config",
    "train_generator",
]


# ----------------------------------------------------------------------------- configs
class GANModelConfig(GANArchitecture):
    """A GAN recipe's ``model``: the bundle architecture plus the noise width."""

    latent_dim: int = Field(64, ge=1)


class FlowModelConfig(FlowArchitecture):
    """A flow recipe's ``model``: the bundle architecture."""


class _TrainCommon(StrictModel):
    geometry: str = "ds1-photons"
    energy_range_mev: tuple[float, float] = DEFAULT_ENERGY_RANGE_MEV
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(256, ge=2)
    seed: int = 0
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    monitor_events: int = Field(2000, ge=100)
    monitor_every: int = Field(500, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    threads: int = Field(1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    final_lr_fraction: float = Field(0.1, gt=0, le=1.0)


class GANTrainConfig(_TrainCommon):
    kind: Literal["gan"] = "gan"
    model: GANModelConfig = Field(default_factory=GANModelConfig)
    n_critic: int = Field(5, ge=1)
    lr_generator: float = Field(1e-4, gt=0)
    lr_critic: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.9)
    gp_weight: float = Field(10.0, ge=0)
    moment_weight: float = Field(1.0, ge=0)
    moment_bins: int = Field(15, ge=1)


class FlowTrainConfig(_TrainCommon):
    kind: Literal["flow"] = "flow"
    model: FlowModelConfig = Field(default_factory=FlowModelConfig)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(5.0, gt=0)


TrainConfig = GANTrainConfig | FlowTrainConfig
_CONFIGS: dict[str, type[GANTrainConfig | FlowTrainConfig]] = {"gan": GANTrainConfig, "flow": FlowTrainConfig}


def load_train_config(kind: str, path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a training recipe (YAML) for ``kind`` (``"gan"`` or ``"flow"``)."""
    if kind not in _CONFIGS:
        msg = f"unknown generator kind {kind!r}; allowed: {', '.join(sorted(_CONFIGS))}"
        raise ConfigError(msg)
    cls = _CONFIGS[kind]
    if path is None:
        cfg = parse_config(cls, {}, "<defaults>")
    else:
        cfg = load_yaml(cls, path)
        if cfg.kind != kind:
            msg = f"{path}: kind: recipe is for {cfg.kind!r}, not {kind!r}"
            raise ConfigError(msg)
    if overrides:
        cfg = parse_config(cls, {**cfg.model_dump(), **overrides}, str(path or "<defaults>"))
    return cfg


def build_from_config(cfg: TrainConfig) -> ShowerGenerator:
    geometry = Geometry.from_name(cfg.geometry)
    if isinstance(cfg, GANTrainConfig):
        arch = GANArchitecture.model_validate(cfg.model.model_dump(exclude={"latent_dim"}))
        return GANGenerator(geometry, cfg.model.latent_dim, cfg.energy_range_mev, arch=arch)
    return FlowGenerator(geometry, cfg.energy_range_mev, arch=FlowArchitecture.model_validate(cfg.model.model_dump()))


# ----------------------------------------------------------------------------- helpers
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        msg = "device: 'cuda' requested but no CUDA device is available"
        raise ConfigError(msg)
    return torch.device(name)


def _lr_factor(step: int, total: int, final: float) -> float:
    """Cosine decay from 1 to ``final`` over ``total`` steps."""
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17])).permutation(n)
    n_val = round(n * val_fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _energy_bin(c: torch.Tensor, n_bins: int) -> torch.Tensor:
    return torch.round((c.squeeze(1).clamp(-1, 1) + 1) / 2 * (n_bins - 1)).long()


class _MomentTargets:
    """Per-energy-bin reference mean and spread of ``[log r, layer fractions]`` (GAN moment loss)."""

    def __init__(self, feats: torch.Tensor, bins: torch.Tensor, n_bins: int, columns: list[int]) -> None:
        self.columns = torch.as_tensor(columns, dtype=torch.long)
        x = feats[:, self.columns].double()
        cnt = torch.bincount(bins, minlength=n_bins).double().clamp_min(1)[:, None]
        s1 = torch.zeros(n_bins, x.shape[1], dtype=torch.float64).index_add_(0, bins, x)
        s2 = torch.zeros(n_bins, x.shape[1], dtype=torch.float64).index_add_(0, bins, x * x)
        self.mean = (s1 / cnt).float()
        self.std = (s2 / cnt - (s1 / cnt) ** 2).clamp_min(0).sqrt().float()
        self.scale = self.std.clamp_min(1e-4)
        self.present = torch.bincount(bins, minlength=n_bins) > 0
        self.n_bins = n_bins
        self.width = len(columns)

    def to(self, device: torch.device) -> _MomentTargets:
        for k in ("mean", "std", "scale", "present", "columns"):
            setattr(self, k, getattr(self, k).to(device))
        return self

    def loss(self, fake_feats: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        x = fake_feats[:, self.columns]
        nb = self.n_bins
        cnt = torch.bincount(bins, minlength=nb).to(x.dtype)
        use = (cnt > 1) & self.present
        c = cnt.clamp_min(1)[:, None]
        s1 = torch.zeros(nb, self.width, device=x.device, dtype=x.dtype).index_add(0, bins, x)
        s2 = torch.zeros(nb, self.width, device=x.device, dtype=x.dtype).index_add(0, bins, x * x)
        mean = s1 / c
        std = (s2 / c - mean**2).clamp_min(1e-12).sqrt()
        dm = ((mean - self.mean) / self.scale) ** 2
        ds = ((std - self.std) / self.scale) ** 2
        # log1p: quadratic near the target, bounded gradient far from it (early training)
        per_bin = torch.log1p(dm + ds).mean(dim=1)
        return per_bin[use].mean() if use.any() else x.sum() * 0.0


def _gan_setup(gen: GANGenerator, data: ShowerSet, cfg: GANTrainConfig, device: torch.device) -> dict[str, Any]:
    e = torch.as_tensor(data.incident_energy, dtype=torch.float32)
    x = torch.as_tensor(data.showers, dtype=torch.float32)
    with torch.no_grad():
        feats = torch.cat([gen.features(x[i : i + 20000], e[i : i + 20000]) for i in range(0, len(e), 20000)])
        bins = _energy_bin(gen.condition(e), cfg.moment_bins)
    targets = _MomentTargets(feats, bins, cfg.moment_bins, gen.moment_columns())
    return {"e": e.to(device), "feats": feats.to(device), "targets": targets.to(device)}


def _gan_step(
    gen: GANGenerator, st: dict[str, Any], cfg: GANTrainConfig, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
    rng: torch.Generator, device: torch.device, train_generator: bool = True,
) -> dict[str, float]:
    critic = gen.critic
    n = st["e"].shape[0]
    bs = cfg.batch_size
    d_loss_v = 0.0
    for _ in range(cfg.n_critic):
        idx = torch.randint(0, n, (bs,), generator=rng).to(device)
        e, f_real = st["e"][idx], st["feats"][idx]
        c = gen.condition(e)
        z = torch.randn(bs, gen.latent_dim, generator=rng).to(device)
        with torch.no_grad():
            f_fake = gen.features(gen.postprocess(gen.network(z, c), e, threshold=False), e)
        eps = torch.rand(bs, 1, generator=rng).to(device)
        f_mix = (eps * f_real + (1 - eps) * f_fake).requires_grad_(True)
        d_real, d_fake = critic(f_real, c), critic(f_fake, c)
        grad = torch.autograd.grad(critic(f_mix, c).sum(), f_mix, create_graph=True)[0]
        gp = ((grad.norm(dim=1) - 1) ** 2).mean()
        d_loss = d_fake.mean() - d_real.mean() + cfg.gp_weight * gp + 1e-3 * (d_real**2).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        d_loss_v = float(d_loss.detach())
    out = {"critic_loss": d_loss_v, "w_dist": float((d_real.mean() - d_fake.mean()).detach())}
    if not train_generator:
        return out
    idx = torch.randint(0, n, (bs,), generator=rng).to(device)
    e = st["e"][idx]
    c = gen.condition(e)
    z = torch.randn(bs, gen.latent_dim, generator=rng).to(device)
    f_fake = gen.features(gen.postprocess(gen.network(z, c), e, threshold=False), e)
    adv = -critic(f_fake, c).mean()
    mom = st["targets"].loss(f_fake, _energy_bin(c, cfg.moment_bins))
    g_loss = adv + cfg.moment_weight * mom
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    out.update(loss=float(g_loss.detach()), moment_loss=float(mom.detach()))
    return out


def _flow_setup(gen: FlowGenerator, data: ShowerSet, device: torch.device, seed: int, set_std: bool) -> dict[str, Any]:
    e = torch.as_tensor(data.incident_energy, dtype=torch.float32)
    x = torch.as_tensor(data.showers, dtype=torch.float32)
    if set_std:
        gen.set_standardisation(x[:50000], e[:50000], torch.Generator().manual_seed(seed))
    return {"e": e.to(device), "x": x.to(device)}


def _flow_step(
    gen: FlowGenerator, st: dict[str, Any], cfg: FlowTrainConfig, opt: torch.optim.Optimizer, rng: torch.Generator, device: torch.device
) -> dict[str, float]:
    n = st["e"].shape[0]
    idx = torch.randint(0, n, (cfg.batch_size,), generator=rng).to(device)
    e, x = st["e"][idx], st["x"][idx]
    y = gen.preprocess(x, e, generator=rng, dequantise=True)
    loss = -gen.network.log_prob(y, gen.condition(e)).mean() / y.shape[1]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(gen.parameters(), cfg.grad_clip)
    opt.step()
    return {"loss": float(loss.detach())}


# ----------------------------------------------------------------------------- checkpoints
def _opt_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{pid}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _opt_restore(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _save_checkpoint(
    ckpt: Path, gen: ShowerGenerator, opts: dict[str, torch.optim.Optimizer], rng: torch.Generator, step: int, meta: dict[str, Any]
) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in gen.state_dict().items()}
    critic = getattr(gen, "critic", None)
    if critic is not None:
        tensors.update({f"critic.{k}": v.detach().cpu().contiguous().clone() for k, v in critic.state_dict().items()})
    opt_meta = {}
    for name, opt in opts.items():
        t, m = _opt_tensors(f"opt_{name}", opt)
        tensors.update(t)
        opt_meta[name] = m
    tensors["rng_state"] = rng.get_state()
    tensors["torch_rng_state"] = torch.get_rng_state()
    tmp = ckpt / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, ckpt / "state.safetensors")
    info = {"step": step, "optimizers": opt_meta, **meta, "saved": utc_now()}
    tmpj = ckpt / "state.json.tmp"
    tmpj.write_text(json.dumps(info, indent=1, default=str))
    os.replace(tmpj, ckpt / "state.json")


def _load_checkpoint(
    ckpt: Path, gen: ShowerGenerator, opts: dict[str, torch.optim.Optimizer], rng: torch.Generator
) -> dict[str, Any]:
    info = json.loads((ckpt / "state.json").read_text())
    tensors = load_file(str(ckpt / "state.safetensors"))
    gen.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    critic = getattr(gen, "critic", None)
    if critic is not None:
        critic.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("critic.")}, strict=True)
    for name, opt in opts.items():
        _opt_restore(f"opt_{name}", opt, tensors, info["optimizers"][name])
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


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("max|Δ<E>/E| {task.fields[fid]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


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
        resuming = resume and (ckpt / "state.json").is_file()
        if resuming:
            info = json.loads((ckpt / "state.json").read_text())
            if info.get("config") != cfg_json or info.get("data_sha256") != data_hash:
                msg = f"{ckpt}: checkpoint was made with another recipe or other data; use a new --out or --no-resume"
                raise ConfigError(
                    msg
                )
        if isinstance(gen, GANGenerator):
            assert isinstance(cfg, GANTrainConfig)
            gen.calibrate(torch.as_tensor(train_set.showers), torch.as_tensor(train_set.incident_energy))
            gen.to(device)
            st = _gan_setup(gen, train_set, cfg, device)
            gen.critic.set_standardisation(st["feats"].cpu())
            gen.critic.to(device)
            opts = {
                "g": torch.optim.Adam(gen.network.parameters(), lr=cfg.lr_generator, betas=cfg.betas),
                "d": torch.optim.Adam(gen.critic.parameters(), lr=cfg.lr_critic, betas=cfg.betas),
            }
            base_lr = {"g": cfg.lr_generator, "d": cfg.lr_critic}
        else:
            assert isinstance(cfg, FlowTrainConfig) and isinstance(gen, FlowGenerator)
            st = _flow_setup(gen, train_set, device, cfg.seed, set_std=True)
            opts = {"flow": torch.optim.Adam(gen.network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)}
            base_lr = {"flow": cfg.lr}
        if resuming:
            info = _load_checkpoint(ckpt, gen, opts, rng)
            start = int(info["step"])
            history = list(info.get("history", []))
        meta = {"config": cfg_json, "data_sha256": data_hash}

        fid = float("nan")
        last_loss = float("nan")
        t0 = time.time()
        with _progress(progress) as prog:
            task = prog.add_task(f"train {cfg.kind}", total=cfg.steps, completed=start, loss="-", fid="-")
            gen.train()
            for step in range(start, cfg.steps):
                f = _lr_factor(step, cfg.steps, cfg.final_lr_fraction)
                for name, opt in opts.items():
                    for group in opt.param_groups:
                        group["lr"] = base_lr[name] * f
                if isinstance(gen, GANGenerator):
                    rec = _gan_step(gen, st, cfg, opts["g"], opts["d"], rng, device)  # type: ignore[arg-type]
                else:
                    rec = _flow_step(gen, st, cfg, opts["flow"], rng, device)  # type: ignore[arg-type]
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
                    _save_checkpoint(ckpt, gen, opts, rng, done, {**meta, "history": history})
                prog.update(task, advance=1, loss=f"{last_loss:.4f}", fid=f"{fid:.2f}%" if math.isfinite(fid) else "-")
        gen.eval()
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
    if not (ckpt / "state.json").is_file():
        msg = f"{ckpt}: no checkpoint found"
        raise ConfigError(msg)
    info = json.loads((ckpt / "state.json").read_text())
    if info.get("config") != config.model_dump(mode="json"):
        msg = f"{ckpt}: checkpoint was made with another recipe"
        raise ConfigError(msg)
    gen = build_from_config(config)
    tensors = load_file(str(ckpt / "state.safetensors"))
    gen.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    critic = getattr(gen, "critic", None)
    if critic is not None:
        critic.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("critic.")}, strict=True)
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
    params = [p for p in gen.network.parameters() if p.requires_grad]
    if isinstance(gen, GANGenerator):
        cfg = GANTrainConfig(batch_size=batch_size, lr_generator=lr, lr_critic=lr, seed=seed)
        st = _gan_setup(gen, data, cfg, device)
        if not getattr(gen, "has_trained_critic", False):
            gen.critic.set_standardisation(st["feats"].cpu())
        gen.critic.to(device)
        opt_g = torch.optim.Adam(params, lr=lr, betas=cfg.betas)
        opt_d = torch.optim.Adam(gen.critic.parameters(), lr=lr, betas=cfg.betas)
        if not getattr(gen, "has_trained_critic", False):
            for _ in range(max(1, critic_warmup // cfg.n_critic)):
                _gan_step(gen, st, cfg, opt_g, opt_d, rng, device, train_generator=False)
            gen.has_trained_critic = True  # type: ignore[attr-defined]
        for _ in range(steps):
            _gan_step(gen, st, cfg, opt_g, opt_d, rng, device)
    elif isinstance(gen, FlowGenerator):
        fcfg = FlowTrainConfig(batch_size=batch_size, lr=lr, seed=seed)
        st = _flow_setup(gen, data, device, seed, set_std=False)
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(steps):
            _flow_step(gen, st, fcfg, opt, rng, device)
    else:
        msg = f"finetune: no training objective for generator kind {gen.kind!r}"
        raise ConfigError(msg)
    gen.eval()
    return gen


def copy_generator(gen: ShowerGenerator) -> ShowerGenerator:
    """Deep copy including the GAN critic (which is not a registered submodule)."""
    return copy.deepcopy(gen)
