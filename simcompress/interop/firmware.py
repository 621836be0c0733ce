"""Hand an imported QKeras network to the firmware path (:mod:`simcompress.firmware`).

:func:`firmware_network` turns a :class:`~simcompress.interop.qkeras.QKerasNetwork` into
the pair the firmware package consumes: a plain ``nn.Linear``/``nn.ReLU`` network with
``forward(z, c)`` (``torch.cat`` of noise and condition, as every generator network)
plus its precision record (``{"input": type, "layers": {"body.<i>": {"weight", "bias",
"accum", "result"}}}``), so :func:`simcompress.firmware.graph.build_graph`, the hls4ml
PyTorch route and the integer emulation see exactly the QKeras arithmetic:

* the input quantizer becomes the input type (``input_t x = float``: the same cast);
* a ``QDense`` followed by a signed ``quantized_bits`` becomes a ``Linear`` whose result
  type is that quantizer (exact accumulator, then ``result_t y = acc``);
* a ``QDense`` followed by ``quantized_relu`` (or unsigned ``quantized_bits``) becomes a
  ``Linear`` with its exact accumulator type as result, then a ``ReLU`` whose result type
  is the quantizer (``res_t y = x > 0 ? x : 0``: the same rounding and saturation);
* a ``QDense`` followed by nothing keeps the exact accumulator type (QKeras' float32
  output is exact by :func:`~simcompress.interop.qkeras.check_exact`).

Batch normalization and two consecutive casts are refused (the firmware graph folds
batch normalization only inside its own fixed-point method).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..compress.fixed_point.record import PrecisionRecord
from ..compress.fixed_point.types import FixedType, exact_accumulator, integer_bits_for_range
from ..errors import UnsupportedLayerError
from .qkeras import QKerasNetwork
from .qkeras.network import _frac_bits

__all__ = ["FirmwareMLP", "FixedPointView", "as_fixed_point_generator", "firmware_network"]


class FirmwareMLP(nn.Module):
    """``forward(z, c) = body(cat(z, c))`` (or ``body(z)`` with one input): plain layers only."""

    def __init__(self, body: nn.Sequential, two_inputs: bool) -> None:
        super().__init__()
        self.body = body
        self.two_inputs = two_inputs

    # no annotations: with postponed evaluation they are strings, which torch.fx puts into the
    # GraphModule globals and hls4ml's YAML dump of the model then fails on (torch 2.13)
    def forward(self, z, c):
        return self.body(torch.cat([z, c], dim=1))


class _SingleInputMLP(nn.Module):
    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x)


def _weight_type(values: np.ndarray, given: dict[str, Any] | None, where: str) -> FixedType:
    if given:
        return FixedType.from_dict(given)
    frac = _frac_bits(values)
    lo, hi = float(np.min(values, initial=0.0)), float(np.max(values, initial=0.0))
    integer = integer_bits_for_range(lo, hi, signed=True)
    width = integer + frac
    if width > 24:
        msg = f"{where}: unquantized weights need {width} bits; give the layer a quantizer"
        raise UnsupportedLayerError(msg)
    return FixedType(max(width, 2), integer if width >= 2 else 2 - frac, signed=True)


def firmware_network(model: Any, latent_dim: int | None = None) -> tuple[nn.Module, dict[str, Any], list[int]]:
    """``(plain network, precision record, input sizes)`` of a QKerasNetwork (or a generator built on one).

    With ``latent_dim`` (taken from a generator automatically) the network has two inputs
    ``(z, c)`` joined by ``torch.cat``; otherwise one input.

    Raises:
        UnsupportedLayerError: no input quantizer, batch normalization, or consecutive casts.
    """
    net = model
    if not isinstance(net, QKerasNetwork):
        net = getattr(model, "network", None)
        if not isinstance(net, QKerasNetwork):
            msg = f"{type(model).__name__} is not a QKerasNetwork or a generator built on one"
            raise UnsupportedLayerError(msg)
        latent_dim = latent_dim if latent_dim is not None else int(model.latent_dim)
    entries = net.layers
    if not entries or entries[0]["op"] != "quant":
        msg = f"{net.model_name}: firmware needs an input quantizer as the first layer"
        raise UnsupportedLayerError(msg)
    in_t = FixedType.from_dict(entries[0]["type"])
    cur_t = in_t
    mods: list[nn.Module] = []
    layers: dict[str, Any] = {}
    pending_relu_for: int | None = None  # index of a ReLU module whose result type a quant may still set
    i = 1
    while i < len(entries):
        e = entries[i]
        mod: Any = net.body[i]
        if e["op"] == "dense":
            w = mod.weight.detach().to(torch.float64).numpy()
            b = mod.bias.detach().to(torch.float64).numpy() if mod.bias is not None else None
            w_t = _weight_type(w, e.get("weight_type"), f"layer {e['name']!r} weight")
            b_t = _weight_type(b, e.get("bias_type"), f"layer {e['name']!r} bias") if b is not None else None
            w_int = w_t.quantize_int(w)
            b_int = b_t.quantize_int(b) if b is not None and b_t is not None else None
            acc = exact_accumulator(cur_t, w_int, w_t, b_int, b_t or w_t)
            lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            with torch.no_grad():
                lin.weight.copy_(mod.weight)
                if b is not None:
                    lin.bias.copy_(mod.bias)
            name = f"body.{len(mods)}"
            mods.append(lin)
            rec: dict[str, Any] = {"weight": w_t.to_dict(), "bias": (b_t or w_t).to_dict(), "accum": acc.to_dict(),
                                   "result": acc.to_dict(), "source": e["name"]}
            layers[name] = rec
            cur_t = acc
            pending_relu_for = None
            nxt = entries[i + 1] if i + 1 < len(entries) else None
            if nxt is not None and nxt["op"] == "quant":
                qt = FixedType.from_dict(nxt["type"])
                if qt.signed:
                    rec["result"] = qt.to_dict()
                    cur_t = qt
                else:  # quantized_relu / unsigned quantized_bits: relu, then the cast
                    rname = f"body.{len(mods)}"
                    mods.append(nn.ReLU())
                    layers[rname] = {"result": qt.to_dict(), "source": nxt["name"]}
                    cur_t = qt
                i += 1
            i += 1
            continue
        if e["op"] == "relu":
            rname = f"body.{len(mods)}"
            mods.append(nn.ReLU())
            t = cur_t
            layers[rname] = {"result": t.to_dict(), "source": e["name"]}
            pending_relu_for = len(mods) - 1
            i += 1
            continue
        if e["op"] == "quant":
            qt = FixedType.from_dict(e["type"])
            if pending_relu_for is not None:
                layers[f"body.{pending_relu_for}"]["result"] = qt.to_dict()
                cur_t = qt
                pending_relu_for = None
            elif qt.contains(cur_t):
                pass  # the cast can never change a value: drop it
            elif not qt.signed:  # an unsigned saturating cast is relu followed by the cast
                rname = f"body.{len(mods)}"
                mods.append(nn.ReLU())
                layers[rname] = {"result": qt.to_dict(), "source": e["name"]}
                cur_t = qt
            else:
                msg = (
                    f"layer {e['name']!r}: a cast to {qt.to_hls()} of {cur_t.to_hls()} values that does not follow a "
                    "QDense or ReLU has no firmware layer (QKeras rounds twice here)"
                )
                raise UnsupportedLayerError(
                    msg
                )
            i += 1
            continue
        msg = f"layer {e['name']!r} ({e['op']}): not supported by the firmware path; fold batch normalization into the QDense"
        raise UnsupportedLayerError(
            msg
        )
    body = nn.Sequential(*mods)
    record: dict[str, Any] = {"input": in_t.to_dict(), "layers": layers}
    if latent_dim is not None:
        plain: nn.Module = FirmwareMLP(body, True)
        sizes = [int(latent_dim), net.n_in - int(latent_dim)]
    else:
        plain = _SingleInputMLP(body)
        sizes = [net.n_in]
    record["input_sizes"] = sizes
    return plain.eval(), record, sizes


class FixedPointView(nn.Module):
    """A QKeras network together with its firmware form: what :func:`firmware_network` gives.

    ``forward`` is the QKeras network's (exact, so the showers do not change); ``inner`` (the
    plain Linear/ReLU MLP) and ``precision`` (its
    :class:`~simcompress.compress.fixed_point.record.PrecisionRecord`) are what
    :func:`~simcompress.compress.fixed_point.record.find_precision_network`, and so
    :func:`simcompress.firmware.export_firmware`, read from a fixed-point model.
    """

    def __init__(self, network: nn.Module, latent_dim: int | None = None) -> None:
        super().__init__()
        plain, record, _sizes = firmware_network(network, latent_dim)
        self.network = network
        self.inner = plain
        self.precision = PrecisionRecord.from_dict(record)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.network(*inputs)
        return out


def as_fixed_point_generator(gen: Any) -> Any:
    """A copy of a :class:`~simcompress.interop.generator.QKerasMLPGenerator` whose ``network`` is a
    :class:`FixedPointView`: the same QKeras network, plus :func:`firmware_network`'s plain MLP and
    precision record.

    It samples exactly the same showers, and :func:`simcompress.firmware.export_firmware` accepts it
    unchanged (it finds the record as in a model quantized by ``compress``' fixed-point methods).
    """
    import copy

    out = copy.deepcopy(gen)
    out.network = FixedPointView(out.network, int(gen.latent_dim)).eval()
    return out
