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
from .bundle import load_compressed, register_module_type, save_compressed
from .pipeline import Pipeline, PipelineResult, load_recipe

__all__ = [
    "CompressionResult",
    "Gate",
    "GateResult",
    "LayerRecord",
    "MethodConfig",
    "Pipeline",
    "PipelineResult",
    "compress",
    "config_from_dict",
    "get_method",
    "list_methods",
    "load_compressed",
    "load_recipe",
    "register_method",
    "register_module_type",
    "save_compressed",
]
