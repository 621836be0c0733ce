"""Tucker-2 decomposition of (transposed) convolutions (HOSVD on the channel modes)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from ...errors import UnsupportedLayerError
from ..base import CompressionResult, MethodConfig, register_method
from ..modules import Factorized, base_type
from ..parametrizations import ActQuant, attach_input_quantizer
from ._common import LAYER_TYPES, record, set_module, skipped_subclasses, targets, types_from_names

__all__ = ["TuckerConfig", "tucker"]


_CONV_BY_DIM = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class TuckerConfig(MethodConfig):
    """Tucker-2 decomposition of convolution weights on their two channel modes
    (Kim et al., arXiv:1511.06530). A ``ConvNd`` (weight ``W[o, i, k...] ~ U_o G U_i``) becomes
    ``1x1 conv (in->r_in)``, ``kxk conv (r_in->r_out)`` with the original stride/padding/dilation,
    ``1x1 conv (r_out->out)`` with the bias; a ``ConvTransposeNd`` (weight ``W[i, o, k...]``) becomes
    ``1x1 conv (in->r_in)``, ``ConvTransposeNd (r_in->r_out)`` with the original
    stride/padding/output_padding/dilation, ``1x1 conv (r_out->out)`` with the bias. Both chains
    compute the convolution with the rank-(r_out, r_in) weight exactly. Ranks are
    ``ceil(rank_ratio * channels)``. Grouped convolutions raise
    :class:`~simcompress.errors.UnsupportedLayerError`.
    """

    method: ClassVar[str] = "tucker"
    rank_ratio: float = Field(0.5, gt=0.0, le=1.0)
    types: tuple[str, ...] = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
    only_if_smaller: bool = True


@register_method(TuckerConfig)
def tucker(model: nn.Module, config: TuckerConfig, **_: Any) -> CompressionResult:
    allowed = {k: v for k, v in LAYER_TYPES.items() if k.startswith("Conv")}
    types = types_from_names(config.types, allowed, config.method)
    recs = skipped_subclasses(model, config, types, "tucker")
    for name, mod in targets(model, config, types):
        if mod.groups != 1:
            msg = f"tucker: layer {name!r} is a grouped convolution (groups={mod.groups})"
            raise UnsupportedLayerError(msg)
        transposed = isinstance(mod, _CONV_T)
        w = mod.weight.detach().to(torch.float64)
        if transposed:
            w = w.transpose(0, 1)  # (out, in, k...) like a convolution
        o, i = w.shape[:2]
        r_o = max(1, math.ceil(config.rank_ratio * o))
        r_i = max(1, math.ceil(config.rank_ratio * i))
        u_o = torch.linalg.svd(w.reshape(o, -1), full_matrices=False)[0][:, :r_o]
        u_i = torch.linalg.svd(w.transpose(0, 1).reshape(i, -1), full_matrices=False)[0][:, :r_i]
        core = torch.einsum("oi...,or,is->rs...", w, u_o, u_i)  # (r_o, r_i, k...)
        nd = w.ndim - 2
        conv = _CONV_BY_DIM[nd]
        ones = (1,) * nd
        dtype = mod.weight.dtype
        first = conv(i, r_i, ones, bias=False, dtype=dtype)
        if transposed:
            mid = base_type(mod)(r_i, r_o, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                                 output_padding=mod.output_padding, dilation=mod.dilation, bias=False, dtype=dtype)
        else:
            mid = conv(r_i, r_o, mod.kernel_size, stride=mod.stride, padding=mod.padding, dilation=mod.dilation,
                       bias=False, padding_mode=mod.padding_mode, dtype=dtype)
        last = conv(r_o, o, ones, bias=mod.bias is not None, dtype=dtype)
        with torch.no_grad():
            first.weight.copy_(u_i.T.reshape(r_i, i, *ones).to(dtype))
            mid.weight.copy_((core.transpose(0, 1) if transposed else core).to(dtype))
            last.weight.copy_(u_o.reshape(o, r_o, *ones).to(dtype))
            if mod.bias is not None and last.bias is not None:  # last has a bias exactly when mod has one
                last.bias.copy_(mod.bias.detach())
        approx = torch.einsum("rs...,or,is->oi...", core, u_o, u_i)
        rel = float(torch.linalg.norm(approx - w) / max(float(torch.linalg.norm(w)), 1e-300))
        new = Factorized(first, mid, last)
        n_new = sum(p.numel() for p in new.parameters())
        details = {"ranks": [r_o, r_i], "rel_error": rel}
        if config.only_if_smaller and n_new >= sum(p.numel() for p in mod.parameters()):
            recs.append(record(name, "tucker", mod, mod, kept=True, note="factors would not be smaller", **details))
            continue
        q = getattr(mod, "input_quantizer", None)
        if isinstance(q, ActQuant):
            attach_input_quantizer(first, q)
        new.train(mod.training)
        set_module(model, name, new)
        recs.append(record(name, "tucker", mod, new, **details))
    return CompressionResult(model, config, tuple(recs))
