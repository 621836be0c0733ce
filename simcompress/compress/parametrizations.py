"""Parametrizations and small modules the compression methods attach to a model.

Masks, fake quantizers and LoRA updates are ``torch.nn.utils.parametrize``
parametrizations of a module's ``weight`` (or ``bias``), so they stack in any
order: pruning a quantized layer masks the quantized weight, quantizing a
pruned layer quantizes the masked weight, and so on. Activation quantizers are
an :class:`ActQuant` child module named ``input_quantizer`` plus a forward
pre-hook (:func:`attach_input_quantizer`).

Every class here has ``to_spec()``/``from_spec()`` and is registered in the
bundle allowlist (:mod:`simcompress.compress.bundle`), so a compressed model is
rebuilt without pickles.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = [
    "ActQuant",
    "FakeQuant",
    "LoRA",
    "Mask",
    "attach_input_quantizer",
    "bake",
    "clone_model",
    "effective",
    "fake_quantize",
    "find_parametrization",
    "isolate_classes",
    "parametrizations_of",
    "qrange",
]


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range of a ``bits``-wide code (two's complement when ``signed``)."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _round_ste(x: Tensor) -> Tensor:
    """Round to nearest (ties to even) with a straight-through gradient."""
    return x + (torch.round(x) - x).detach()


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Tensor, bits: int, signed: bool) -> Tensor:
    """Uniform affine fake quantization with a straight-through estimator.

    ``q = clamp(round(x / scale) + zero_point, qmin, qmax)``, returned as
    ``(q - zero_point) * scale``. The gradient passes straight through the
    rounding and is zero outside the clamping range.
    """
    lo, hi = qrange(bits, signed)
    q = torch.clamp(_round_ste(x / scale) + zero_point, lo, hi)
    return (q - zero_point) * scale


class Mask(nn.Module):
    """``weight * mask`` with a fixed 0/1 mask buffer (pruning)."""

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone().to(torch.bool))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask.to(x.dtype)

    def to_spec(self) -> dict[str, Any]:
        return {"shape": list(self.mask.shape)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Mask:
        return cls(torch.ones(spec["shape"], dtype=torch.bool))

    def extra_repr(self) -> str:
        n = self.mask.numel()
        return f"sparsity={1 - int(self.mask.sum()) / max(n, 1):.3f}"


class FakeQuant(nn.Module):
    """Fake quantization of a tensor onto a ``bits``-wide integer grid.

    Args:
        scale: per-tensor scalar or per-channel tensor broadcastable to the weight
            (channels on ``axis``).
        zero_point: same shape as ``scale`` (zeros when symmetric).
        bits: code width.
        signed: signed codes (symmetric quantization) or unsigned (asymmetric).
        axis: channel axis of per-channel quantization, ``None`` for per-tensor.
    """

    scale: Tensor
    zero_point: Tensor

    def __init__(self, scale: Tensor, zero_point: Tensor, bits: int, signed: bool, axis: int | None) -> None:
        super().__init__()
        self.bits = int(bits)
        self.signed = bool(signed)
        self.axis = axis
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("zero_point", zero_point.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return fake_quantize(x, self.scale, self.zero_point, self.bits, self.signed)

    def codes(self, x: Tensor) -> Tensor:
        """Integer codes of ``x`` (what an integer kernel stores)."""
        lo, hi = qrange(self.bits, self.signed)
        return torch.clamp(torch.round(x / self.scale) + self.zero_point, lo, hi).to(torch.int64)

    @property
    def n_scales(self) -> int:
        return int(self.scale.numel())

    def to_spec(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "signed": self.signed,
            "axis": self.axis,
            "scale_shape": list(self.scale.shape),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FakeQuant:
        shape = spec["scale_shape"]
        return cls(torch.ones(shape), torch.zeros(shape), spec["bits"], spec["signed"], spec["axis"])

    def extra_repr(self) -> str:
        gran = "per-tensor" if self.axis is None else f"per-channel(axis={self.axis})"
        return f"bits={self.bits}, signed={self.signed}, {gran}"


class LoRA(nn.Module):
    """Low-rank adapter ``W + (alpha / rank) * B @ A`` on a frozen weight.

    ``B`` starts at zero so the adapted model first equals the original one.
    Merging is :func:`torch.nn.utils.parametrize.remove_parametrizations` with
    ``leave_parametrized=True`` (see :func:`bake`).
    """

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.rank = int(rank)
        self.alpha = float(alpha)
        a = torch.empty(rank, in_features)
        bound = 1.0 / max(in_features, 1) ** 0.5
        with torch.no_grad():
            a.uniform_(-bound, bound, generator=generator)
        self.A = nn.Parameter(a)
        self.B = nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, w: Tensor) -> Tensor:
        return w + (self.alpha / self.rank) * (self.B.to(w.dtype) @ self.A.to(w.dtype))

    def to_spec(self) -> dict[str, Any]:
        return {"out_features": self.B.shape[0], "in_features": self.A.shape[1], "rank": self.rank, "alpha": self.alpha}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> LoRA:
        return cls(spec["out_features"], spec["in_features"], spec["rank"], spec["alpha"])


class ActQuant(nn.Module):
    """Fake quantizer of a layer's input activations (per-tensor, calibrated)."""

    scale: Tensor
    zero_point: Tensor

    def __init__(self, scale: float | Tensor, zero_point: float | Tensor, bits: int, signed: bool) -> None:
        super().__init__()
        self.bits = int(bits)
        self.signed = bool(signed)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone().reshape(()))
        self.register_buffer("zero_point", torch.as_tensor(zero_point, dtype=torch.float32).clone().reshape(()))

    def forward(self, x: Tensor) -> Tensor:
        return fake_quantize(x, self.scale.to(x.dtype), self.zero_point.to(x.dtype), self.bits, self.signed)

    def to_spec(self) -> dict[str, Any]:
        return {"bits": self.bits, "signed": self.signed}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ActQuant:
        return cls(1.0, 0.0, spec["bits"], spec["signed"])

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"


def _input_quant_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    q = cast(ActQuant, module.input_quantizer)
    return (q(args[0]), *args[1:])


def attach_input_quantizer(module: nn.Module, quantizer: ActQuant) -> None:
    """Quantize ``module``'s first input with ``quantizer`` (a child named ``input_quantizer``)."""
    had = isinstance(getattr(module, "input_quantizer", None), ActQuant)
    module.input_quantizer = quantizer
    if not had:
        module.register_forward_pre_hook(_input_quant_hook)


def parametrizations_of(module: nn.Module, tensor_name: str = "weight") -> list[nn.Module]:
    """The parametrizations on ``module.<tensor_name>``, in application order."""
    if not parametrize.is_parametrized(module, tensor_name):
        return []
    return list(_parametrizations(module)[tensor_name])


def _parametrizations(module: nn.Module) -> dict[str, nn.ModuleList]:
    """``module.parametrizations`` (a ``ModuleDict`` of ``ParametrizationList``) as the mapping it is."""
    return cast(dict[str, nn.ModuleList], module.parametrizations)


def find_parametrization(module: nn.Module, cls: type, tensor_name: str = "weight") -> Any:
    """The last parametrization of type ``cls`` on the tensor, or ``None``."""
    found = None
    for p in parametrizations_of(module, tensor_name):
        if isinstance(p, cls):
            found = p
    return found


def effective(module: nn.Module, tensor_name: str = "weight") -> Tensor:
    """The value the layer computes with (parametrizations applied), detached."""
    with torch.no_grad():
        return getattr(module, tensor_name).detach().clone()


def isolate_classes(model: nn.Module) -> nn.Module:
    """Give every parametrized module of ``model`` its own copy of its dynamic class (in place).

    ``parametrize`` stores the parametrized properties on a per-module dynamic class,
    which ``copy.deepcopy`` shares between the copy and the original; removing or adding
    a parametrization on the copy would then change the original's class too.
    """
    for mod in model.modules():
        if parametrize.is_parametrized(mod):
            cls = type(mod)
            mod.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    return model


def clone_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that is safe for parametrized modules (see :func:`isolate_classes`)."""
    return isolate_classes(copy.deepcopy(model))


def bake(module: nn.Module) -> list[str]:
    """Remove every parametrization of ``module`` (in place), keeping the parametrized values.

    Returns the class names of the removed parametrizations (for the layer record).
    """
    removed: list[str] = []
    if not parametrize.is_parametrized(module):
        return removed
    cls = type(module)
    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    plist = _parametrizations(module)
    for tname in list(plist.keys()):
        removed += [type(p).__name__ for p in plist[tname]]
        parametrize.remove_parametrizations(module, tname, leave_parametrized=True)
    return removed
