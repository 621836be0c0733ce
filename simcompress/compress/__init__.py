"""Compression of any torch model: quantization, pruning, low rank, distillation.

Never imports physics: the fidelity gate is passed in (see :class:`Gate`).
"""

from .base import (
    CompressionResult,
    Gate,
    GateResult,
    LayerRecord,
    MethodConfig,
    compress,
    config_from_dict,
    get_method,
    list_methods,
    register_method,
)

__all__ = [
    "CompressionResult",
    "Gate",
    "GateResult",
    "LayerRecord",
    "MethodConfig",
    "compress",
    "config_from_dict",
    "get_method",
    "list_methods",
    "register_method",
]
