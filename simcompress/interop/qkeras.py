"""QKeras <-> simcompress: exact import and export of quantized MLPs as Keras ``.h5`` files.

QKeras (0.9.0) quantizers are fixed-point casts in disguise. With ``alpha=1`` (or
``None`` on a ``QActivation``), no stochastic rounding and ``qnoise_factor=1``:

* ``quantized_bits(bits, integer, symmetric, keep_negative=True)`` computes
  ``2**integer * clip(round(x * 2**(bits-1-integer)), -2**(bits-1) [+1 if symmetric], 2**(bits-1)-1) / 2**(bits-1)``
  with ``tf.round`` (half to even), i.e. the HLS cast to
  ``ap_fixed<bits, integer+1, AP_RND_CONV, AP_SAT>`` (``AP_SAT_SYM`` when symmetric);
* ``quantized_bits(..., keep_negative=False)`` and ``quantized_relu(bits, integer)``
  are ``ap_ufixed<bits, integer, AP_RND_CONV, AP_SAT>`` (negative values go to 0).

All of this is exact in float32 (scaling by powers of two, rounding, clipping), so a
PyTorch module applying :meth:`FixedType.quantize` reproduces QKeras bit for bit. A
``QDense`` is a float32 matrix product of quantized weights with its input: it is
exact (independent of the summation order) when every partial sum is a float32
integer multiple of the grid step, which :class:`QKerasNetwork` checks from the
types and the weights (:attr:`QKerasNetwork.float32_exact`). ``BatchNormalization``
is accepted only when it is exact too (``moving_variance + epsilon`` a power of 4,
so ``rsqrt`` is exact, and all products/sums short enough for float32).

Anything else (``alpha="auto"``/``"auto_po2"``, po2/binary/ternary quantizers,
stochastic rounding, ``use_sigmoid``, leaky quantized relu, convolutions, branching
graphs, ...) is refused with :class:`~simcompress.errors.UnsupportedLayerError`
naming the layer and what is allowed.

The ``.h5`` layout is the Keras 2 (tf.keras 2.14) legacy HDF5 format: root attribute
``model_config`` (JSON), group ``model_weights/<layer>/<layer>/<weight>:0``. Files
written by :func:`export_qkeras` load with ``qkeras.utils.load_qmodel``.
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from ..compress.fixed_point import FixedType, integer_bits_for_range
from ..errors import BundleError, ConfigError, UnsupportedLayerError

__all__ = [
    "KERAS_VERSION",
    "FixedQuantizer",
    "QKerasNetwork",
    "check_exact",
    "export_qkeras",
    "fixed_to_quantizer",
    "load_qkeras_network",
    "network_from_fixed_point",
    "network_from_precision",
    "quantizer_to_fixed",
    "read_qkeras_h5",
]

#: Keras version written into exported files (tf.keras of TensorFlow 2.14, the pinned QKeras stack).
KERAS_VERSION = "2.14.0"
#: float32 integers are exact up to 2**24: the bound used for every exactness check.
_F32_EXACT = 2**24

_SUPPORTED_QUANTIZERS = ("quantized_bits", "quantized_relu")
_SUPPORTED_LAYERS = ("InputLayer", "QActivation", "Activation", "ReLU", "QDense", "Dense", "QBatchNormalization",
                     "BatchNormalization", "Dropout")

# positional argument order of the QKeras 0.9.0 constructors (for string quantizers "quantized_relu(8,3)")
_QARGS = {
    "quantized_bits": ["bits", "integer", "symmetric", "keep_negative", "alpha", "use_stochastic_rounding",
                       "scale_axis", "qnoise_factor", "var_name", "use_ste", "use_variables"],
    "quantized_relu": ["bits", "integer", "use_sigmoid", "negative_slope", "use_stochastic_rounding",
                       "relu_upper_bound", "is_quantized_clip", "qnoise_factor", "var_name", "use_ste", "use_variables"],
}
_QDEFAULTS = {
    "quantized_bits": {"bits": 8, "integer": 0, "symmetric": 0, "keep_negative": True, "alpha": None,
                       "use_stochastic_rounding": False, "qnoise_factor": 1.0},
    "quantized_relu": {"bits": 8, "integer": 0, "use_sigmoid": 0, "negative_slope": 0.0,
                       "use_stochastic_rounding": False, "relu_upper_bound": None, "is_quantized_clip": True,
                       "qnoise_factor": 1.0},
}


# --------------------------------------------------------------------------- quantizers
def _parse_quantizer_string(text: str, where: str) -> tuple[str, dict[str, Any]]:
    """``"quantized_relu(8, 3)"`` -> ``("quantized_relu", {"bits": 8, "integer": 3})`` (literals only)."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        msg = f"{where}: cannot parse quantizer string {text!r}"
        raise UnsupportedLayerError(msg) from None
    if isinstance(node, ast.Name):
        return node.id, {}
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        msg = f"{where}: cannot parse quantizer string {text!r}"
        raise UnsupportedLayerError(msg)
    name = node.func.id
    order = _QARGS.get(name)
    if order is None:
        msg = f"{where}: quantizer {name!r} cannot be mapped exactly to fixed point; supported: {', '.join(_SUPPORTED_QUANTIZERS)}"
        raise UnsupportedLayerError(
            msg
        )
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg is not None}
    except ValueError:
        msg = f"{where}: quantizer {text!r} has non-literal arguments"
        raise UnsupportedLayerError(msg) from None
    if len(args) > len(order):
        msg = f"{where}: quantizer {text!r} has too many arguments"
        raise UnsupportedLayerError(msg)
    cfg = dict(zip(order, args, strict=False))
    cfg.update(kwargs)
    return name, cfg


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def quantizer_to_fixed(q: Any, where: str) -> tuple[FixedType, str] | None:
    """Map a serialized QKeras quantizer (dict, string or ``None``) to ``(FixedType, class name)``.

    Returns ``None`` for "no quantizer". Raises :class:`UnsupportedLayerError` for
    quantizers that are not exact fixed-point casts.
    """
    if q is None:
        return None
    if isinstance(q, str):
        name, cfg = _parse_quantizer_string(q, where)
        if name in ("linear", "None"):
            return None
    elif isinstance(q, dict) and "class_name" in q:
        name = str(q["class_name"])
        cfg = dict(q.get("config") or {})
    else:
        msg = f"{where}: unrecognised quantizer {q!r}"
        raise UnsupportedLayerError(msg)
    if name not in _SUPPORTED_QUANTIZERS:
        msg = f"{where}: quantizer {name!r} cannot be mapped exactly to fixed point; supported: {', '.join(_SUPPORTED_QUANTIZERS)}"
        raise UnsupportedLayerError(
            msg
        )
    full = {**_QDEFAULTS[name], **cfg}
    bits, integer = full["bits"], full["integer"]
    if not _is_int(bits) or not _is_int(integer):
        msg = f"{where}: {name} needs integer 'bits' and 'integer', got {bits!r}, {integer!r}"
        raise UnsupportedLayerError(msg)
    if full.get("use_stochastic_rounding"):
        msg = f"{where}: {name} with use_stochastic_rounding=True is random; only deterministic rounding maps exactly"
        raise UnsupportedLayerError(msg)
    if float(full.get("qnoise_factor", 1.0)) != 1.0:
        msg = f"{where}: {name} with qnoise_factor={full['qnoise_factor']!r} mixes float and quantized values; need 1.0"
        raise UnsupportedLayerError(msg)
    if bits > 24:
        msg = f"{where}: {name}({bits}, ...) is wider than float32's 24-bit mantissa; QKeras itself is not exact there"
        raise UnsupportedLayerError(msg)
    if name == "quantized_bits":
        alpha = full.get("alpha")
        if alpha is not None and not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and float(alpha) == 1.0):
            msg = f"{where}: quantized_bits with alpha={alpha!r} has a data-dependent or non-unit scale; only alpha=1 (or None on QActivation) maps exactly"
            raise UnsupportedLayerError(
                msg
            )
        keep_negative = bool(full.get("keep_negative", True))
        symmetric = bool(full.get("symmetric", 0))
        if bits - int(keep_negative) < 1:
            msg = f"{where}: quantized_bits({bits}, keep_negative={keep_negative}) is a sign/binary quantizer; need at least one magnitude bit"
            raise UnsupportedLayerError(msg)
        if keep_negative:
            t = FixedType(bits, integer + 1, True, "RND_CONV", "SAT_SYM" if symmetric else "SAT")
        else:
            t = FixedType(bits, integer, False, "RND_CONV", "SAT")
        return t, name
    # quantized_relu
    if full.get("use_sigmoid"):
        msg = f"{where}: quantized_relu with use_sigmoid=1 is a hard sigmoid, not a fixed-point cast"
        raise UnsupportedLayerError(msg)
    if float(full.get("negative_slope") or 0.0) != 0.0:
        msg = f"{where}: quantized_relu with negative_slope={full['negative_slope']!r} (leaky) is not supported; use negative_slope=0"
        raise UnsupportedLayerError(msg)
    t = FixedType(bits, integer, False, "RND_CONV", "SAT")
    ub = full.get("relu_upper_bound")
    if ub is not None and not full.get("is_quantized_clip", True) and float(ub) < t.max_value:
        msg = f"{where}: quantized_relu relu_upper_bound={ub!r} below the type maximum clips off-grid"
        raise UnsupportedLayerError(msg)
    return t, name


def fixed_to_quantizer(t: FixedType, kind: str | None, where: str) -> dict[str, Any]:
    """The QKeras quantizer (serialized dict) that is exactly the cast to ``t``.

    Only RND_CONV rounding with SAT (or SAT_SYM for signed types) overflow exists in QKeras.
    """
    if t.rounding != "RND_CONV" or t.overflow not in ("SAT", "SAT_SYM"):
        msg = (
            f"{where}: type {t.to_hls()} has no QKeras equivalent; QKeras quantizers round half to even and saturate "
            "(need AP_RND_CONV with AP_SAT, or AP_SAT_SYM for signed types; in the fixed_point compression method: "
            "rounding: RND_CONV, overflow: SAT)"
        )
        raise UnsupportedLayerError(
            msg
        )
    if t.width > 24:
        msg = f"{where}: type {t.to_hls()} is wider than 24 bits; QKeras computes in float32"
        raise UnsupportedLayerError(msg)
    if t.integer - int(t.signed) < 0:
        msg = (
            f"{where}: type {t.to_hls()} needs a negative QKeras 'integer' ({t.integer - int(t.signed)}), which QKeras 0.9.0 "
            f"cannot run (integer K.pow(2, integer) fails in TensorFlow); give it at least {int(t.signed)} integer bit(s)"
        )
        raise UnsupportedLayerError(
            msg
        )
    if t.signed:
        cfg = {"bits": t.width, "integer": t.integer - 1, "symmetric": int(t.overflow == "SAT_SYM"), "alpha": 1,
               "keep_negative": True, "use_stochastic_rounding": False, "qnoise_factor": 1.0}
        return {"module": "qkeras.quantizers", "class_name": "quantized_bits", "config": cfg,
                "registered_name": "quantized_bits"}
    if kind == "quantized_bits":
        cfg = {"bits": t.width, "integer": t.integer, "symmetric": 0, "alpha": 1, "keep_negative": False,
               "use_stochastic_rounding": False, "qnoise_factor": 1.0}
        return {"module": "qkeras.quantizers", "class_name": "quantized_bits", "config": cfg,
                "registered_name": "quantized_bits"}
    cfg = {"bits": t.width, "integer": t.integer, "use_sigmoid": 0, "negative_slope": 0.0,
           "use_stochastic_rounding": False, "relu_upper_bound": None, "qnoise_factor": 1.0}
    return {"module": "qkeras.quantizers", "class_name": "quantized_relu", "config": cfg,
            "registered_name": "quantized_relu"}


class FixedQuantizer(nn.Module):
    """Cast to a fixed-point type (``FixedType.quantize``, exact); the torch twin of a QKeras quantizer.

    ``qkeras`` remembers which QKeras class it came from (``quantized_bits`` or
    ``quantized_relu``), so an export writes the same class back.
    """

    def __init__(self, fixed_type: FixedType, qkeras: str | None = None) -> None:
        super().__init__()
        self.fixed_type = fixed_type
        self.qkeras = qkeras or ("quantized_bits" if fixed_type.signed else "quantized_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fixed_type.quantize(x)

    def to_spec(self) -> dict[str, Any]:
        return {"fixed_type": self.fixed_type.to_dict(), "qkeras": self.qkeras}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FixedQuantizer:
        return cls(FixedType.from_dict(spec["fixed_type"]), spec.get("qkeras"))

    def extra_repr(self) -> str:
        return f"{self.fixed_type.to_hls()}, qkeras={self.qkeras!r}"


# --------------------------------------------------------------------------- value ranges
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
    """

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


# --------------------------------------------------------------------------- reading .h5
def _attr_str(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def read_qkeras_h5(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Read a Keras 2 ``.h5`` model: ``(model_config, {layer: {weight: array}}, root attrs)``.

    Weight keys are the short names (``kernel``, ``bias``, ``gamma``, ...).
    """
    p = Path(path)
    if p.is_dir():
        msg = (
            f"{p}: a Keras SavedModel directory needs TensorFlow to read; save the model as .h5 "
            "(model.save('model.h5')), which QKeras 0.9.0 also reloads reliably"
        )
        raise BundleError(
            msg
        )
    if not p.is_file():
        msg = f"{p}: no such file"
        raise BundleError(msg)
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        msg = f"{p}: not an HDF5 file ({err})"
        raise BundleError(msg) from None
    with f:
        if "model_config" not in f.attrs:
            msg = f"{p}: no 'model_config' attribute; is this a Keras model saved with model.save('x.h5')?"
            raise BundleError(msg)
        try:
            config = json.loads(_attr_str(f.attrs["model_config"]))
        except json.JSONDecodeError as err:
            msg = f"{p}: 'model_config' is not valid JSON ({err})"
            raise BundleError(msg) from None
        attrs = {k: _attr_str(v) for k, v in f.attrs.items() if k != "model_config" and not isinstance(v, np.ndarray)}
        weights: dict[str, dict[str, np.ndarray]] = {}
        g = f.get("model_weights", f)
        names = [_attr_str(n) for n in g.attrs.get("layer_names", [])]
        for lname in names:
            if lname not in g:
                msg = f"{p}: layer {lname!r} listed in layer_names has no weight group"
                raise BundleError(msg)
            lg = g[lname]
            d: dict[str, np.ndarray] = {}
            for wname in (_attr_str(w) for w in lg.attrs.get("weight_names", [])):
                if wname not in lg:
                    msg = f"{p}: weight {lname}/{wname} is missing"
                    raise BundleError(msg)
                short = wname.rsplit("/", 1)[-1].split(":")[0]
                d[short] = np.asarray(lg[wname][()])
            weights[lname] = d
    return config, weights, attrs


def _chain(config: dict[str, Any], source: str) -> tuple[list[dict[str, Any]], str]:
    """Layer configs of a Sequential or single-path Functional model, in order."""
    cls = config.get("class_name")
    body = config.get("config") or {}
    name = str(body.get("name", "qkeras_model"))
    layers = body.get("layers")
    if not isinstance(layers, list):
        msg = f"{source}: model_config has no layer list"
        raise BundleError(msg)
    if cls == "Sequential":
        return layers, name
    if cls not in ("Functional", "Model"):
        msg = f"{source}: model class {cls!r} is not supported; allowed: Sequential, Functional"
        raise UnsupportedLayerError(msg)
    ins = body.get("input_layers") or []
    outs = body.get("output_layers") or []
    if len(ins) != 1 or len(outs) != 1:
        msg = (
            f"{source}: model has {len(ins)} inputs and {len(outs)} outputs; only single-input single-output chains map to a "
            "generator network (concatenate z and the condition into one Input)"
        )
        raise UnsupportedLayerError(
            msg
        )
    by_name = {l["config"]["name"] if "name" not in l else l["name"]: l for l in layers}
    consumers: dict[str, list[str]] = {}
    for l in layers:
        lname = l.get("name", l["config"].get("name"))
        nodes = l.get("inbound_nodes") or []
        srcs = []
        for node in nodes:
            items = node if isinstance(node, list) else node.get("args", [])
            for it in items:
                if isinstance(it, list) and it and isinstance(it[0], str):
                    srcs.append(it[0])
        if len(nodes) > 1 or len(srcs) > 1:
            msg = f"{source}: layer {lname!r} ({l.get('class_name')}) merges {len(srcs)} inputs; only single-path chains are supported"
            raise UnsupportedLayerError(
                msg
            )
        for s in srcs:
            consumers.setdefault(s, []).append(lname)
    order = [ins[0][0]]
    while order[-1] != outs[0][0]:
        nxt = consumers.get(order[-1], [])
        if len(nxt) != 1:
            msg = f"{source}: layer {order[-1]!r} feeds {len(nxt)} layers; only single-path chains are supported"
            raise UnsupportedLayerError(
                msg
            )
        order.append(nxt[0])
    return [by_name[n] for n in order], name


def _activation_entries(act: Any, lname: str, where: str) -> list[dict[str, Any]]:
    """Body entries for a Keras activation (string/dict): quantizer, relu or nothing."""
    if act is None or act == "linear":
        return []
    if act == "relu":
        return [{"op": "relu", "name": lname}]
    if isinstance(act, dict) and act.get("class_name") in ("linear", "relu") and "config" not in act:
        return _activation_entries(act["class_name"], lname, where)
    qt = quantizer_to_fixed(act, where)
    if qt is None:
        return []
    t, kind = qt
    return [{"op": "quant", "name": lname, "type": t.to_dict(), "qkeras": kind}]


def _quantized_weight(arr: np.ndarray, q: Any, where: str) -> tuple[np.ndarray, FixedType | None]:
    qt = quantizer_to_fixed(q, where)
    a = np.asarray(arr, dtype=np.float32)
    if qt is None:
        return a, None
    t, _ = qt
    return t.quantize(a.astype(np.float64)).astype(np.float32), t


def load_qkeras_network(path: str | os.PathLike[str], *, strict: bool = True,
                        input_type: FixedType | None = None) -> QKerasNetwork:
    """Read a QKeras ``.h5`` model into an exactly equivalent :class:`QKerasNetwork`.

    Args:
        path: Keras 2 ``.h5`` file (``model.save("x.h5")``).
        strict: refuse models whose float32 arithmetic is not provably exact (accumulators
            beyond 24 bits, inexact batch normalization, no input quantizer). With ``False``
            such models load and :attr:`QKerasNetwork.float32_exact` says so.
        input_type: grid of the inputs when the model has no input quantizer.

    Raises:
        UnsupportedLayerError: a layer, quantizer or graph shape that cannot be mapped exactly.
        BundleError: the file is not a Keras ``.h5`` model or is incomplete.
    """
    src = str(path)
    config, weights, _ = read_qkeras_h5(path)
    chain, model_name = _chain(config, src)
    entries: list[dict[str, Any]] = []
    state: dict[str, np.ndarray] = {}
    n_in: int | None = None
    width: int | None = None
    for layer in chain:
        cls = layer.get("class_name")
        cfg = layer.get("config") or {}
        lname = str(cfg.get("name", layer.get("name")))
        where = f"{src}: layer {lname!r} ({cls})"
        if cls not in _SUPPORTED_LAYERS:
            msg = f"{where} is not supported; supported layers: {', '.join(_SUPPORTED_LAYERS)}"
            raise UnsupportedLayerError(msg)
        if cls == "InputLayer":
            shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
            if not shape or len(shape) != 2:
                msg = f"{where}: input shape {shape!r}; only flat (batch, features) inputs are supported"
                raise UnsupportedLayerError(msg)
            n_in = width = int(shape[1])
            continue
        if width is None:  # Sequential without InputLayer: the first layer carries the shape
            shape = cfg.get("batch_input_shape")
            if not shape or len(shape) != 2:
                msg = f"{where}: cannot infer the flat input size (batch_input_shape {shape!r})"
                raise UnsupportedLayerError(msg)
            n_in = width = int(shape[1])
        if cls in ("QActivation", "Activation"):
            entries += _activation_entries(cfg.get("activation"), lname, f"{where} activation")
        elif cls == "ReLU":
            if cfg.get("max_value") is not None or float(cfg.get("negative_slope", 0.0)) != 0.0 or float(cfg.get("threshold", 0.0)) != 0.0:
                msg = f"{where}: only a plain ReLU (no max_value, negative_slope or threshold) is supported"
                raise UnsupportedLayerError(msg)
            entries.append({"op": "relu", "name": lname})
        elif cls == "Dropout":
            continue  # identity at inference
        elif cls in ("QDense", "Dense"):
            w = weights.get(lname, {})
            if "kernel" not in w:
                msg = f"{where}: kernel weights missing from the file"
                raise BundleError(msg)
            use_bias = bool(cfg.get("use_bias", True))
            if use_bias and "bias" not in w:
                msg = f"{where}: bias weights missing from the file"
                raise BundleError(msg)
            for key in ("kernel_range", "bias_range"):
                if cfg.get(key) is not None:
                    msg = f"{where}: {key} (deprecated) is not supported"
                    raise UnsupportedLayerError(msg)
            kq = cfg.get("kernel_quantizer") if cls == "QDense" else None
            bq = cfg.get("bias_quantizer") if cls == "QDense" else None
            kernel, wt = _quantized_weight(w["kernel"], kq, f"{where} kernel_quantizer")
            if kernel.shape != (width, int(cfg["units"])):
                msg = f"{where}: kernel shape {kernel.shape} does not match ({width}, {cfg['units']})"
                raise BundleError(msg)
            entry: dict[str, Any] = {"op": "dense", "name": lname, "in": width, "out": int(cfg["units"]), "bias": use_bias,
                                     "weight_type": wt.to_dict() if wt else None, "bias_type": None}
            idx = len(entries)
            state[f"body.{idx}.weight"] = kernel.T.copy()
            if use_bias:
                bias, bt = _quantized_weight(w["bias"], bq, f"{where} bias_quantizer")
                entry["bias_type"] = bt.to_dict() if bt else None
                state[f"body.{idx}.bias"] = bias
            entries.append(entry)
            width = int(cfg["units"])
            act = cfg.get("activation")
            for e in _activation_entries(act, lname, f"{where} activation"):
                e["name"] = f"{lname}_activation"
                e["fused_into"] = lname
                entries.append(e)
        else:  # (Q)BatchNormalization
            entries.append(_bn_entry(cfg, weights.get(lname, {}), lname, where, width, state, len(entries)))
    if n_in is None:
        msg = f"{src}: the model has no input layer"
        raise BundleError(msg)
    net = QKerasNetwork(entries, n_in, model_name, input_type=input_type)
    sd = net.state_dict()
    for k, v in state.items():
        sd[k] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    net.load_state_dict(sd)
    net.source = src  # type: ignore[attr-defined]
    if strict:
        check_exact(net, src)
    return net


def _bn_entry(cfg: dict[str, Any], w: dict[str, np.ndarray], lname: str, where: str, width: int | None,
              state: dict[str, np.ndarray], idx: int) -> dict[str, Any]:
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in (-1, 1):
        msg = f"{where}: axis {cfg.get('axis')!r}; only the feature axis (-1 or 1) of flat inputs is supported"
        raise UnsupportedLayerError(msg)
    if cfg.get("renorm") or cfg.get("virtual_batch_size"):
        msg = f"{where}: renorm / virtual_batch_size are not supported"
        raise UnsupportedLayerError(msg)
    n = int(width or 0)
    eps = float(np.float32(cfg.get("epsilon", 1e-3)))
    vals = {}
    for key, qkey, default in (("gamma", "gamma_quantizer", 1.0), ("beta", "beta_quantizer", 0.0),
                               ("moving_mean", "mean_quantizer", None), ("moving_variance", "variance_quantizer", None)):
        present = (key != "gamma" or cfg.get("scale", True)) and (key != "beta" or cfg.get("center", True))
        if not present:
            vals[key] = np.full(n, default, dtype=np.float32)
            continue
        if key not in w:
            msg = f"{where}: {key} weights missing from the file"
            raise BundleError(msg)
        vals[key], _ = _quantized_weight(w[key], cfg.get(qkey), f"{where} {qkey}")
    state[f"body.{idx}.weight"] = vals["gamma"]
    state[f"body.{idx}.bias"] = vals["beta"]
    state[f"body.{idx}.running_mean"] = vals["moving_mean"]
    state[f"body.{idx}.running_var"] = vals["moving_variance"]
    return {"op": "bn", "name": lname, "features": n, "eps": eps}


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


# --------------------------------------------------------------------------- writing .h5
def _quant_layer(name: str, q: dict[str, Any]) -> dict[str, Any]:
    act = {"class_name": q["class_name"], "config": q["config"], "__passive_serialization__": True}
    return {"class_name": "QActivation", "config": {"name": name, "trainable": True, "dtype": "float32", "activation": act}}


def _dense_layer(name: str, units: int, use_bias: bool, kq: dict[str, Any] | None, bq: dict[str, Any] | None,
                 activation: Any) -> dict[str, Any]:
    cfg = {
        "name": name, "trainable": True, "dtype": "float32", "units": int(units), "activation": activation,
        "use_bias": bool(use_bias),
        "kernel_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None},
        "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None},
        "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
        "kernel_constraint": None, "bias_constraint": None,
        "kernel_quantizer": kq, "bias_quantizer": bq, "kernel_range": None, "bias_range": None,
    }
    return {"class_name": "QDense" if (kq or bq) else "Dense", "config": cfg}


def _bn_layer(name: str, eps: float) -> dict[str, Any]:
    cfg = {"name": name, "trainable": True, "dtype": "float32", "axis": [1], "momentum": 0.99, "epsilon": eps,
           "center": True, "scale": True, "beta_quantizer": None, "gamma_quantizer": None, "mean_quantizer": None,
           "variance_quantizer": None}
    return {"class_name": "QBatchNormalization", "config": cfg}


def _write_bytes_list(obj: h5py.Group | h5py.File, key: str, names: list[str]) -> None:
    if names:
        obj.attrs[key] = np.array([n.encode("utf-8") for n in names])
    else:
        obj.attrs[key] = np.array([], dtype=np.float64)


def export_qkeras(model: Any, path: str | os.PathLike[str], *, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write a :class:`QKerasNetwork` (or a generator whose ``network`` is one) as a QKeras ``.h5``.

    ``model`` may also be any generator or module quantized by ``compress``' ``fixed_point``
    method (:func:`network_from_fixed_point`). The file loads with
    ``qkeras.utils.load_qmodel(path, compile=False)`` under TensorFlow 2.14 and computes exactly
    what the network computes. Generator metadata
    (geometry, latent size, energy range, postprocessing) is stored in the root attribute
    ``simcompress`` (JSON), which Keras ignores and :func:`load_qkeras_generator` reads back.

    Raises:
        UnsupportedLayerError: a type without a QKeras equivalent (see :func:`fixed_to_quantizer`).
    """
    meta = dict(extra_metadata or {})
    net = model
    if not isinstance(net, QKerasNetwork):
        inner = getattr(model, "network", None)
        net = inner if isinstance(inner, QKerasNetwork) else network_from_fixed_point(model)
        if hasattr(model, "qkeras_metadata"):
            meta = {**model.qkeras_metadata(), **meta}
        elif all(hasattr(model, a) for a in ("geometry", "latent_dim", "energy_range_mev", "kind")):
            meta = {"kind": "qkeras-mlp", "source_kind": model.kind, "latent_dim": int(model.latent_dim),
                    "energy_range_mev": list(model.energy_range_mev), "geometry": model.geometry.to_dict(),
                    "input_order": "cat(z, c)", **meta}
    out = Path(path)
    layers: list[dict[str, Any]] = [{"class_name": "InputLayer", "config": {
        "batch_input_shape": [None, net.n_in], "dtype": "float32", "sparse": False, "ragged": False, "name": "input"}}]
    weights: dict[str, list[tuple[str, np.ndarray]]] = {"input": []}
    used = {"input"}
    i = 0
    entries = net.layers
    while i < len(entries):
        e = entries[i]
        mod = net.body[i]
        name = e["name"]
        if name in used:
            msg = f"layer name {name!r} appears twice; Keras layer names must be unique"
            raise UnsupportedLayerError(msg)
        if e["op"] == "quant":
            layers.append(_quant_layer(name, fixed_to_quantizer(mod.fixed_type, mod.qkeras, f"layer {name!r}")))
            weights[name] = []
        elif e["op"] == "relu":
            layers.append({"class_name": "Activation", "config": {"name": name, "trainable": True, "dtype": "float32",
                                                                  "activation": "relu"}})
            weights[name] = []
        elif e["op"] == "dense":
            wt = FixedType.from_dict(e["weight_type"]) if e.get("weight_type") else None
            bt = FixedType.from_dict(e["bias_type"]) if e.get("bias_type") else None
            w = mod.weight.detach().to(torch.float32).numpy()
            b = mod.bias.detach().to(torch.float32).numpy() if mod.bias is not None else None
            for arr, t, what in ((w, wt, "weight"), (b, bt, "bias")):
                if arr is not None and t is not None and not np.array_equal(t.quantize(arr.astype(np.float64)), arr.astype(np.float64)):
                    msg = f"layer {name!r}: {what} values are not on the grid of {t.to_hls()}"
                    raise UnsupportedLayerError(msg)
            kq = _weight_quantizer(wt, f"layer {name!r} weight")
            bq = _weight_quantizer(bt, f"layer {name!r} bias")
            act: Any = "linear"
            nxt = entries[i + 1] if i + 1 < len(entries) else None
            if nxt is not None and nxt["op"] == "quant" and nxt.get("fused_into") == name:
                act = fixed_to_quantizer(net.body[i + 1].fixed_type, net.body[i + 1].qkeras, f"layer {nxt['name']!r}")
                i += 1
                used.add(nxt["name"])
            layers.append(_dense_layer(name, e["out"], b is not None, kq, bq, act))
            ws = [(f"{name}/kernel:0", np.ascontiguousarray(w.T))]
            if b is not None:
                ws.append((f"{name}/bias:0", b))
            weights[name] = ws
        elif e["op"] == "bn":
            layers.append(_bn_layer(name, float(e["eps"])))
            weights[name] = [(f"{name}/{k}:0", getattr(mod, attr).detach().to(torch.float32).numpy()) for k, attr in
                             (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                              ("moving_variance", "running_var"))]
        used.add(name)
        i += 1
    # Functional chain: each layer consumes the previous one
    for k, layer in enumerate(layers):
        layer["name"] = layer["config"]["name"]
        layer["inbound_nodes"] = [] if k == 0 else [[[layers[k - 1]["config"]["name"], 0, 0, {}]]]
    model_config = {"class_name": "Functional", "config": {
        "name": net.model_name, "trainable": True, "layers": layers,
        "input_layers": [[layers[0]["name"], 0, 0]], "output_layers": [[layers[-1]["name"], 0, 0]]}}
    order = [layer["name"] for layer in layers]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["backend"] = "tensorflow"
            f.attrs["keras_version"] = KERAS_VERSION
            f.attrs["model_config"] = json.dumps(model_config)
            if meta:
                f.attrs["simcompress"] = json.dumps(meta)
            g = f.create_group("model_weights")
            g.attrs["backend"] = "tensorflow"
            g.attrs["keras_version"] = KERAS_VERSION
            _write_bytes_list(g, "layer_names", order)
            for lname in order:
                lg = g.create_group(lname)
                ws = weights.get(lname, [])
                _write_bytes_list(lg, "weight_names", [n for n, _ in ws])
                for wname, arr in ws:
                    lg.create_dataset(wname, data=np.asarray(arr, dtype=np.float32))
            tl = g.create_group("top_level_model_weights")
            _write_bytes_list(tl, "weight_names", [])
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _weight_quantizer(t: FixedType | None, where: str) -> dict[str, Any] | None:
    """QKeras quantizer for stored weights: any rounding works (the values are on the grid), only the range matters."""
    if t is None:
        return None
    if t.overflow not in ("SAT", "SAT_SYM") or t.rounding != "RND_CONV":
        t = t.replace(rounding="RND_CONV", overflow="SAT")  # identity on on-grid values
    need = int(t.signed)
    if t.integer < need:  # QKeras cannot run negative 'integer': widen, same grid, same stored values
        t = t.replace(width=t.width + need - t.integer, integer=need)
    return fixed_to_quantizer(t, "quantized_bits", where)


# --------------------------------------------------------------------------- from simcompress models
def _chain_modules(module: nn.Module) -> tuple[list[tuple[str, nn.Module]], int]:
    """The module chain of ``forward(*inputs) = chain(cat(inputs))`` (torch.fx), and the number of inputs."""
    import torch.fx

    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as err:
        msg = f"{type(module).__name__}: torch.fx cannot trace the network ({err})"
        raise UnsupportedLayerError(msg) from None
    modules = dict(module.named_modules())
    chain: list[tuple[str, nn.Module]] = []
    placeholders: list[Any] = []
    cur = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            placeholders.append(node)
            cur = node if len(placeholders) == 1 else None
        elif node.op == "call_function" and node.target in (torch.cat, torch.concat):
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            if list(node.args[0]) != placeholders or dim not in (1, -1) or chain:
                msg = f"{node.name}: only a torch.cat of all inputs (dim=1) at the start is supported"
                raise UnsupportedLayerError(msg)
            cur = node
        elif node.op == "call_module" and cur is not None and node.args[0] is cur:
            chain.append((str(node.target), modules[str(node.target)]))
            cur = node
        elif node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu) and node.args[0] is cur:
            chain.append((node.name, nn.ReLU()))
            cur = node
        elif node.op == "output" and node.args[0] is cur:
            continue
        else:
            msg = (
                f"{node.name}: {node.op} {getattr(node.target, '__name__', node.target)!s} is not part of a single "
                "Linear/ReLU chain; QKeras export supports feed-forward MLPs only"
            )
            raise UnsupportedLayerError(
                msg
            )
    return chain, len(placeholders)


def network_from_precision(module: nn.Module, precision: dict[str, Any], name: str = "simcompress_mlp") -> QKerasNetwork:
    """Build a :class:`QKerasNetwork` from a fixed-point MLP and its ``compress`` precision record.

    ``module`` computes ``chain(cat(inputs))`` (or ``chain(x)``) with ``nn.Linear``, ``nn.ReLU``
    (``nn.LeakyReLU(0)``), ``nn.Identity`` (folded batch norm) and ``nn.Dropout`` modules;
    ``precision`` is the record of :mod:`simcompress.compress.methods.fixed_point`
    (``{"input": type, "layers": {module_name: {"weight", "bias", "result"}}}``, types as dicts
    or ``ap_fixed<...>`` strings). Weights must lie on their grids (a parametrized ``Linear``
    returns its quantized weight). Each ``result`` cast becomes a QKeras quantizer, so it must
    round half to even and saturate (``RND_CONV`` + ``SAT``/``SAT_SYM``; set ``rounding: RND_CONV``
    in the ``fixed_point`` config); a cast that can never round or overflow (it holds the exact
    accumulator) is dropped.

    Raises:
        UnsupportedLayerError: another layer type, or a type QKeras cannot express.
    """
    def ftype(v: Any, where: str) -> FixedType | None:
        if v is None:
            return None
        if isinstance(v, FixedType):
            return v
        try:
            return FixedType.from_dict(v, source=where)
        except ConfigError as err:
            raise UnsupportedLayerError(str(err)) from None

    if not isinstance(precision, dict) or "input" not in precision:
        msg = "network_from_precision: the precision record needs an 'input' type"
        raise UnsupportedLayerError(msg)
    rec_layers = precision.get("layers", {})
    inp = ftype(precision["input"], "precision.input")
    chain, _ = _chain_modules(module)
    entries: list[dict[str, Any]] = [{"op": "quant", "name": "input_quant", "type": inp.to_dict(), "qkeras": "quantized_bits"}]
    tensors: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    n_in: int | None = None
    for lname, m in chain:
        safe = lname.replace(".", "_")
        rec = rec_layers.get(lname, {})
        rt = ftype(rec.get("result"), f"precision.layers.{lname}.result")
        if isinstance(m, nn.Linear):
            n_in = m.in_features if n_in is None else n_in
            wt, bt = ftype(rec.get("weight"), f"{lname}.weight"), ftype(rec.get("bias"), f"{lname}.bias")
            tensors[len(entries)] = (m.weight.detach().clone(), m.bias.detach().clone() if m.bias is not None else None)
            entries.append({"op": "dense", "name": safe, "in": m.in_features, "out": m.out_features,
                            "bias": m.bias is not None, "weight_type": wt.to_dict() if wt else None,
                            "bias_type": bt.to_dict() if bt else None})
            if rt is not None:
                entries.append({"op": "quant", "name": f"{safe}_result", "type": rt.to_dict(), "qkeras": "quantized_bits",
                                "_optional": True})
        elif isinstance(m, nn.ReLU) or (isinstance(m, nn.LeakyReLU) and float(m.negative_slope) == 0.0):
            if rt is not None:  # relu then an unsigned saturating cast is quantized_relu alone
                entries.append({"op": "relu", "name": safe})
                entries.append({"op": "quant", "name": f"{safe}_quant", "type": rt.to_dict(),
                                "qkeras": "quantized_bits" if rt.signed else "quantized_relu"})
            else:
                entries.append({"op": "relu", "name": safe})
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            continue
        else:
            msg = (
                f"layer {lname!r} ({type(m).__name__}) has no exact QKeras equivalent; supported: Linear, ReLU, "
                "LeakyReLU(0), Identity, Dropout (QKeras' leaky quantized_relu needs a power-of-two slope)"
            )
            raise UnsupportedLayerError(
                msg
            )
    if n_in is None:
        msg = "network_from_precision: the module has no nn.Linear layer"
        raise UnsupportedLayerError(msg)
    # a relu directly followed by an unsigned cast: the cast alone (quantized_relu) is the same function
    merged: list[dict[str, Any]] = []
    for e in entries:
        if (e["op"] == "quant" and merged and merged[-1]["op"] == "relu" and not FixedType.from_dict(e["type"]).signed):
            merged.pop()
        merged.append(e)
    net = _build(merged, n_in, name, inp, tensors, entries)
    # drop result casts that can never round or overflow (they hold the exact accumulator)
    ranges = net._ranges()[0]
    keep = []
    for i, e in enumerate(net.layers):
        if e.get("_optional") and ranges[i - 1] is not None:
            acc, t = ranges[i - 1], FixedType.from_dict(e["type"])
            if acc.frac <= t.frac and t.min_value <= acc.lo and acc.hi <= t.max_value:
                continue
        keep.append(i)
    clean = [{k: v for k, v in e.items() if k != "_optional"} for e in net.layers]
    out = QKerasNetwork([clean[i] for i in keep], n_in, name, input_type=inp)
    with torch.no_grad():
        for new_i, old_i in enumerate(keep):
            out.body[new_i].load_state_dict(net.body[old_i].state_dict())
    return out


def _build(merged: list[dict[str, Any]], n_in: int, name: str, inp: FixedType,
           tensors: dict[int, tuple[torch.Tensor, torch.Tensor | None]], entries: list[dict[str, Any]]) -> QKerasNetwork:
    net = QKerasNetwork(merged, n_in, name, input_type=inp)
    pos = {id(e): i for i, e in enumerate(merged)}
    with torch.no_grad():
        for idx, (w, b) in tensors.items():
            lin = net.body[pos[id(entries[idx])]]
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)
    return net


def network_from_fixed_point(model: nn.Module, name: str = "simcompress_mlp") -> QKerasNetwork:
    """The :class:`QKerasNetwork` of a model quantized by ``compress``' ``fixed_point``/``qat_fixed_point``.

    Raises:
        UnsupportedLayerError: no fixed-point network inside, or a layer/type QKeras cannot express.
    """
    from ..compress.fixed_point.modules import find_fixed_point_network

    found = find_fixed_point_network(model)
    if found is None:
        msg = (
            f"{type(model).__name__} has no fixed-point network; quantize it first with the 'fixed_point' method "
            "(rounding: RND_CONV, overflow: SAT, as QKeras quantizers)"
        )
        raise UnsupportedLayerError(
            msg
        )
    _, fpn = found
    return network_from_precision(fpn.inner, fpn.record, name)
