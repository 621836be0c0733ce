"""Tensor-train (TT-matrix) factorization of Linear layers."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ...errors import UnsupportedLayerError
from ..base import CompressionResult, MethodConfig, register_method
from ..modules import TTLinear, balanced_factors
from ..parametrizations import ActQuant, attach_input_quantizer
from ._common import record, set_module, skipped_subclasses, targets

__all__ = ["TensorTrainConfig", "tensor_train", "tt_decompose"]


class TensorTrainConfig(MethodConfig):
    """Replace each selected Linear by a :class:`~simcompress.compress.modules.TTLinear`
    with ``cores`` cores and TT ranks at most ``max_rank``, found by TT-SVD
    (Oseledets 2011) of the weight reshaped to ``(o1 i1, o2 i2, ...)``.

    Dimensions are factored into ``cores`` near-equal factors; a dimension with
    no good factorization is zero-padded by at most ``max_pad`` (fraction),
    which does not change the layer's function.
    """

    method: ClassVar[str] = "tensor_train"
    cores: int = Field(2, ge=2, le=6)
    max_rank: int = Field(8, ge=1)
    max_pad: float = Field(0.1, ge=0.0, le=1.0)
    only_if_smaller: bool = True


def tt_decompose(w: Tensor, out_factors: list[int], in_factors: list[int], max_rank: int) -> tuple[list[Tensor], list[int]]:
    """TT-SVD of the (zero-padded) matrix ``w``: cores ``(r_{k-1}, o_k, i_k, r_k)`` and ranks."""
    d = len(out_factors)
    w = w.detach().to(torch.float64)
    w = F.pad(w, (0, math.prod(in_factors) - w.shape[1], 0, math.prod(out_factors) - w.shape[0]))
    t = w.reshape(*out_factors, *in_factors)
    perm = [x for k in range(d) for x in (k, d + k)]
    t = t.permute(perm).contiguous()
    cores = []
    ranks = [1]
    c = t.reshape(out_factors[0] * in_factors[0], -1)
    for k in range(d - 1):
        c = c.reshape(ranks[-1] * out_factors[k] * in_factors[k], -1)
        u, s, vh = torch.linalg.svd(c, full_matrices=False)
        r = max(1, min(max_rank, int((s > 0).sum()) or 1, len(s)))
        cores.append(u[:, :r].reshape(ranks[-1], out_factors[k], in_factors[k], r))
        c = s[:r, None] * vh[:r]
        ranks.append(r)
    cores.append(c.reshape(ranks[-1], out_factors[-1], in_factors[-1], 1))
    ranks.append(1)
    return cores, ranks


@register_method(TensorTrainConfig)
def tensor_train(model: nn.Module, config: TensorTrainConfig, **_: Any) -> CompressionResult:
    recs = skipped_subclasses(model, config, (nn.Linear,), "tensor_train")
    for name, mod in targets(model, config, (nn.Linear,)):
        out_f, in_f = mod.out_features, mod.in_features
        try:
            of = balanced_factors(out_f, config.cores, config.max_pad)
            inf = balanced_factors(in_f, config.cores, config.max_pad)
        except ValueError as err:
            msg = f"tensor_train: layer {name!r} ({in_f}->{out_f}): {err}"
            raise UnsupportedLayerError(msg) from None
        cores, ranks = tt_decompose(mod.weight, of, inf, config.max_rank)
        tt = TTLinear(in_f, out_f, inf, of, ranks, bias=mod.bias is not None)
        dtype = mod.weight.dtype
        tt.to(dtype)
        with torch.no_grad():
            for p, c in zip(tt.cores, cores, strict=False):
                p.copy_(c.to(dtype))
            if mod.bias is not None and tt.bias is not None:  # tt has a bias exactly when mod has one
                tt.bias.copy_(mod.bias.detach())
            w = mod.weight.detach().to(torch.float64)
            rel = float(torch.linalg.norm(tt.full_weight().to(torch.float64) - w) / max(float(torch.linalg.norm(w)), 1e-300))
        n_tt = sum(c.numel() for c in tt.cores)
        details = {"in_factors": inf, "out_factors": of, "ranks": ranks, "rel_error": rel}
        if config.only_if_smaller and n_tt >= in_f * out_f:
            recs.append(record(name, "tensor_train", mod, mod, kept=True, note="TT cores would not be smaller", **details))
            continue
        q = getattr(mod, "input_quantizer", None)
        if isinstance(q, ActQuant):
            attach_input_quantizer(tt, q)
        tt.train(mod.training)
        set_module(model, name, tt)
        recs.append(record(name, "tensor_train", mod, tt, **details))
    return CompressionResult(model, config, tuple(recs))
