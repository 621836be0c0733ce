"""The model layer of the QKeras interop: :class:`QKerasNetwork`, a chain of exact fixed-point layers.

Each entry of ``QKerasNetwork.layers`` is a QKeras layer mapped to a torch module (a
:class:`~.quantizers.FixedQuantizer` cast, ReLU, Linear or BatchNorm1d); the value ranges
through the chain decide whether float32 reproduces QKeras bit for bit
(:attr:`QKerasNetwork.float32_exact`, :func:`check_exact`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...compress.fixed_point.types import FixedType, integer_bits_for_range
from ...errors import BundleError, ConfigError, UnsupportedLayerError
from .quantizers import FixedQuantizer

__all__ = ["QKerasNetwork", "check_exact"]

#: float32 integers are exact up to 2**24: the bound used for every exactness check.
_F32_EXACT = 2**24


class _Range:
    """Exact value set bound: values are integer multiples of ``2**-frac`` in ``[lo, hi]``."""

    def __init__(self, lo: float, hi: float, frac: int) -> None:
        self.lo, self.hi, self.frac = float(lo), float(hi), int(frac)

    @classmethod
    def of_type(cls, t: FixedType) -> _Range:
        return cls(t.min_value, t.max_value, t.frac)

    def fixed_type(self, rounding: str = "TRN", overflow: str = "WRAP") -> FixedType:
        signed = self.lo < 0
        integer = integer_bits_for_range(self.lo, self.hi, signed=signed)
        width = max(integer + self.frac, 1)
        return FixedType(width, integer, signed, rounding, overflow)


def _frac_bits(values: np.ndarray) -> int:
    """Fewest fractional bits ``F`` with every value an integer multiple of ``2**-F`` (float32/64 inputs)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[v != 0]
    if v.size == 0:
        return 0
    if not np.all(np.isfinite(v)):
        msg = "non-finite weights"
        raise UnsupportedLayerError(msg)
    mant, exp = np.frexp(v)  # v = mant * 2**exp, 0.5 <= |mant| < 1
    m = np.abs(mant) * 2.0**53
    m = m.astype(np.int64)
    tz = np.array([(int(x) & -int(x)).bit_length() - 1 for x in m])  # trailing zero bits of the 53-bit mantissa
    return int(np.max(53 - tz - exp))


# --------------------------------------------------------------------------- the network
class QKerasNetwork(nn.Module):
    """A feed-forward fixed-point network equivalent to a QKeras model.

    ``body`` is an ``nn.Sequential`` of ``FixedQuantizer``, ``nn.Linear``, ``nn.ReLU``
    and ``nn.BatchNorm1d``; ``layers`` is the JSON description (one entry per body
    module: ``op``, Keras ``name``, types). ``forward(z, c)`` concatenates noise and
    condition (the generator convention, see :mod:`simcompress.generators.base`);
    ``forward(x)`` takes the concatenated input directly.

    Attributes:
        layers: JSON layer list (see :meth:`spec`).
        float32_exact: every float32 operation of the QKeras model (and of this module)
            is exact, so outputs agree bit for bit with QKeras on any float32 input
            (``None`` when the input is not quantized first: then only on inputs of
            :attr:`input_type`'s grid, if given).
        source: the file the network was read from (:func:`~.load.load_qkeras_network`).
    """

    source: str | None = None

    def __init__(self, layers: list[dict[str, Any]], n_in: int, name: str = "qkeras_model",
                 input_type: FixedType | None = None) -> None:
        super().__init__()
        self.n_in = int(n_in)
        self.model_name = str(name)
        self.layers = [dict(entry) for entry in layers]
        self.input_type = input_type
        mods: list[nn.Module] = []
        width = self.n_in
        for entry in self.layers:
            op = entry["op"]
            if op == "quant":
                mods.append(FixedQuantizer(FixedType.from_dict(entry["type"]), entry.get("qkeras")))
            elif op == "dense":
                if int(entry["in"]) != width:
                    msg = f"layer {entry['name']!r}: expects {entry['in']} inputs, the previous layer gives {width}"
                    raise BundleError(msg)
                mods.append(nn.Linear(width, int(entry["out"]), bias=bool(entry.get("bias", True))))
                width = int(entry["out"])
            elif op == "relu":
                mods.append(nn.ReLU())
            elif op == "bn":
                if int(entry["features"]) != width:
                    msg = f"layer {entry['name']!r}: expects {entry['features']} features, got {width}"
                    raise BundleError(msg)
                mods.append(nn.BatchNorm1d(width, eps=float(entry["eps"])))
            else:
                msg = f"unknown QKerasNetwork op {op!r} (layer {entry.get('name')!r})"
                raise BundleError(msg)
        self.body = nn.Sequential(*mods)
        self.n_out = width
        self.eval()

    # -- forward -------------------------------------------------------------------
    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = z if c is None else torch.cat([z, c], dim=1)
        if x.shape[-1] != self.n_in:
            msg = f"{self.model_name}: input has {x.shape[-1]} features, the network takes {self.n_in}"
            raise ConfigError(msg)
        return self.body(x.to(torch.float32))

    # -- description ---------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """JSON architecture (enough to rebuild with :meth:`from_spec` and the state dict)."""
        return {"n_in": self.n_in, "name": self.model_name, "layers": self.layers,
                "input_type": self.input_type.to_dict() if self.input_type is not None else None}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> QKerasNetwork:
        it = spec.get("input_type")
        return cls(spec["layers"], spec["n_in"], spec.get("name", "qkeras_model"),
                   FixedType.from_dict(it) if it else None)

    def to_spec(self) -> dict[str, Any]:  # compress.bundle allowlist protocol
        return self.spec()

    def _ranges(self) -> tuple[list[_Range | None], bool | None, str | None]:
        """Value range after each body module, whether every float32 op is exact, and the first inexact layer."""
        if self.layers and self.layers[0]["op"] == "quant":
            cur: _Range | None = None  # the first quantizer defines it
        elif self.input_type is not None:
            cur = _Range.of_type(self.input_type)
        else:
            cur = None
        exact: bool | None = True
        culprit: str | None = None
        out: list[_Range | None] = []

        def fail(name: str) -> None:
            nonlocal exact, culprit
            if exact is not False:
                exact, culprit = False, name

        mod: Any  # FixedQuantizer, ReLU, Linear or BatchNorm1d, as the entry says
        for entry, mod in zip(self.layers, self.body, strict=False):
            op = entry["op"]
            if op == "quant":
                cur = _Range.of_type(mod.fixed_type)
            elif cur is None:
                exact = None if exact is True else exact
            elif op == "relu":
                cur = _Range(max(cur.lo, 0.0), max(cur.hi, 0.0), cur.frac)
            elif op == "dense":
                w = mod.weight.detach().to(torch.float64).numpy()
                b = mod.bias.detach().to(torch.float64).numpy() if mod.bias is not None else np.zeros(w.shape[0])
                frac = max(cur.frac + _frac_bits(w), _frac_bits(b))
                amax = max(abs(cur.lo), abs(cur.hi))
                # any partial sum, in any order, is bounded by sum|w| max|x| + |b|
                bound = float(np.max(np.abs(w).sum(axis=1) * amax + np.abs(b), initial=0.0))
                lo = float(np.min(np.minimum(w * cur.lo, w * cur.hi).sum(axis=1) + b, initial=0.0))
                hi = float(np.max(np.maximum(w * cur.lo, w * cur.hi).sum(axis=1) + b, initial=0.0))
                if bound * 2.0**frac > _F32_EXACT:
                    fail(entry["name"])
                cur = _Range(lo, hi, frac)
            elif op == "bn":
                cur, ok = _bn_range(mod, cur)
                if not ok:
                    fail(entry["name"])
            out.append(cur)
        return out, exact, culprit

    @property
    def float32_exact(self) -> bool | None:
        return self._ranges()[1]

    def output_type(self) -> FixedType | None:
        """Exact type of the network output (``None`` if the input is unquantized)."""
        ranges = self._ranges()[0]
        return ranges[-1].fixed_type() if ranges and ranges[-1] is not None else None

    def precision_record(self) -> dict[str, Any]:
        """Per-layer fixed-point types in the ``compress`` precision-record format.

        ``{"input": type, "layers": {name: {"weight", "bias", "accum", "result", "activation"}}}``,
        keyed by the Keras layer names; ``accum`` is the exact (never overflowing) accumulator
        type; ``result`` is the type the layer output is cast to (its following quantizer, or
        ``accum`` when none follows); ``activation`` is the type after a following ReLU
        quantizer. Types are dicts (:meth:`FixedType.to_dict`).
        """
        ranges = self._ranges()[0]
        first = self.layers[0] if self.layers else None
        inp = FixedType.from_dict(first["type"]) if first is not None and first["op"] == "quant" else self.input_type
        rec: dict[str, Any] = {"input": inp.to_dict() if inp else None, "layers": {}}
        n = len(self.layers)
        for i, entry in enumerate(self.layers):
            if entry["op"] not in ("dense", "bn"):
                continue
            r = ranges[i]
            acc = r.fixed_type() if r is not None else None
            info: dict[str, Any] = {"op": entry["op"], "module": f"body.{i}"}
            if entry["op"] == "dense":
                info["weight"] = entry.get("weight_type")
                info["bias"] = entry.get("bias_type")
            info["accum"] = acc.to_dict() if acc else None
            result = info["accum"]
            activation = None
            j = i + 1
            if j < n and self.layers[j]["op"] == "quant":
                result = self.layers[j]["type"]
                j += 1
            if j < n and self.layers[j]["op"] == "relu":
                activation = {"kind": "relu"}
                if j + 1 < n and self.layers[j + 1]["op"] == "quant":
                    activation["type"] = self.layers[j + 1]["type"]
            info["result"] = result
            info["activation"] = activation
            rec["layers"][entry["name"]] = info
        return rec

    def extra_repr(self) -> str:
        return f"name={self.model_name!r}, n_in={self.n_in}, n_out={self.n_out}"


def _bn_affine(mod: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) of an eval-mode BatchNorm1d, in float64."""
    assert mod.running_var is not None and mod.running_mean is not None  # built with track_running_stats
    var = mod.running_var.detach().to(torch.float64).numpy()
    mean = mod.running_mean.detach().to(torch.float64).numpy()
    g = mod.weight.detach().to(torch.float64).numpy() if mod.weight is not None else np.ones_like(var)
    b = mod.bias.detach().to(torch.float64).numpy() if mod.bias is not None else np.zeros_like(var)
    s = g / np.sqrt(var + mod.eps)
    return s, b - mean * s


def _f32(v: float) -> bool:
    return float(np.float32(v)) == v


def _bn_range(mod: nn.BatchNorm1d, cur: _Range) -> tuple[_Range, bool]:
    """Output range of a batch normalization, and whether TF's and torch's float32 arithmetic is exact.

    Both compute ``alpha = gamma * rsqrt(var + eps)``, ``beta' = beta - mean * alpha`` and
    ``x * alpha + beta'`` (torch possibly fused): exact when ``var + eps`` is a power of 4 and
    every intermediate fits float32's 24-bit mantissa on its grid.
    """
    assert mod.running_var is not None and mod.running_mean is not None  # built with track_running_stats
    var = mod.running_var.detach().to(torch.float32).numpy()
    eps = np.float32(mod.eps)
    s = (var + eps).astype(np.float64)  # TF: float32 sum; torch may add in float64: both must be exact
    ok = bool(np.all(s > 0)) and bool(np.array_equal(s, var.astype(np.float64) + float(eps)))
    ok = ok and bool(np.all(np.log2(s) / 2 == np.round(np.log2(s) / 2)))
    scale, shift = _bn_affine(mod)
    mean = mod.running_mean.detach().to(torch.float64).numpy()
    if ok:
        ok = all(_f32(float(v)) for v in np.concatenate([scale, mean * scale, shift]))
    amax = max(abs(cur.lo), abs(cur.hi))
    frac_x = cur.frac + _frac_bits(scale)
    frac = max(frac_x, _frac_bits(shift))
    if ok:
        ok = float(np.max(np.abs(scale), initial=0.0)) * amax * 2.0**frac_x <= _F32_EXACT
        ok = ok and float(np.max(np.abs(scale) * amax + np.abs(shift), initial=0.0)) * 2.0**frac <= _F32_EXACT
    cand = np.stack([scale * cur.lo + shift, scale * cur.hi + shift])
    return _Range(float(cand.min(initial=0.0)), float(cand.max(initial=0.0)), frac), ok


def check_exact(net: QKerasNetwork, source: str) -> None:
    """Raise :class:`UnsupportedLayerError` unless every float32 operation of the model is exact."""
    _, exact, culprit = net._ranges()
    if exact is None:
        msg = (
            f"{source}: the model does not start with an input quantizer (QActivation(quantized_bits(...))), so its "
            "float32 arithmetic is exact only on unknown inputs; add one or pass input_type=FixedType(...)"
        )
        raise UnsupportedLayerError(
            msg
        )
    if exact is False:
        op = next(e["op"] for e in net.layers if e["name"] == culprit)
        why = ("its accumulator can exceed float32's 24-bit mantissa, so the result depends on the summation order"
               if op == "dense" else
               "moving_variance + epsilon is not a power of 4 or its folded scale/offset/output do not fit float32 "
               "exactly, so 1/sqrt and the products round")
        msg = (
            f"{source}: layer {culprit!r} ({'Dense' if op == 'dense' else 'BatchNormalization'}): {why}; QKeras cannot be "
            "reproduced bit for bit (narrow the quantizers, fold the batch normalization into the QDense, or pass strict=False)"
        )
        raise UnsupportedLayerError(
            msg
        )
