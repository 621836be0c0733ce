"""Integer quantization settings and calibration (min-max, percentile, MSE)."""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..._config import StrictModel
from ..modules import Layer
from ..parametrizations import ActQuant, FakeQuant, attach_input_quantizer, fake_quantize, qrange

__all__ = ["QuantSpec", "calibrate_inputs", "compute_qparams", "quantize_weight_", "weight_quantizer"]

MAX_CALIB_VALUES = 1_000_000  # subsample larger activation sets (deterministic stride)
MSE_GRID = 41  # clipping ratios tried by MSE calibration, from 0.2 to 1.0


class QuantSpec(StrictModel):
    """How to quantize one kind of tensor.

    ``symmetric`` gives signed codes with zero point 0; otherwise unsigned codes
    with a zero point. ``calibration`` picks the clipping range: ``minmax``
    (full range), ``percentile`` (the ``percentile``-th percentile of ``|x|``,
    or of both tails when asymmetric) or ``mse`` (clip that minimises the
    quantization mean squared error, searched on a grid).
    """

    bits: int = Field(8, ge=2, le=16)
    symmetric: bool = True
    granularity: Literal["per_tensor", "per_channel"] = "per_channel"
    calibration: Literal["minmax", "percentile", "mse"] = "minmax"
    percentile: float = Field(99.99, gt=50.0, le=100.0)


class ActSpec(QuantSpec):
    """Activation quantization: per-tensor only (one scale per layer input)."""

    granularity: Literal["per_tensor"] = "per_tensor"
    symmetric: bool = False


def _rows(x: Tensor, axis: int | None) -> Tensor:
    if axis is None:
        return x.reshape(1, -1)
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)


def _subsample(r: Tensor) -> Tensor:
    if r.shape[1] > MAX_CALIB_VALUES:
        step = -(-r.shape[1] // MAX_CALIB_VALUES)
        r = r[:, ::step]
    return r


def compute_qparams(x: Tensor, spec: QuantSpec, axis: int | None) -> tuple[Tensor, Tensor]:
    """Scale and zero point of ``x`` for ``spec``; per-channel along ``axis`` (``None``: per-tensor).

    Returned tensors broadcast against ``x`` (size ``x.shape[axis]`` on ``axis``, 1 elsewhere).
    """
    x = x.detach().to(torch.float64)
    r = _rows(x, axis)
    bits = spec.bits
    signed = spec.symmetric
    lo_q, hi_q = qrange(bits, signed)
    if spec.calibration == "percentile":
        rs = _subsample(r)
        q = spec.percentile / 100.0
        if spec.symmetric:
            amax = torch.quantile(rs.abs(), q, dim=1)
            lo, hi = -amax, amax
        else:
            lo = torch.quantile(rs, 1 - q, dim=1)
            hi = torch.quantile(rs, q, dim=1)
    else:
        lo, hi = r.min(dim=1).values, r.max(dim=1).values
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))

    def params(lo_: Tensor, hi_: Tensor) -> tuple[Tensor, Tensor]:
        if signed:
            amax = torch.maximum(-lo_, hi_)
            scale = amax / hi_q
            zp = torch.zeros_like(scale)
        else:
            scale = (hi_ - lo_) / (hi_q - lo_q)
            zp = torch.round(-lo_ / torch.where(scale > 0, scale, torch.ones_like(scale))).clamp(lo_q, hi_q)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, zp

    scale, zp = params(lo, hi)
    if spec.calibration == "mse":
        rs = _subsample(r)
        best_err = None
        for alpha in torch.linspace(0.2, 1.0, MSE_GRID, dtype=torch.float64):
            s, z = params(lo * alpha, hi * alpha)
            err = ((fake_quantize(rs, s[:, None], z[:, None], bits, signed) - rs) ** 2).sum(dim=1)
            if best_err is None:
                best_err, scale, zp = err, s, z
            else:
                better = err < best_err
                best_err = torch.where(better, err, best_err)
                scale = torch.where(better, s, scale)
                zp = torch.where(better, z, zp)
    if axis is None:
        return scale.reshape(()).to(torch.float32), zp.reshape(()).to(torch.float32)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return scale.reshape(shape).to(torch.float32), zp.reshape(shape).to(torch.float32)


def weight_quantizer(w: Tensor, spec: QuantSpec, out_axis: int = 0) -> FakeQuant:
    """A calibrated :class:`FakeQuant` for weight ``w`` (per-channel on the output axis:
    0 for Linear/Conv, 1 for ConvTranspose, whose weight is ``(in, out/groups, k...)``)."""
    axis = out_axis if spec.granularity == "per_channel" and w.ndim >= 2 else None
    scale, zp = compute_qparams(w, spec, axis)
    return FakeQuant(scale, zp, spec.bits, spec.symmetric, axis)


def quantize_weight_(module: Layer, spec: QuantSpec) -> FakeQuant:
    """Attach (or replace) the fake quantizer on ``module.weight``, calibrated on its current value."""
    from ._common import output_axis

    w = module.weight.detach()
    ax = output_axis(module)
    fq = weight_quantizer(w, spec, ax)
    if parametrize.is_parametrized(module, "weight"):
        plist = module.parametrizations["weight"]
        for i, p in enumerate(plist):
            if isinstance(p, FakeQuant):
                # re-quantizing: calibrate on the value before this quantizer and swap it in place
                val = module.parametrizations["weight"].original.detach()
                for q in list(plist)[:i]:
                    val = q(val)
                new = weight_quantizer(val, spec, ax)
                plist[i] = new
                return new
    parametrize.register_parametrization(module, "weight", fq)
    return fq


def calibrate_inputs(model: nn.Module, layers: list[tuple[str, nn.Module]], spec: QuantSpec, run: object) -> dict[str, ActQuant]:
    """Calibrate per-tensor input quantizers of ``layers`` by running ``run(model)`` once.

    Layers are calibrated in order, each seeing the already quantized earlier
    inputs (so later ranges include upstream quantization error).
    """
    from ._common import run_calibration

    result: dict[str, ActQuant] = {}
    for name, mod in layers:
        seen: list[Tensor] = []

        def hook(_m: nn.Module, args: tuple[Tensor, ...], _seen: list[Tensor] = seen) -> None:
            _seen.append(args[0].detach().reshape(1, -1).to(torch.float64))

        h = mod.register_forward_pre_hook(hook)
        try:
            run_calibration(model, run)
        finally:
            h.remove()
        if not seen:
            from ...errors import ConfigError

            msg = f"calibration never ran layer {name!r}; cannot calibrate its input quantizer"
            raise ConfigError(msg)
        x = torch.cat(seen, dim=1)
        tensor_spec = copy.copy(spec)
        scale, zp = compute_qparams(x, tensor_spec, None)
        q = ActQuant(scale, zp, spec.bits, spec.symmetric)
        attach_input_quantizer(mod, q)
        result[name] = q
    return result
