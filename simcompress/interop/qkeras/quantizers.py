"""QKeras quantizers as fixed-point types: ``quantized_bits``/``quantized_relu`` <-> :class:`FixedType`.

See :mod:`simcompress.interop.qkeras` for the exact correspondence (``tf.round`` is half to
even, so every supported quantizer is an ``AP_RND_CONV`` cast with ``AP_SAT``/``AP_SAT_SYM``).

>>> t, kind = quantizer_to_fixed("quantized_relu(8, 3)", "demo")
>>> t.to_hls(), kind
('ap_ufixed<8,3,AP_RND_CONV,AP_SAT>', 'quantized_relu')
"""

from __future__ import annotations

import ast
from typing import Any

import numpy as np
import torch
from torch import nn

from ...compress.fixed_point.types import FixedType
from ...errors import UnsupportedLayerError

__all__ = ["FixedQuantizer", "fixed_to_quantizer", "quantizer_to_fixed"]

_SUPPORTED_QUANTIZERS = ("quantized_bits", "quantized_relu")

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
    cfg: dict[str, Any]
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
