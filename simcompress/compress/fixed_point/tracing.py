"""torch.fx helpers of the fixed-point methods: tracing and the node classes they understand.

Weight layers, activations (as modules or torch functions) and the shape operations that
move values without changing them; plus finding the network inside a model by its path.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx
from torch import nn

from ...errors import ConfigError, UnsupportedLayerError

__all__ = ["WEIGHT_LAYERS", "functional_kind", "is_shape_op", "resolve_network", "set_submodule", "trace"]

ACTIVATION_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)
FUNCTIONAL_RELU = {torch.relu, torch.nn.functional.relu}
#: functional activations whose output is cast to the activation type (kind, default slope)
FUNCTIONAL_ACT = {
    torch.nn.functional.leaky_relu: "LeakyReLU",
    torch.tanh: "Tanh", torch.nn.functional.tanh: "Tanh",
    torch.sigmoid: "Sigmoid", torch.nn.functional.sigmoid: "Sigmoid",
}
METHOD_ACT = {"tanh": "Tanh", "sigmoid": "Sigmoid"}
#: weight layers: Linear and every (transposed) convolution
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: shape operations that move values without changing them (the type passes through)
SHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "contiguous", "select", "narrow", "transpose", "unflatten"}
SHAPE_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.permute, torch.narrow, torch.select, torch.transpose}
SHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.Dropout)

def resolve_network(model: nn.Module, path: str | None) -> tuple[str, nn.Module]:
    if path is None:
        path = "network" if isinstance(getattr(model, "network", None), nn.Module) else ""
    if path == "":
        return "", model
    try:
        return path, model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        msg = f"network: model has no submodule {path!r}; submodules: {', '.join(names[:12])}"
        raise ConfigError(msg) from None


def set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_name, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def trace(net: nn.Module) -> Any:
    try:
        return torch.fx.symbolic_trace(net)
    except Exception as err:
        msg = (
            f"{type(net).__name__}: cannot trace the network with torch.fx ({err}); fixed-point export needs a "
            "static feed-forward graph (Linear, Conv, ConvTranspose, BatchNorm, activations, reshapes, crops, torch.cat)"
        )
        raise UnsupportedLayerError(
            msg
        ) from None


def functional_kind(node: Any) -> str | None:
    if node.op == "call_function" and node.target in FUNCTIONAL_ACT:
        return FUNCTIONAL_ACT[node.target]
    if node.op == "call_method" and node.target in METHOD_ACT:
        return METHOD_ACT[node.target]
    return None


def is_shape_op(node: Any) -> bool:
    if node.op == "call_method" and node.target in SHAPE_METHODS:
        return True
    if node.op == "call_function" and node.target in SHAPE_FUNCS:
        return True
    if node.op == "call_function" and node.target is operator.getitem:
        return True  # a crop of a typed tensor keeps its type; an index into x.shape gets None
    if node.op == "call_function" and node.target is torch.nn.functional.interpolate:
        return node.kwargs.get("mode", "nearest") == "nearest" and len(node.args) < 4
    return False
