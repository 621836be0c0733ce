"""What the three distillation algorithms share: the teacher pool, the student builders'
registry, the report (``extra``) and the physics loss terms."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from .._progress import progress_bar
from ..compress.base import CompressionResult, GateResult, LayerRecord
from ..errors import ConfigError
from .config import _DistillBase
from .speed import compare_sampling_speed
from .train import fingerprint_of, save_tensors_atomic

__all__ = ["Pool", "build_student", "draw_pool", "student_builder"]

StudentBuilder = Callable[[Any, Any], Any]
_STUDENTS: dict[type[_DistillBase], StudentBuilder] = {}


def student_builder(config_cls: type[_DistillBase]) -> Callable[[StudentBuilder], StudentBuilder]:
    """Decorator: ``builder(teacher, config) -> untrained student`` for configs of ``config_cls``."""

    def deco(fn: StudentBuilder) -> StudentBuilder:
        _STUDENTS[config_cls] = fn
        return fn

    return deco


def build_student(teacher: Any, config: _DistillBase) -> Any:
    """The untrained student a config asks for (architecture from the config, the rest from the teacher).

    IAF: the teacher's preprocessing, standardisation buffers and permutations; MLP: the
    teacher's latent width, energy range and voxel threshold; GAN: the teacher's output
    parametrisation and a copy of its critic (for feature matching and fine-tuning).
    """
    builder = _STUDENTS.get(type(config))
    if builder is None:
        msg = f"build_student: not a distillation config: {type(config).__name__}"
        raise ConfigError(msg)
    return builder(teacher, config)


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
    with progress_bar("teacher samples", n, enabled=tc.progress) as bar:
        for s in range(0, n, tc.pool_batch_size):
            zb, eb = z[s : s + tc.pool_batch_size], e[s : s + tc.pool_batch_size]
            y = teacher.network(zb, teacher.condition(eb))
            ys.append(y)
            xs.append(teacher.postprocess(y, eb))
            bar.advance(zb.shape[0])
    pool = Pool(z, e, torch.cat(ys), torch.cat(xs))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_tensors_atomic(
            {"z": pool.z, "e": pool.e, "y": pool.y, "showers": pool.showers}, cache, metadata={"fingerprint": fingerprint}
        )
    return pool


# --------------------------------------------------------------------------------------
# shared report pieces
# --------------------------------------------------------------------------------------
def _gate_dict(r: GateResult) -> dict[str, Any]:
    return {"passed": bool(r.passed), "summary": r.summary, "metrics": r.metrics}


def _fidelity(gate: Any, teacher: nn.Module, student: nn.Module) -> dict[str, Any] | None:
    if gate is None:
        return None
    t0 = time.perf_counter()
    out: dict[str, Any] = {"teacher": _gate_dict(gate(teacher)), "student": _gate_dict(gate(student))}
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
    xs = student.postprocess(student.network(z[:, : int(student.latent_dim)], student.condition(e)), e)  # a narrower student reads the first coordinates
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


def _physics_terms(
    xs: torch.Tensor, xt_layers: torch.Tensor, e: torch.Tensor, onehot: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer-fraction loss, total-fraction loss), standardised by the teacher pool's spread."""
    ls = xs @ onehot / e[:, None]
    layer = ((ls - xt_layers) / scale[:-1]).pow(2).mean()
    total = ((ls.sum(1) - xt_layers.sum(1)) / scale[-1]).pow(2).mean()
    return layer, total


def shape_basis(geometry: Any) -> torch.Tensor:
    """(3, n_voxels) float32: each voxel's centre x, y (mm) and its distance r from the shower axis."""
    return torch.as_tensor(np.stack([geometry.voxel_x, geometry.voxel_y, geometry.voxel_r]), dtype=torch.float32)


def shape_features(xs: torch.Tensor, onehot: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Per-layer energy-weighted centres and widths of showers ``xs`` (B, V) in MeV, differentiable: (B, 6 L).

    Columns: for each coordinate of ``basis`` (x, y, r) the layers' centres ``sum(c E) / sum(E)``, then
    their widths ``sqrt(sum(c^2 E) / sum(E) - centre^2)``: the CaloChallenge ``EC_*`` / ``width_*``
    definitions without the voxel threshold (a training signal; 1e-3 MeV keeps empty layers finite).
    """
    den = xs @ onehot + 1e-3
    out: list[torch.Tensor] = []
    for c in basis:
        m1 = (xs * c) @ onehot / den
        m2 = (xs * (c * c)) @ onehot / den
        out += [m1, (m2 - m1 * m1).clamp_min(1e-6).sqrt()]
    return torch.cat(out, 1)


def mmd(a: torch.Tensor, b: torch.Tensor, bandwidths: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:
    """Squared maximum mean discrepancy (biased estimate) of samples ``a`` (n, d) and ``b`` (m, d).

    A sum of Gaussian kernels ``exp(-|x - y|^2 / (2 h^2 d))`` over ``bandwidths`` h, for standardised
    inputs (so h is in units of one feature's spread). A distribution-level term: it compares the two
    batches as samples, where a same-noise term compares them shower by shower. Written here: it is
    six lines of torch (geomloss has kernel losses, but a dependency for these lines is not worth it).
    """
    d = a.shape[1]
    x = torch.cat([a, b])
    sq = torch.cdist(x, x).pow(2) / d
    k = torch.stack([torch.exp(-sq / (2.0 * h * h)) for h in bandwidths]).sum(0)
    n = a.shape[0]
    return k[:n, :n].mean() + k[n:, n:].mean() - 2.0 * k[:n, n:].mean()


def _shape_stats(
    showers: torch.Tensor, onehot: torch.Tensor, basis: torch.Tensor, chunk: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape features of a teacher pool (in chunks: bounded memory) and their spread, clamped at 1e-2 mm."""
    with torch.no_grad():
        f = torch.cat([shape_features(showers[i : i + chunk], onehot, basis) for i in range(0, showers.shape[0], chunk)])
    return f, f.std(0).clamp_min(1e-2)


def _layer_stats(showers: torch.Tensor, e: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lt = showers @ onehot / e[:, None]
    scale = torch.cat([lt.std(0), lt.sum(1).std().reshape(1)]).clamp_min(1e-4)
    return lt, scale
