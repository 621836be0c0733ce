"""HLS fixed-point types (``ap_fixed<W,I,Q,O>``) with exact quantization.

:class:`FixedType` describes one Xilinx/AMD HLS arbitrary-precision fixed-point
type: ``width`` bits in total, ``integer`` of them above the binary point (sign
bit included for signed types), a rounding (quantization) mode and an overflow
mode. Quantization is computed exactly on the integer grid ``n * 2**-F``
(``F = width - integer``):

* :meth:`FixedType.quantize_int` maps real values (numpy) to the integer codes ``n``
  (int64, two's complement value, not the raw bit pattern);
* :meth:`FixedType.requantize` maps integer codes of a finer/coarser grid (for
  example a wide accumulator) to this type, in pure integer arithmetic, as the
  HLS cast ``res_t(acc)`` does;
* :meth:`FixedType.quantize` returns the values ``n * 2**-F`` (numpy or torch).

Rounding modes (what happens to the bits below the LSB), ``q = x * 2**F``:

==============  ==========================================================
``TRN``         floor(q) (toward minus infinity; the HLS default)
``TRN_ZERO``    toward zero
``RND``         nearest, ties toward plus infinity
``RND_ZERO``    nearest, ties toward zero
``RND_MIN_INF`` nearest, ties toward minus infinity
``RND_INF``     nearest, ties away from zero
``RND_CONV``    nearest, ties to even (convergent)
==============  ==========================================================

Overflow modes (after rounding; ``[lo, hi]`` is the representable code range):
``WRAP`` two's-complement wrap-around (the HLS default), ``SAT`` clamp to
``[lo, hi]``, ``SAT_ZERO`` out-of-range values become 0, ``SAT_SYM`` clamp to
``[-hi, hi]`` for signed types (unsigned: as ``SAT``).

Example:
    >>> t = FixedType(8, 3, rounding="RND", overflow="SAT")
    >>> t.to_hls()
    'ap_fixed<8,3,AP_RND,AP_SAT>'
    >>> t.quantize(np.array([0.1, 5.0, -9.0])).tolist()
    [0.09375, 3.96875, -4.0]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ...errors import ConfigError

__all__ = [
    "OVERFLOW_MODES",
    "ROUNDING_MODES",
    "FixedLike",
    "FixedType",
    "exact_accumulator",
    "integer_bits_for_range",
    "parse_fixed",
]

ROUNDING_MODES = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV")
OVERFLOW_MODES = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")
Rounding = Literal["TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_MIN_INF", "RND_INF", "RND_CONV"]
Overflow = Literal["WRAP", "SAT", "SAT_ZERO", "SAT_SYM"]

#: widths above this are not exact in float64 arithmetic (53-bit mantissa)
MAX_FLOAT_EXACT_WIDTH = 53
#: integer-code arithmetic is done in int64 up to this width (headroom for the shifts)
MAX_INT64_WIDTH = 62


def _round_floor_parts(fl: Any, cmp_half: Any, inexact: Any, neg: Any, mode: str, xp: Any) -> Any:
    """Apply a rounding mode given ``floor(q)`` and how the discarded part compares to one half.

    ``cmp_half`` is -1, 0 or +1 (below, equal to, above one half LSB); ``inexact``
    says the discarded part is non-zero; ``neg`` says the value is negative.
    ``xp`` is numpy or torch; all arrays have the same integer-like dtype.
    """
    above = cmp_half > 0
    tie = cmp_half == 0
    if mode == "TRN":
        up = xp.zeros_like(above)
    elif mode == "TRN_ZERO":
        up = inexact & neg
    elif mode == "RND":
        up = above | tie
    elif mode == "RND_ZERO":
        up = above | (tie & neg)
    elif mode == "RND_MIN_INF":
        up = above
    elif mode == "RND_INF":
        up = above | (tie & ~neg)
    elif mode == "RND_CONV":
        odd = (fl % 2) != 0
        up = above | (tie & odd)
    else:  # pragma: no cover - validated in FixedType
        msg = f"unknown rounding mode {mode!r}"
        raise ConfigError(msg)
    return fl + up.to(fl.dtype) if xp.__name__ == "torch" else fl + up.astype(fl.dtype)


@dataclass(frozen=True)
class FixedType:
    """An HLS fixed-point type ``ap_[u]fixed<width, integer, AP_<rounding>, AP_<overflow>>``.

    Arguments:
        width: total number of bits (1..64).
        integer: bits above the binary point, sign bit included for signed types;
            may be negative or larger than ``width`` as in HLS.
        signed: ``ap_fixed`` (True) or ``ap_ufixed`` (False).
        rounding: one of :data:`ROUNDING_MODES`.
        overflow: one of :data:`OVERFLOW_MODES`.
    """

    width: int
    integer: int
    signed: bool = True
    rounding: str = "TRN"
    overflow: str = "WRAP"

    def __post_init__(self) -> None:
        if not isinstance(self.width, (int, np.integer)) or not 1 <= int(self.width) <= 64:
            msg = f"fixed-point width must be an integer in 1..64, got {self.width!r}"
            raise ConfigError(msg)
        if not isinstance(self.integer, (int, np.integer)) or abs(int(self.integer)) > 128:
            msg = f"fixed-point integer bits must be an integer in -128..128, got {self.integer!r}"
            raise ConfigError(msg)
        if self.signed and self.width < 2 and self.overflow == "SAT_SYM":
            msg = "SAT_SYM needs a signed width of at least 2 bits"
            raise ConfigError(msg)
        if self.rounding not in ROUNDING_MODES:
            msg = f"unknown rounding mode {self.rounding!r}; allowed: {', '.join(ROUNDING_MODES)}"
            raise ConfigError(msg)
        if self.overflow not in OVERFLOW_MODES:
            msg = f"unknown overflow mode {self.overflow!r}; allowed: {', '.join(OVERFLOW_MODES)}"
            raise ConfigError(msg)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "integer", int(self.integer))
        object.__setattr__(self, "signed", bool(self.signed))

    # ----------------------------------------------------------------- properties
    @property
    def frac(self) -> int:
        """Fractional bits ``F = width - integer`` (may be negative)."""
        return self.width - self.integer

    @property
    def lsb(self) -> float:
        return math.ldexp(1.0, -self.frac)

    @property
    def int_min(self) -> int:
        """Smallest integer code (before SAT_SYM)."""
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def int_max(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def min_value(self) -> float:
        lo = -self.int_max if (self.overflow == "SAT_SYM" and self.signed) else self.int_min
        return math.ldexp(float(lo), -self.frac)

    @property
    def max_value(self) -> float:
        return math.ldexp(float(self.int_max), -self.frac)

    # ------------------------------------------------------------------- strings
    def to_hls(self, modes: bool = True) -> str:
        """The HLS type string, e.g. ``ap_fixed<8,3,AP_RND,AP_SAT>``.

        The modes are omitted when both are the defaults (TRN, WRAP) or when
        ``modes=False``.
        """
        base = "ap_fixed" if self.signed else "ap_ufixed"
        if not modes or (self.rounding == "TRN" and self.overflow == "WRAP"):
            return f"{base}<{self.width},{self.integer}>"
        return f"{base}<{self.width},{self.integer},AP_{self.rounding},AP_{self.overflow}>"

    def __str__(self) -> str:
        return self.to_hls()

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "integer": self.integer,
            "signed": self.signed,
            "rounding": self.rounding,
            "overflow": self.overflow,
            "hls": self.to_hls(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str, source: str = "<fixed type>") -> FixedType:
        if isinstance(data, str):
            return parse_fixed(data, source)
        if not isinstance(data, dict):
            msg = f"{source}: a fixed-point type must be a mapping or 'ap_fixed<W,I,...>' string"
            raise ConfigError(msg)
        body = {k: v for k, v in data.items() if k != "hls"}
        allowed = {"width", "integer", "signed", "rounding", "overflow"}
        bad = sorted(set(body) - allowed)
        if bad:
            msg = f"{source}: unknown key {bad[0]!r} in fixed-point type; allowed: {', '.join(sorted(allowed))}"
            raise ConfigError(msg)
        if "width" not in body or "integer" not in body:
            msg = f"{source}: a fixed-point type needs 'width' and 'integer'"
            raise ConfigError(msg)
        try:
            return cls(**body)
        except ConfigError as err:
            msg = f"{source}: {err}"
            raise ConfigError(msg) from None

    def replace(self, **changes: Any) -> FixedType:
        d = {k: getattr(self, k) for k in ("width", "integer", "signed", "rounding", "overflow")}
        d.update(changes)
        return FixedType(**d)

    # ------------------------------------------------------------- integer core
    def _overflow_np(self, n: np.ndarray) -> np.ndarray:
        lo, hi = self.int_min, self.int_max
        mode = self.overflow
        if mode == "WRAP":
            if self.width >= 63:
                return n
            span = np.int64(1) << np.int64(self.width)
            wrapped = np.mod(n, span)
            if self.signed:
                wrapped = np.where(wrapped >= span // 2, wrapped - span, wrapped)
            return wrapped
        if mode == "SAT":
            return np.clip(n, lo, hi)
        if mode == "SAT_SYM":
            return np.clip(n, -hi if self.signed else lo, hi)
        return np.where((n < lo) | (n > hi), 0, n)  # SAT_ZERO

    def requantize(self, n: Any, frac: int) -> np.ndarray:
        """Cast integer codes ``n`` with ``frac`` fractional bits to this type (exact integer arithmetic).

        This is the HLS assignment ``this_t y = x`` for ``x`` an ``ap_fixed`` with
        ``frac`` fractional bits. ``n`` is an int64 array (or an object array of
        Python ints for values wider than 62 bits); the result is int64.
        """
        n = np.asarray(n)
        shift = frac - self.frac
        if n.dtype == object or (shift < 0 and _bits_needed(n) - shift > MAX_INT64_WIDTH):
            flat = [self._requant_py(int(v), shift) for v in n.ravel()]
            return np.array(flat, dtype=np.int64).reshape(n.shape)
        n = n.astype(np.int64, copy=False)
        if shift <= 0:
            q = n << np.int64(-shift)
        else:
            fl = n >> np.int64(shift)
            rem = n - (fl << np.int64(shift))  # 0 <= rem < 2**shift
            cmp = np.sign(rem - (np.int64(1) << np.int64(shift - 1))).astype(np.int64)
            q = _round_floor_parts(fl, cmp, rem != 0, n < 0, self.rounding, np)
        return self._overflow_np(q).astype(np.int64, copy=False)

    def _requant_py(self, n: int, shift: int) -> int:
        """Scalar Python-int version of :meth:`requantize` for very wide accumulators."""
        if shift <= 0:
            q = n << -shift
        else:
            fl = n >> shift
            rem = n - (fl << shift)
            half = 1 << (shift - 1)
            q = int(_round_floor_parts(np.array([fl], dtype=object), np.array([(rem > half) - (rem < half)]),
                                       np.array([rem != 0]), np.array([n < 0]), self.rounding, np)[0])
        lo, hi = self.int_min, self.int_max
        if self.overflow == "WRAP":
            q %= 1 << self.width
            if self.signed and q >= 1 << (self.width - 1):
                q -= 1 << self.width
        elif self.overflow in ("SAT", "SAT_SYM"):
            lo = -hi if (self.overflow == "SAT_SYM" and self.signed) else lo
            q = min(max(q, lo), hi)
        elif q < lo or q > hi:
            q = 0
        return q

    def quantize_int(self, x: Any) -> np.ndarray:
        """Integer codes (int64) of real values ``x`` quantized to this type (exact, float64)."""
        if self.width > MAX_FLOAT_EXACT_WIDTH:
            msg = f"{self.to_hls()}: quantizing floats is exact only up to {MAX_FLOAT_EXACT_WIDTH} bits"
            raise ConfigError(msg)
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            msg = f"cannot quantize non-finite values to {self.to_hls()}"
            raise ValueError(msg)
        q = np.ldexp(x, self.frac)  # exact: scaling by a power of two
        # keep magnitudes where int64 and float64 agree; anything beyond overflows anyway
        limit = float(2**61)
        q = np.clip(q, -limit, limit)
        fl = np.floor(q)
        r = q - fl  # exact, in [0, 1)
        cmp = np.sign(r - 0.5).astype(np.int64)
        fl_i = fl.astype(np.int64)
        n = _round_floor_parts(fl_i, cmp, r != 0, q < 0, self.rounding, np)
        return self._overflow_np(n).astype(np.int64, copy=False)

    def quantize(self, x: Any) -> Any:
        """Values of ``x`` quantized to this type; numpy in -> float64 numpy out, torch in -> torch out (same dtype).

        For torch tensors the computation is done in float64 and is exact; the
        result is cast back to the input dtype (exact for widths up to 24 bits in
        float32). No gradient flows through this function (see
        :class:`simcompress.compress.fixed_point.modules.FixedQuantize` for
        the straight-through estimator).
        """
        import torch  # a core dependency; imported here so that numpy-only use stays light

        if isinstance(x, torch.Tensor):
            return self._quantize_torch(x)
        n = self.quantize_int(x)
        return np.ldexp(n.astype(np.float64), -self.frac) + 0.0

    def _quantize_torch(self, x: Any) -> Any:
        """Float64 arithmetic only (integers below 2**53 are exact); plain ops (ONNX-exportable)."""
        import torch

        if self.width > MAX_FLOAT_EXACT_WIDTH:
            msg = f"{self.to_hls()}: quantizing floats is exact only up to {MAX_FLOAT_EXACT_WIDTH} bits"
            raise ConfigError(msg)
        with torch.no_grad():
            x64 = x.detach().to(torch.float64)
            q = (x64 * math.ldexp(1.0, self.frac)).clamp(-float(2**52), float(2**52))
            fl = torch.floor(q)
            r = q - fl  # exact in float64; so is r - 0.5
            n = _round_floor_parts(fl, torch.sign(r - 0.5), r != 0, q < 0, self.rounding, torch)
            lo, hi = float(self.int_min), float(self.int_max)
            if self.overflow == "WRAP":
                span = float(2**self.width)
                n = torch.remainder(n - lo, span) + lo
            elif self.overflow == "SAT":
                n = n.clamp(lo, hi)
            elif self.overflow == "SAT_SYM":
                n = n.clamp(-hi if self.signed else lo, hi)
            else:
                n = torch.where((n < lo) | (n > hi), torch.zeros_like(n), n)
            out = n * math.ldexp(1.0, -self.frac) + 0.0
            out = torch.where(torch.isnan(x64), x64, out)  # NaN stays NaN
        return out.to(x.dtype)

    # ------------------------------------------------------------ type algebra
    def union(self, other: FixedType) -> FixedType:
        """Smallest type holding every value of both (what an exact cat/select needs)."""
        signed = self.signed or other.signed
        frac = max(self.frac, other.frac)
        # integer bits of each as a signed type
        i1 = self.integer + (1 if signed and not self.signed else 0)
        i2 = other.integer + (1 if signed and not other.signed else 0)
        integer = max(i1, i2)
        return FixedType(integer + frac, integer, signed, self.rounding, self.overflow)

    def contains(self, other: FixedType) -> bool:
        """True when every value of ``other`` is exactly representable in ``self``."""
        if other.frac > self.frac:
            return False
        lo = math.ldexp(float(other.int_min), -other.frac)
        hi = math.ldexp(float(other.int_max), -other.frac)
        return self.min_value <= lo and hi <= self.max_value


_HLS_RE = re.compile(
    r"^\s*(ap_fixed|ap_ufixed|fixed|ufixed)\s*<\s*(-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(?:AP_)?(\w+)\s*)?(?:,\s*(?:AP_)?(\w+)\s*)?(?:,\s*\d+\s*)?>\s*$"
)


def parse_fixed(text: str, source: str = "<fixed type>") -> FixedType:
    """Parse ``ap_fixed<W,I[,AP_Q[,AP_O[,N]]]>`` / ``ap_ufixed<...>`` (hls4ml's ``fixed<...>`` too)."""
    m = _HLS_RE.match(str(text))
    if not m:
        msg = f"{source}: cannot parse fixed-point type {text!r}; expected e.g. 'ap_fixed<16,6,AP_RND,AP_SAT>'"
        raise ConfigError(msg)
    kind, w, i, q, o = m.groups()
    try:
        return FixedType(int(w), int(i), signed=not kind.endswith("ufixed"), rounding=q or "TRN", overflow=o or "WRAP")
    except ConfigError as err:
        msg = f"{source}: {err}"
        raise ConfigError(msg) from None


def integer_bits_for_range(lo: float, hi: float, signed: bool = True) -> int:
    """Fewest integer bits ``I`` so that ``[lo, hi]`` fits in an ``ap_[u]fixed<., I>`` (at least -16).

    Signed: ``-2**(I-1) <= lo`` and ``hi < 2**(I-1)``; unsigned: ``hi < 2**I``.
    Rounding at the LSB is not counted: choose SAT overflow (or one bit of headroom)
    when values may round up to the top of the range.
    """
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        msg = f"cannot choose integer bits for a non-finite range [{lo}, {hi}]"
        raise ConfigError(msg)
    if not signed and lo < 0:
        msg = f"an unsigned type cannot hold negative values (observed minimum {lo})"
        raise ConfigError(msg)
    need = -16
    if hi > 0:
        k = math.floor(math.log2(hi)) + 1  # smallest k with 2**k > hi
        need = max(need, k + 1 if signed else k)
    if lo < 0:
        need = max(need, math.ceil(math.log2(-lo)) + 1)
    return need


def _bits_needed(n: np.ndarray) -> int:
    if n.size == 0:
        return 1
    m = int(np.max(np.abs(n.astype(np.float64))))
    return m.bit_length() + 1


FixedLike = FixedType | dict | str


def exact_accumulator(x: FixedType, w_int: np.ndarray, w_t: FixedType, b_int: np.ndarray | None, b_t: FixedType) -> FixedType:
    """Narrowest signed type holding every partial sum of ``b + sum_j w_j x_j`` exactly, in any order.

    ``w_int`` (out, in) and ``b_int`` (out,) are the integer codes of the quantized weights and
    biases. The compress methods record this type and the firmware checks it: with it the order
    of summation (reuse factor, strategy) cannot change a result.

    >>> x = FixedType(8, 3)
    >>> exact_accumulator(x, np.array([[3, -2]]), FixedType(4, 1), np.array([1]), FixedType(6, 2)).to_hls()
    'ap_fixed<11,3>'
    """
    frac = max(x.frac + w_t.frac, b_t.frac if b_int is not None else -10**6)
    xlo = x.int_min if not (x.overflow == "SAT_SYM" and x.signed) else -x.int_max
    xhi = x.int_max
    w = w_int.astype(object) if w_int.size else w_int
    # per-term range in units of 2**-(x.frac + w.frac); each term's range contains 0
    pos = np.where(w_int >= 0, w * xhi, w * xlo).sum(axis=1) if w_int.size else np.zeros(0)
    neg = np.where(w_int >= 0, w * xlo, w * xhi).sum(axis=1) if w_int.size else np.zeros(0)
    shift_p = frac - (x.frac + w_t.frac)
    hi = max([int(v) << shift_p for v in pos] + [0])
    lo = min([int(v) << shift_p for v in neg] + [0])
    if b_int is not None and b_int.size:
        shift_b = frac - b_t.frac
        bs = [int(v) << shift_b for v in b_int]
        hi = max([hi] + [int(p << shift_p) + b for p, b in zip(pos, bs, strict=False)] + bs)
        lo = min([lo] + [int(n << shift_p) + b for n, b in zip(neg, bs, strict=False)] + bs)
    # integer code range [lo, hi] must fit a signed W-bit code
    bits = max(int(hi).bit_length() + 1, int(-lo - 1).bit_length() + 1 if lo < 0 else 1, 2)
    return FixedType(bits, bits - frac, signed=True)
