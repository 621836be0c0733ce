"""alkaid helpers of the firmware routes: exact constant products, LeakyReLU, one alkaid 0.8.2 workaround.

Our own code where alkaid's is slow or wrong here (each says why): alkaid multiplies by a constant
with a solver per element (:func:`times_constant` uses shifted adds), its ``np.where`` on saturated
values picks the wrong branch in the interpreter (:func:`leaky_trace` uses max/min), and its
``cmvm`` fails on all-constant products (:func:`patch_constant_cmvm`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..compress.fixed_point.types import FixedType

__all__ = ["kif", "leaky_trace", "patch_constant_cmvm", "times_constant"]


def kif(t: FixedType) -> tuple[int, int, int]:
    """alkaid's (keep sign, integer bits without the sign, fractional bits) of a record type."""
    k = int(t.signed)
    return k, t.integer - k, t.frac


def patch_constant_cmvm() -> None:
    """Work around alkaid 0.8.2's ``cmvm`` failing (``StopIteration``) when a product is constant.

    When every input with a non-zero weight is a constant (a dead ReLU channel, often after
    pruning), alkaid builds an FVArray of plain floats and cannot find its hardware config. The
    product is then the constant ``sum(w * value)``: this wrapper returns it as constant variables.
    """
    from alkaid.trace import fixed_variable_array as fva

    if getattr(fva.cmvm, "_simcompress_patched", False):
        return
    original = fva.cmvm

    def cmvm(cm: np.ndarray, v: Any, solver_options: Any) -> Any:
        try:
            return original(cm, v, solver_options)
        except StopIteration:
            raw = np.asarray(v)
            used = np.any(cm != 0, axis=1)
            if not all(x.low == x.high for x in raw[used]):
                raise
            values = np.array([float(x.low) if u else 0.0 for x, u in zip(raw, used, strict=True)]) @ cm.astype(np.float64)
            return fva.FVArray(values, v.solver_options, hwconf=v.hwconf)

    cmvm._simcompress_patched = True  # type: ignore[attr-defined]
    fva.cmvm = cmvm


def _csd(n: int) -> list[tuple[int, int]]:
    """Canonical signed digits of ``n``: ``[(sign, exponent), ...]`` with ``n = sum(sign * 2**exponent)``.

    >>> _csd(7), _csd(-3)
    ([(-1, 0), (1, 3)], [(1, 0), (-1, 2)])
    """
    digits = []
    e = 0
    while n:
        if n & 1:
            d = 2 - (n & 3)  # +1 when n = 1 (mod 4), -1 when n = 3 (mod 4)
            digits.append((d, e))
            n -= d
        n >>= 1
        e += 1
    return digits


def times_constant(x: Any, c: float) -> Any:
    """``x * c`` for a dyadic constant as shifted adds of its canonical signed digits (exact).

    alkaid's own constant multiplication runs a solver per element, far slower for one shared
    scalar such as a LeakyReLU slope; the product is the same exact value either way.
    """
    if c == 0:
        return x * 0.0
    mant, exp = math.frexp(c)
    frac = 53 - exp
    n = int(math.ldexp(mant, 53))
    while n % 2 == 0:
        n //= 2
        frac -= 1
    out = None
    for sign, e in _csd(n):
        term = x * math.ldexp(float(sign), e - frac)
        out = term if out is None else out + term
    return out


def leaky_trace(x: Any, alpha: float) -> Any:
    """``x > 0 ? x : alpha * x`` on alkaid arrays, as ``max(x, 0) + alpha * min(x, 0)`` (exact)."""
    return np.maximum(x, 0.0) + times_constant(np.minimum(x, 0.0), alpha)
