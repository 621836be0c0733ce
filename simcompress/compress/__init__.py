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
    "compress",
    "config_from_dict",
    "get_method",
    "list_methods",
    "register_method",
    "Pipeline",
    "PipelineResult",
    "load_recipe",
    "save_compressed",
    "load_compressed",
    "register_module_type",
]
