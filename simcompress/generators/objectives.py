"""Per-kind training objectives behind the one training loop of :mod:`simcompress.generators.train`.

An objective owns a kind's optimizers and its step; the loop (and :func:`~simcompress.generators.train.finetune`)
asks :func:`objective_for` for the one of a generator's class and never branches on the kind.

GAN: WGAN-GP (critic ``n_critic`` steps per generator step, gradient penalty on interpolated
features; weight ``adversarial_weight`` in the generator loss) plus a per-energy moment-matching
term (mean and spread per energy bin of ``log r``, the layer fractions and, with the shape
critic, the centres, widths and soft sparsity; weight ``moment_weight``), normalised by the
reference spread in each energy bin. ``adversarial_weight: 0`` trains on the moments alone and
runs no critic steps (a stable fine-tuning of a trained GAN's shower shape).
With ``feature_threshold_mev`` both see the showers through :func:`~.gan.soft_threshold` (as validation
measures them above its voxel threshold) and ``sparsity_sharpness`` narrows their soft sparsity.
The generated showers the critic and the moment loss see are turned to random azimuthal
orientations when the GAN has ``alpha_symmetry`` (as in sampling).
Flow (and its subclasses, e.g. the IAF student): maximum likelihood of the dequantised
preprocessed showers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..showers.data import ShowerSet
from .base import ShowerGenerator
from .flow import FlowGenerator
from .gan import GANGenerator
from .recipes import FlowTrainConfig, GANTrainConfig, TrainConfig

__all__ = ["FlowObjective", "GANObjective", "Objective", "objective_for"]


def _energy_bin(c: torch.Tensor, n_bins: int) -> torch.Tensor:
    return torch.round((c.squeeze(1).clamp(-1, 1) + 1) / 2 * (n_bins - 1)).long()


class _MomentTargets:
    """Per-energy-bin reference mean and spread of ``[log r, layer fractions]`` (GAN moment loss)."""

    def __init__(self, feats: torch.Tensor, bins: torch.Tensor, n_bins: int, columns: list[int], n_quantiles: int = 0) -> None:
        self.columns = torch.as_tensor(columns, dtype=torch.long)
        x = feats[:, self.columns].double()
        # optional: the reference's per-bin quantiles at levels (i + 1/2) / q, matched beside mean and
        # spread (the shape of each feature's distribution, not only its first two moments)
        self.levels = (torch.arange(n_quantiles, dtype=torch.float64) + 0.5) / max(n_quantiles, 1)
        self.qref = torch.zeros(n_bins, n_quantiles, x.shape[1])
        self.has_q = torch.bincount(bins, minlength=n_bins) > 1  # bins whose reference quantiles exist
        if n_quantiles:
            for b in range(n_bins):
                xb = x[bins == b]
                if len(xb) > 1:
                    self.qref[b] = torch.quantile(xb, self.levels, dim=0).float()
        self.levels = self.levels.float()
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
        for k in ("mean", "std", "scale", "present", "columns", "levels", "qref", "has_q"):
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
        d = dm + ds
        if self.qref.shape[1]:
            dq = torch.zeros_like(d)
            for b in torch.nonzero(use & self.has_q).reshape(-1).tolist():
                qg = torch.quantile(x[bins == b], self.levels.to(x.dtype), dim=0)  # (q, width), differentiable
                dq[b] = (((qg - self.qref[b]) / self.scale[b]) ** 2).mean(dim=0)
            d = d + dq
        # log1p: quadratic near the target, bounded gradient far from it (early training)
        per_bin = torch.log1p(d).mean(dim=1)
        return per_bin[use].mean() if use.any() else x.sum() * 0.0


def _gan_setup(gen: GANGenerator, data: ShowerSet, cfg: GANTrainConfig, device: torch.device) -> dict[str, Any]:
    e = torch.as_tensor(data.incident_energy, dtype=torch.float32)
    x = torch.as_tensor(data.showers, dtype=torch.float32)
    fkw = {"threshold_mev": cfg.feature_threshold_mev, "sparsity_sharpness": cfg.sparsity_sharpness}
    with torch.no_grad():
        feats = torch.cat(
            [gen.features(x[i : i + 20000], e[i : i + 20000], **fkw) for i in range(0, len(e), 20000)]
        )
        bins = _energy_bin(gen.condition(e), cfg.moment_bins)
    targets = _MomentTargets(feats, bins, cfg.moment_bins, gen.moment_columns(), cfg.moment_quantiles)
    return {"e": e.to(device), "feats": feats.to(device), "targets": targets.to(device)}


def _gan_step(
    gen: GANGenerator, st: dict[str, Any], cfg: GANTrainConfig, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
    rng: torch.Generator, device: torch.device, train_generator: bool = True,
) -> dict[str, float]:
    critic = gen.critic
    n = st["e"].shape[0]
    bs = cfg.batch_size
    d_loss_v = 0.0
    adversarial = cfg.adversarial_weight > 0
    fkw = {"threshold_mev": cfg.feature_threshold_mev, "sparsity_sharpness": cfg.sparsity_sharpness}
    out: dict[str, float] = {}
    for _ in range(cfg.n_critic if adversarial else 0):
        idx = torch.randint(0, n, (bs,), generator=rng).to(device)
        e, f_real = st["e"][idx], st["feats"][idx]
        c = gen.condition(e)
        z = torch.randn(bs, gen.latent_dim, generator=rng).to(device)
        extras = gen.sample_extras(bs, rng)  # the azimuthal orientation of an alpha-symmetric GAN
        with torch.no_grad():
            f_fake = gen.features(gen.postprocess(gen.network(z, c), e, threshold=False, **extras), e, **fkw)
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
    extras = gen.sample_extras(bs, rng)
    f_fake = gen.features(gen.postprocess(gen.network(z, c), e, threshold=False, **extras), e, **fkw)
    mom = st["targets"].loss(f_fake, _energy_bin(c, cfg.moment_bins))
    g_loss = cfg.moment_weight * mom
    if adversarial:
        g_loss = g_loss + cfg.adversarial_weight * -critic(f_fake, c).mean()
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


class Objective:
    """A kind's training step with its optimizers (``opts``, base learning rates ``base_lr``).

    ``fresh=True``: training from scratch (fit the kind's data-dependent buffers first);
    ``fresh=False``: fine-tuning an existing generator (keep them).
    """

    generator_cls: ClassVar[type[ShowerGenerator]]
    opts: dict[str, torch.optim.Optimizer]
    base_lr: dict[str, float]

    def __init__(self, gen: Any, data: ShowerSet, cfg: Any, device: torch.device, *, fresh: bool) -> None:
        raise NotImplementedError

    @classmethod
    def finetune_config(cls, batch_size: int, lr: float, seed: int) -> TrainConfig:
        """The recipe :func:`~simcompress.generators.train.finetune` runs with."""
        raise NotImplementedError

    def step(self, rng: torch.Generator) -> dict[str, float]:
        raise NotImplementedError

    def warm_up(self, rng: torch.Generator, critic_warmup: int) -> None:
        """Before fine-tuning: whatever must be trained first (nothing by default)."""

    def set_lr(self, factor: float) -> None:
        for name, opt in self.opts.items():
            for group in opt.param_groups:
                group["lr"] = self.base_lr[name] * factor


class GANObjective(Objective):
    generator_cls = GANGenerator

    def __init__(self, gen: GANGenerator, data: ShowerSet, cfg: GANTrainConfig, device: torch.device, *, fresh: bool) -> None:
        self.gen, self.cfg, self.device = gen, cfg, device
        if fresh:
            gen.calibrate(torch.as_tensor(data.showers), torch.as_tensor(data.incident_energy))
            gen.to(device)
        self.st = _gan_setup(gen, data, cfg, device)
        if fresh or not getattr(gen, "has_trained_critic", False):
            gen.critic.set_standardisation(self.st["feats"].cpu())
        gen.critic.to(device)
        params = [p for p in gen.network.parameters() if p.requires_grad]
        self.opts = {
            "g": torch.optim.Adam(params, lr=cfg.lr_generator, betas=cfg.betas),
            "d": torch.optim.Adam(gen.critic.parameters(), lr=cfg.lr_critic, betas=cfg.betas),
        }
        self.base_lr = {"g": cfg.lr_generator, "d": cfg.lr_critic}

    @classmethod
    def finetune_config(cls, batch_size: int, lr: float, seed: int) -> GANTrainConfig:
        return GANTrainConfig(batch_size=batch_size, lr_generator=lr, lr_critic=lr, seed=seed)

    def step(self, rng: torch.Generator, train_generator: bool = True) -> dict[str, float]:
        return _gan_step(self.gen, self.st, self.cfg, self.opts["g"], self.opts["d"], rng, self.device, train_generator)

    def warm_up(self, rng: torch.Generator, critic_warmup: int) -> None:
        """A bundle without a trained critic: train the critic alone first."""
        if getattr(self.gen, "has_trained_critic", False):
            return
        for _ in range(max(1, critic_warmup // self.cfg.n_critic)):
            self.step(rng, train_generator=False)
        self.gen.has_trained_critic = True


class FlowObjective(Objective):
    generator_cls = FlowGenerator

    def __init__(self, gen: FlowGenerator, data: ShowerSet, cfg: FlowTrainConfig, device: torch.device, *, fresh: bool) -> None:
        self.gen, self.cfg, self.device = gen, cfg, device
        self.st = _flow_setup(gen, data, device, cfg.seed, set_std=fresh)
        params = [p for p in gen.network.parameters() if p.requires_grad]
        self.opts = {"flow": torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)}
        self.base_lr = {"flow": cfg.lr}

    @classmethod
    def finetune_config(cls, batch_size: int, lr: float, seed: int) -> FlowTrainConfig:
        return FlowTrainConfig(batch_size=batch_size, lr=lr, seed=seed)

    def step(self, rng: torch.Generator) -> dict[str, float]:
        return _flow_step(self.gen, self.st, self.cfg, self.opts["flow"], rng, self.device)


_OBJECTIVES: tuple[type[Objective], ...] = (GANObjective, FlowObjective)


def objective_for(gen: ShowerGenerator, where: str = "train") -> type[Objective]:
    """The objective of ``gen``'s class or its nearest base class that has one."""
    for cls in type(gen).__mro__:
        for obj in _OBJECTIVES:
            if obj.generator_cls is cls:
                return obj
    msg = f"{where}: no training objective for generator kind {gen.kind!r}"
    raise ConfigError(msg)
