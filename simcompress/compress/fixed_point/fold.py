"""Folding a batch norm into the weight layer before it (float algebra, before quantization)."""

from __future__ import annotations

import torch
from torch import nn

from ...errors import UnsupportedLayerError
from .modules import FoldedBatchNorm
from .tracing import BATCHNORMS, CONV_T, WEIGHT_LAYERS, set_submodule, trace

__all__ = ["fold_batchnorm"]


def _bn_matches(bn: nn.Module, layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return isinstance(bn, nn.BatchNorm1d)
    weight: torch.Tensor = layer.weight  # type: ignore[assignment]  # nn.Module attributes are typed Tensor | Module
    nd = weight.ndim - 2
    return isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[nd - 1])


def fold_batchnorm(net: nn.Module) -> list[str]:
    """Fold every batch norm that directly follows a Linear / (transposed) convolution (sole user) into it.

    BatchNorm1d after Linear or Conv1d/ConvTranspose1d, BatchNorm2d after the 2-D convolutions,
    BatchNorm3d after the 3-D ones (eval-mode statistics). Returns the folded names.
    """
    gm = trace(net)
    modules = dict(net.named_modules())
    folded = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), BATCHNORMS):
            continue
        src = node.args[0]
        if not (hasattr(src, "op") and src.op == "call_module" and isinstance(modules.get(src.target), WEIGHT_LAYERS)):
            continue
        if len(src.users) != 1:
            continue
        bn = modules[node.target]
        lin = modules[src.target]
        if not _bn_matches(bn, lin) or getattr(lin, "groups", 1) != 1 and isinstance(lin, CONV_T):
            continue
        with torch.no_grad():
            var = bn.running_var if bn.track_running_stats and bn.running_var is not None else None
            mean = bn.running_mean if var is not None else None
            if var is None or mean is None:
                msg = f"{node.target}: {type(bn).__name__} without running statistics cannot be folded"
                raise UnsupportedLayerError(msg)
            scale = 1.0 / torch.sqrt(var.double() + bn.eps)
            if bn.affine:
                scale = scale * bn.weight.double()
            shift = -mean.double() * scale
            if bn.affine:
                shift = shift + bn.bias.double()
            shape = [1] * lin.weight.ndim
            axis = 1 if isinstance(lin, CONV_T) else 0
            shape[axis] = -1
            w = lin.weight.double() * scale.reshape(shape)
            b = (lin.bias.double() if lin.bias is not None else torch.zeros_like(shift)) * scale + shift
            lin.weight.copy_(w.to(lin.weight.dtype))
            if lin.bias is None:
                lin.bias = nn.Parameter(b.to(lin.weight.dtype))
            else:
                lin.bias.copy_(b.to(lin.bias.dtype))
        set_submodule(net, node.target, FoldedBatchNorm(bn.num_features))
        folded.append(str(node.target))
    return folded
