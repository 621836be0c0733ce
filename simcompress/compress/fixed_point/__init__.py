"""HLS fixed-point (``ap_fixed``) quantization.

* :mod:`.types`: :class:`FixedType` (exact quantization onto ``ap_fixed<W,I,Q,O>``),
  :func:`parse_fixed`, :func:`integer_bits_for_range`, :func:`exact_accumulator`;
* :mod:`.record`: :class:`PrecisionRecord`, the per-layer types of a quantized network
  (``precision.json``), the only thing :mod:`simcompress.firmware` and
  :mod:`simcompress.interop` read from compression besides the weights;
* :mod:`.config`: the method configs (:class:`FixedPointConfig`, :class:`QATFixedPointConfig`);
* :mod:`.modules`: :class:`FixedPointNetwork`, :class:`FixedQuantize`, :class:`FoldedBatchNorm`;
* :mod:`.methods`: the registered transforms ``fixed_point`` and ``qat_fixed_point``
  (registered when :mod:`simcompress.compress.methods` is imported).

Types and the record are imported here directly; the torch-side names load on first use.
"""

from __future__ import annotations

from typing import Any

from .record import PRECISION_FORMAT_VERSION, PrecisionEntry, PrecisionRecord, find_precision_network
from .types import (
    OVERFLOW_MODES,
    ROUNDING_MODES,
    FixedLike,
    FixedType,
    exact_accumulator,
    integer_bits_for_range,
    parse_fixed,
)

__all__ = [
    "OVERFLOW_MODES",
    "PRECISION_FORMAT_VERSION",
    "ROUNDING_MODES",
    "FixedLike",
    "FixedPointConfig",
    "FixedPointNetwork",
    "FixedQuantize",
    "FixedSpec",
    "FixedType",
    "FoldedBatchNorm",
    "LayerPrecision",
    "PrecisionEntry",
    "PrecisionRecord",
    "QATFixedPointConfig",
    "exact_accumulator",
    "find_fixed_point_network",
    "find_precision_network",
    "fold_batchnorm",
    "integer_bits_for_range",
    "parse_fixed",
    "precision_record",
]

_LAZY = {
    "FixedPointConfig": "config",
    "FixedSpec": "config",
    "LayerPrecision": "config",
    "QATFixedPointConfig": "config",
    "FixedPointNetwork": "modules",
    "FixedQuantize": "modules",
    "FoldedBatchNorm": "modules",
    "find_fixed_point_network": "modules",
    "precision_record": "modules",
    "fold_batchnorm": "fold",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
