"""Truncated SVD of Linear, Conv and ConvTranspose layers into two plain layers."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from ..._config import StrictModel
from ..base import CompressionResult, LayerRecord, MethodConfig, register_method
from ..modules import Factorized, Layer, base_type
from ..parametrizations import ActQuant, attach_input_quantizer, parametrizations_of
from ._common import (
    ALL_LAYER_TYPES,
    CONV_TRANSPOSE,
    LAYER_TYPES,
    record,
    set_module,
    skipped_subclasses,
    targets,
    types_from_names,
)

__all__ = ["SVDConfig", "SVDOptions", "choose_rank", "factorize_linear", "svd"]


class SVDOptions(StrictModel):
    """How to choose the rank: exactly one of ``rank``, ``energy`` (keep the
    smallest rank whose singular values hold this fraction of ``sum s_i^2``) or
    ``max_rel_error`` (smallest rank with ``||W - W_k||_F / ||W||_F`` at most this).

    ``randomized="auto"`` uses randomized SVD (Halko et al., ``torch.svd_lowrank``,
    seeded) when the smaller matrix side is at least ``randomized_min_dim``;
    ``only_if_smaller`` keeps a layer whose factors would not be smaller.
    """

    rank: int | None = Field(None, ge=1)
    energy: float | None = Field(None, gt=0.0, le=1.0)
    max_rel_error: float | None = Field(None, ge=0.0, lt=1.0)
    randomized: bool | Literal["auto"] = "auto"
    randomized_min_dim: int = Field(512, ge=2)
    oversample: int = Field(10, ge=0)
    niter: int = Field(4, ge=0)
    seed: int = 0
    only_if_smaller: bool = True

    @model_validator(mode="after")
    def _one_rule(self) -> SVDOptions:
        n = sum(x is not None for x in (self.rank, self.energy, self.max_rel_error))
        if n != 1:
            msg = "set exactly one of rank, energy, max_rel_error"
            raise ValueError(msg)
        return self


class SVDConfig(MethodConfig, SVDOptions):
    """Truncated SVD ``W ~ (U sqrt(S)) (sqrt(S) V^T)`` of each selected layer, exported as a
    ``Factorized`` chain of two plain layers. By Eckart-Young the Frobenius error is
    ``sqrt(sum_{i>r} s_i^2)``.

    * ``Linear(in, out)`` -> ``Linear(in, r, bias=False)``, ``Linear(r, out)``;
    * ``ConvNd`` (weight ``(out, in, k...)`` as the matrix ``(out, in*k)``) -> ``ConvNd(in, r, k)``
      with the original stride/padding/dilation, then a 1x1 ``ConvNd(r, out)`` with the bias;
    * ``ConvTransposeNd`` (weight ``(in, out, k...)`` as ``(in, out*k)``) -> a 1x1
      ``ConvNd(in, r)`` at the input resolution, then ``ConvTransposeNd(r, out, k)`` with the
      original stride/padding/output_padding/dilation and the bias.

    Both chains compute exactly the convolution with the rank-r weight. Grouped convolutions
    are kept unchanged (their record says so).
    """

    method: ClassVar[str] = "svd"
    types: tuple[str, ...] = ALL_LAYER_TYPES


def choose_rank(s: Tensor, opts: SVDOptions) -> int:
    """Rank from singular values ``s`` (descending) and the rule in ``opts``."""
    full = len(s)
    if opts.rank is not None:
        return min(opts.rank, full)
    e = (s.to(torch.float64) ** 2)
    total = float(e.sum())
    if total == 0.0:
        return 1
    if opts.energy is not None:
        kept = torch.cumsum(e, 0) / total
        return min(full, int(torch.searchsorted(kept, torch.tensor(opts.energy, dtype=torch.float64) - 1e-12)) + 1)
    tail = torch.flip(torch.cumsum(torch.flip(e, [0]), 0), [0])  # tail[k] = sum_{i>=k} s_i^2
    rel = torch.sqrt(torch.cat([tail[1:], torch.zeros(1, dtype=torch.float64)]) / total)  # error of rank k+1
    max_rel_error = float(opts.max_rel_error) if opts.max_rel_error is not None else 0.0  # exactly one rule is set
    ok = torch.nonzero(rel <= max_rel_error)
    return int(ok[0]) + 1 if len(ok) else full


def factorize_linear(w: Tensor, opts: SVDOptions) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Return ``(B, A)`` with ``B @ A`` the truncated SVD of ``w`` plus details."""
    w64 = w.detach().to(torch.float64)
    out_f, in_f = w64.shape
    small = min(out_f, in_f)
    use_rand = opts.randomized is True or (opts.randomized == "auto" and small >= opts.randomized_min_dim)
    if use_rand and opts.rank is not None and opts.rank + opts.oversample < small:
        k = opts.rank
        g = torch.Generator().manual_seed(opts.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            u, s, v = torch.svd_lowrank(w64, q=k + opts.oversample, niter=opts.niter)
        u, s, vh = u[:, :k], s[:k], v[:, :k].T
        s_all = None
        randomized = True
    else:
        u, s_all, vh = torch.linalg.svd(w64, full_matrices=False)
        k = choose_rank(s_all, opts)
        u, s, vh = u[:, :k], s_all[:k], vh[:k]
        randomized = False
    root = torch.sqrt(s)
    b = u * root
    a = root[:, None] * vh
    norm = float(torch.linalg.norm(w64))
    err = float(torch.linalg.norm(w64 - b @ a))
    details: dict[str, Any] = {"rank": int(k), "full_rank": int(small), "randomized": randomized,
                               "rel_error": err / norm if norm else 0.0}
    if s_all is not None:
        details["eckart_young_rel_error"] = float(torch.sqrt((s_all[k:] ** 2).sum())) / norm if norm else 0.0
    return b, a, details


_CONV_BY_DIM = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _factor_modules(mod: Layer, b: Tensor, a: Tensor, k: int) -> tuple[nn.Module, nn.Module]:
    """The two plain layers whose composition applies the rank-k weight ``b @ a``."""
    w = mod.weight
    dtype = w.dtype
    first: Layer
    second: Layer
    if isinstance(mod, nn.Linear):
        out_f, in_f = w.shape
        first = nn.Linear(in_f, k, bias=False, dtype=dtype)
        second = nn.Linear(k, out_f, bias=mod.bias is not None, dtype=dtype)
        with torch.no_grad():
            first.weight.copy_(a.to(dtype))
            second.weight.copy_(b.to(dtype))
    elif isinstance(mod, CONV_TRANSPOSE):
        nd = w.ndim - 2
        ones = (1,) * nd
        in_c, out_c, ksz = mod.in_channels, mod.out_channels, tuple(w.shape[2:])
        first = _CONV_BY_DIM[nd](in_c, k, ones, bias=False, dtype=dtype)
        second = base_type(mod)(k, out_c, ksz, stride=mod.stride, padding=mod.padding, output_padding=mod.output_padding,
                           dilation=mod.dilation, bias=mod.bias is not None, dtype=dtype)
        with torch.no_grad():
            first.weight.copy_(b.T.reshape(k, in_c, *ones).to(dtype))
            second.weight.copy_(a.reshape(k, out_c, *ksz).to(dtype))
    else:  # ConvNd
        nd = w.ndim - 2
        ones = (1,) * nd
        out_c, in_c, ksz = mod.out_channels, mod.in_channels, tuple(w.shape[2:])
        first = base_type(mod)(in_c, k, ksz, stride=mod.stride, padding=mod.padding, dilation=mod.dilation,
                          bias=False, padding_mode=mod.padding_mode, dtype=dtype)
        second = base_type(mod)(k, out_c, ones, bias=mod.bias is not None, dtype=dtype)
        with torch.no_grad():
            first.weight.copy_(a.reshape(k, in_c, *ksz).to(dtype))
            second.weight.copy_(b.reshape(out_c, k, *ones).to(dtype))
    if mod.bias is not None:
        with torch.no_grad():
            second.bias.copy_(mod.bias.detach())
    return first, second


def _as_matrix(mod: Layer) -> Tensor:
    w = mod.weight.detach()
    return w.reshape(w.shape[0], -1)


def factorize_layers(model: nn.Module, config: MethodConfig, opts: SVDOptions, kind: str) -> list[LayerRecord]:
    types = types_from_names(getattr(config, "types", ALL_LAYER_TYPES), LAYER_TYPES, config.method)
    recs = skipped_subclasses(model, config, types, kind)
    for name, mod in targets(model, config, types):
        if getattr(mod, "groups", 1) != 1:
            recs.append(record(name, kind, mod, mod, kept=True, note=f"grouped convolution (groups={mod.groups}) not factorized"))
            continue
        if not isinstance(mod, nn.Linear) and getattr(mod, "padding_mode", "zeros") != "zeros" and isinstance(mod, CONV_TRANSPOSE):
            recs.append(record(name, kind, mod, mod, kept=True, note=f"padding_mode={mod.padding_mode!r} not factorized"))
            continue
        m = _as_matrix(mod)
        b, a, details = factorize_linear(m, opts)
        k = details["rank"]
        rows, cols = m.shape
        if opts.only_if_smaller and k * (rows + cols) >= rows * cols:
            recs.append(record(name, kind, mod, mod, kept=True, note="factors would not be smaller", **details))
            continue
        first, second = _factor_modules(mod, b, a, k)
        dropped = [type(p).__name__ for p in parametrizations_of(mod, "weight")]
        if dropped:
            details["factorized_effective_weight_of"] = dropped
        new = Factorized(first, second)
        q = getattr(mod, "input_quantizer", None)
        if isinstance(q, ActQuant):
            attach_input_quantizer(first, q)
        new.train(mod.training)
        set_module(model, name, new)
        recs.append(record(name, kind, mod, new, **details))
    return recs


@register_method(SVDConfig)
def svd(model: nn.Module, config: SVDConfig, **_: Any) -> CompressionResult:
    return CompressionResult(model, config, tuple(factorize_layers(model, config, config, "svd")))
