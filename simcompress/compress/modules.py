"""Replacement modules introduced by the low-rank methods.

:class:`Factorized` is an ``nn.Sequential`` of plain layers (two ``nn.Linear``
for a rank-r matrix factorization, three convolutions for Tucker-2), so it
exports to ONNX/hls4ml as ordinary layers. :class:`TTLinear` is a tensor-train
(TT-matrix) linear layer.
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BundleError

__all__ = ["PLAIN_LAYER_TYPES", "Factorized", "Layer", "TTLinear", "balanced_factors", "base_type", "module_from_spec", "module_spec"]


def base_type(mod: nn.Module) -> type:
    """The module's class, seen through the dynamic subclass ``parametrize`` creates."""
    from torch.nn.utils import parametrize

    cls = type(mod)
    if parametrize.is_parametrized(mod):
        cls = cls.__bases__[0]
    return cls


#: A layer selected by its type (Linear, Conv*, ConvTranspose*, BatchNorm*, a registered module) whose
#: attributes are read (``.weight``, ``.kernel_size``, ``.parametrizations``). torch's stubs type every
#: attribute of an ``nn.Module`` as ``Tensor | Module`` (``Module.__getattr__``), which no annotation of a
#: layer of several possible types can narrow; code reading such attributes annotates the layer with this.
Layer: TypeAlias = Any

_CONVS: dict[str, type[nn.Module]] = {
    "Conv1d": nn.Conv1d, "Conv2d": nn.Conv2d, "Conv3d": nn.Conv3d,
    "ConvTranspose1d": nn.ConvTranspose1d, "ConvTranspose2d": nn.ConvTranspose2d, "ConvTranspose3d": nn.ConvTranspose3d,
}
_NORMS: dict[str, type[nn.Module]] = {"BatchNorm1d": nn.BatchNorm1d, "BatchNorm2d": nn.BatchNorm2d, "BatchNorm3d": nn.BatchNorm3d}
#: plain torch layers :func:`module_spec` describes (their shapes are rebuilt from the spec)
PLAIN_LAYER_TYPES: tuple[str, ...] = ("Linear", *_CONVS, *_NORMS)


def module_spec(mod: Layer) -> dict[str, Any]:
    """Constructor spec of a plain layer (Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d,
    BatchNorm1d/2d/3d) or a registered module."""
    cls = base_type(mod)
    if hasattr(cls, "from_spec") and hasattr(mod, "to_spec"):
        return {"type": cls.__name__, **mod.to_spec()}
    if cls is nn.Linear:
        return {"type": "Linear", "in_features": mod.in_features, "out_features": mod.out_features, "bias": mod.bias is not None}
    if cls in _CONVS.values():
        spec = {
            "type": cls.__name__,
            "in_channels": mod.in_channels,
            "out_channels": mod.out_channels,
            "kernel_size": list(mod.kernel_size),
            "stride": list(mod.stride),
            "padding": mod.padding if isinstance(mod.padding, str) else list(mod.padding),
            "dilation": list(mod.dilation),
            "groups": mod.groups,
            "bias": mod.bias is not None,
            "padding_mode": mod.padding_mode,
        }
        if cls.__name__.startswith("ConvTranspose"):
            spec["output_padding"] = list(mod.output_padding)
        return spec
    if cls in _NORMS.values():
        return {
            "type": cls.__name__,
            "num_features": mod.num_features,
            "eps": mod.eps,
            "momentum": mod.momentum,
            "affine": mod.affine,
            "track_running_stats": mod.track_running_stats,
        }
    if cls is nn.Identity:
        return {"type": "Identity"}
    msg = f"no spec for module type {cls.__name__}"
    raise BundleError(msg)


def module_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Inverse of :func:`module_spec` (plain layers and the bundle allowlist only)."""
    from .bundle import registered_module_type  # allowlist lives in bundle

    spec = dict(spec)
    kind = spec.pop("type")
    if kind == "Linear":
        return nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
    if kind in _CONVS:
        pad = spec["padding"]
        extra = {"output_padding": tuple(spec.get("output_padding", 0))} if kind.startswith("ConvTranspose") else {}
        return _CONVS[kind](
            spec["in_channels"],
            spec["out_channels"],
            tuple(spec["kernel_size"]),
            stride=tuple(spec["stride"]),
            padding=pad if isinstance(pad, str) else tuple(pad),
            dilation=tuple(spec["dilation"]),
            groups=spec["groups"],
            bias=spec["bias"],
            padding_mode=spec["padding_mode"],
            **extra,
        )
    if kind in _NORMS:
        return _NORMS[kind](
            spec["num_features"], eps=spec["eps"], momentum=spec["momentum"], affine=spec["affine"],
            track_running_stats=spec["track_running_stats"],
        )
    if kind == "Identity":
        return nn.Identity()
    return registered_module_type(kind).from_spec(spec)


class Factorized(nn.Sequential):
    """A layer replaced by a chain of plain layers (``Linear(in, r) -> Linear(r, out)``, Tucker convs).

    It is an ``nn.Sequential`` and nothing more, so its forward is exactly the
    composition of the plain layers.
    """

    def to_spec(self) -> dict[str, Any]:
        return {"children": [module_spec(m) for m in self]}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Factorized:
        return cls(*[module_from_spec(c) for c in spec["children"]])


def _factorizations(n: int, d: int, start: int = 2) -> list[list[int]]:
    if d == 1:
        return [[n]] if n >= start else []
    out = []
    f = start
    while f ** d <= n:
        if n % f == 0:
            out += [[f, *rest] for rest in _factorizations(n // f, d - 1, f)]
        f += 1
    return out


def balanced_factors(n: int, d: int, max_pad: float = 0.1) -> list[int]:
    """Factor ``n`` (or the smallest ``n' >= n`` within ``max_pad``) into ``d`` near-equal factors.

    Returns the factor list (sorted descending); their product may exceed ``n``
    by padding, which :class:`TTLinear` fills with zeros. The choice minimises
    the largest factor (the TT cost grows with it).

    >>> balanced_factors(368, 2)
    [21, 18]
    >>> balanced_factors(64, 3)
    [4, 4, 4]
    """
    if d < 1 or n < 1:
        msg = f"cannot factor {n} into {d} factors"
        raise ValueError(msg)
    if d == 1:
        return [n]
    best: tuple[int, int, list[int]] | None = None
    for m in range(n, math.floor(n * (1 + max_pad)) + 1):
        for fs in _factorizations(m, d):
            key = (max(fs), m)
            if best is None or key < best[:2]:
                best = (max(fs), m, fs)
        if best is not None and best[0] <= math.ceil(m ** (1 / d)) + 1:
            break
    if best is None:
        msg = f"cannot factor {n} into {d} factors >= 2"
        raise ValueError(msg)
    return sorted(best[2], reverse=True)


class TTLinear(nn.Module):
    """Linear layer whose weight is a tensor-train (TT-matrix).

    ``W[(i1..id), (j1..jd)] = G1[:, i1, j1, :] @ G2[:, i2, j2, :] @ ... @ Gd``, with
    cores ``G_k`` of shape ``(r_{k-1}, out_k, in_k, r_k)`` and ``r_0 = r_d = 1``.
    Inputs are zero-padded to ``prod(in_factors)`` and outputs truncated to
    ``out_features``; the forward contracts core by core (never builds ``W``).

    References:
        Novikov et al., "Tensorizing Neural Networks", NeurIPS 2015, arXiv:1509.06569.
    """

    def __init__(self, in_features: int, out_features: int, in_factors: list[int], out_factors: list[int], ranks: list[int], bias: bool = True) -> None:
        super().__init__()
        if len(in_factors) != len(out_factors) or len(ranks) != len(in_factors) + 1 or ranks[0] != 1 or ranks[-1] != 1:
            msg = "inconsistent TT factors/ranks"
            raise ValueError(msg)
        self.in_features = in_features
        self.out_features = out_features
        self.in_factors = list(in_factors)
        self.out_factors = list(out_factors)
        self.ranks = list(ranks)
        self.cores = nn.ParameterList(
            [nn.Parameter(torch.zeros(ranks[k], out_factors[k], in_factors[k], ranks[k + 1])) for k in range(len(in_factors))]
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def d(self) -> int:
        return len(self.in_factors)

    def full_weight(self) -> Tensor:
        """The dense ``(out_features, in_features)`` weight the cores represent."""
        t = self.cores[0]  # (1, o1, i1, r1)
        for core in self.cores[1:]:
            # t: (1, O, I, r) x core (r, o, i, s) -> (1, O, o, I, i, s)
            t = torch.einsum("aOIr,rois->aOoIis", t, core)
            a, o1, o2, i1, i2, s = t.shape
            t = t.reshape(a, o1 * o2, i1 * i2, s)
        w = t[0, :, :, 0]
        return w[: self.out_features, : self.in_features]

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        pad_in = math.prod(self.in_factors) - self.in_features
        if pad_in:
            x = F.pad(x, (0, pad_in))
        b = x.shape[0]
        # state: (B, O_done, r, rest_in)
        s = x.reshape(b, 1, 1, -1)
        for k, core in enumerate(self.cores):
            ik = self.in_factors[k]
            rest = s.shape[-1] // ik
            s = s.reshape(b, s.shape[1], s.shape[2], ik, rest)
            s = torch.einsum("bOrip,rois->bOosp", s, core.to(x.dtype))
            s = s.reshape(b, s.shape[1] * s.shape[2], s.shape[3], rest)
        y = s.reshape(b, -1)[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*lead, self.out_features)

    def macs_per_sample(self) -> int:
        """Multiply-accumulates of one forward of one sample, core by core."""
        macs = 0
        o_done = 1
        rest = math.prod(self.in_factors)
        for k in range(self.d):
            rest //= self.in_factors[k]
            macs += o_done * self.ranks[k] * self.in_factors[k] * rest * self.out_factors[k] * self.ranks[k + 1]
            o_done *= self.out_factors[k]
        return macs

    def to_spec(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "in_factors": self.in_factors,
            "out_factors": self.out_factors,
            "ranks": self.ranks,
            "bias": self.bias is not None,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> TTLinear:
        return cls(spec["in_features"], spec["out_features"], spec["in_factors"], spec["out_factors"], spec["ranks"], spec["bias"])

    def extra_repr(self) -> str:
        return f"in={self.in_features} {self.in_factors}, out={self.out_features} {self.out_factors}, ranks={self.ranks}"
