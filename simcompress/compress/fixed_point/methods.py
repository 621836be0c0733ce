"""The registered fixed-point methods: ``fixed_point`` (PTQ) and ``qat_fixed_point`` (QAT).

Both put a feed-forward network (``model.network`` for a shower generator, or a
module given by ``network:``) onto per-layer HLS fixed-point types:

* the network inputs (noise and conditioning) are quantized to the ``input`` type;
* every selected weight layer gets ``weight`` and ``bias`` quantizers
  (``torch.nn.utils.parametrize``) and its output is cast to the ``result`` type;
  its ``accum`` type is derived, wide enough for the exact sum (worst case over
  the quantized weights and the input range, every partial sum included);
* every activation (``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Tanh``, ``nn.Sigmoid`` or the
  torch functions) casts its output to the ``activation`` type (unsigned after ReLU
  unless said otherwise); LeakyReLU's slope gets the ``param`` type, as hls4ml's ``param_t``;
* a batch norm directly after a weight layer is folded into it first (float
  algebra, before quantization), so the firmware never sees it.

Integer bits not given in the config are chosen from ranges observed on
calibration inputs of the float model (plus ``headroom`` bits), with SAT overflow
by default. The result is a :class:`~.modules.FixedPointNetwork` and its
:class:`~.record.PrecisionRecord` (the bundle's ``precision.json``), which is all
:mod:`simcompress.firmware` needs besides the weights to emulate it bit-exactly.

``qat_fixed_point`` inserts the same quantizers with straight-through gradients,
so the pipeline's fine-tuning step trains through them; ``fixed_point`` freezes
the quantized weights (no gradient through the quantizers).

The transform runs four steps: :func:`_prepare` (find, fold and trace the network),
:func:`~.calibration.observe_ranges`, :class:`_TypeWalk` (one type per graph node, the
record of every layer) and :func:`_wrap` (the quantized model).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn

from ...errors import ConfigError, UnsupportedLayerError
from ..base import CompressionResult, LayerRecord, register_method
from .calibration import INPUT_RANGE, calibration_inputs, observe_ranges
from .config import FixedPointConfig, FixedSpec, QATFixedPointConfig, match_override
from .fold import fold_batchnorm
from .modules import FixedPointNetwork, find_fixed_point_network
from .record import PRECISION_FORMAT_VERSION, PrecisionRecord
from .tracing import (
    ACTIVATION_MODULES,
    BATCHNORMS,
    CONV_T,
    FUNCTIONAL_RELU,
    SHAPE_MODULES,
    WEIGHT_LAYERS,
    functional_kind,
    is_shape_op,
    resolve_network,
    set_submodule,
    trace,
)
from .types import FixedType, exact_accumulator

__all__ = ["fixed_point", "qat_fixed_point"]

_UNSUPPORTED_MODULE = (
    "Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d, BatchNorm (folded), ReLU, LeakyReLU, Tanh, Sigmoid "
    "(modules or functions), nearest Upsample, reshapes, crops, torch.cat"
)
_UNSUPPORTED_FUNCTION = "torch.cat, relu / leaky_relu / tanh / sigmoid, reshapes, crops, nearest interpolate"


@dataclass
class _Prepared:
    """The network to quantize, folded and traced."""

    path: str
    net: nn.Module
    folded: list[str]
    gm: torch.fx.GraphModule
    modules: dict[str, nn.Module]
    selected: set[str]


def _prepare(model: nn.Module, cfg: FixedPointConfig) -> _Prepared:
    """Find the network, refuse a quantized one, fold batch norms, trace, select the weight layers."""
    path, net = resolve_network(model, cfg.network)
    if isinstance(net, FixedPointNetwork) or find_fixed_point_network(net) is not None:
        msg = f"{cfg.method}: the network is already fixed-point quantized"
        raise ConfigError(msg)
    folded = fold_batchnorm(net) if cfg.fold_batchnorm else []
    gm = trace(net)
    modules = dict(net.named_modules())
    selected = {
        n
        for n, m in modules.items()
        if isinstance(m, WEIGHT_LAYERS)
        and any(fnmatch.fnmatchcase(n, p) for p in cfg.include)
        and not any(fnmatch.fnmatchcase(n, p) for p in cfg.exclude)
    }
    return _Prepared(path, net, folded, gm, modules, selected)


def _spec(cfg: FixedPointConfig, name: str, field: str) -> FixedSpec:
    spec: FixedSpec = match_override(cfg, name, field) or getattr(cfg, field)
    return spec


def _param_type(cfg: FixedPointConfig, name: str, alpha: float) -> FixedType:
    """The type of a LeakyReLU slope (hls4ml's ``param_t``)."""
    return _spec(cfg, name, "param").build(min(alpha, 0.0), max(alpha, 0.0), alpha < 0, f"{name}.param")


class _TypeWalk:
    """Walks the traced graph once: the fixed-point type of every node and the record of every layer.

    A node typed ``None`` holds float values (an excluded layer, or a shape query), so
    layers after it cannot be typed exactly.
    """

    def __init__(self, cfg: FixedPointConfig, prep: _Prepared, ranges: dict[str, list[float]], input_t: FixedType) -> None:
        self.cfg = cfg
        self.prep = prep
        self.ranges = ranges
        self.input_t = input_t
        self.types: dict[Any, FixedType | None] = {}
        self.layers: dict[str, dict[str, Any]] = {}
        self.records: list[LayerRecord] = []
        self.placeholders: list[str] = []
        self.alias: dict[Any, Any] = {}  # Identity (folded BatchNorm) -> its input

    def run(self) -> _TypeWalk:
        for node in self.prep.gm.graph.nodes:
            self._node(node)
        return self

    def _range(self, name: str) -> list[Any]:
        return self.ranges.get(name, [None, None])

    def _node(self, node: torch.fx.Node) -> None:
        if node.op == "placeholder":
            self.types[node] = self.input_t
            self.placeholders.append(node.name)
        elif node.op == "call_function" and node.target in (torch.cat, torch.concat):
            srcs: Any = node.args[0]
            t: Any = self.types[srcs[0]]  # None (float values) fails in union(), as it always did
            for s in srcs[1:]:
                t = t.union(self.types[s])
            self.types[node] = t
        elif node.op == "call_module":
            self._module(node)
        elif node.op == "call_function" and node.target in FUNCTIONAL_RELU:
            x_t = self.types.get(node.args[0])
            self.types[node] = x_t  # relu of an on-grid value is on the grid: lossless in the same type
            if x_t is not None:
                self.layers[node.name] = {"kind": "ReLU", "functional": True, "result": x_t.to_dict()}
        elif functional_kind(node) is not None:
            self._functional(node)
        elif is_shape_op(node):
            src = node.args[0] if node.args else None
            self.types[node] = self.types.get(src) if isinstance(src, torch.fx.Node) else None
        elif (node.op == "call_function" and node.target is getattr
              or node.op == "call_method" and node.target in ("size", "dim")):
            self.types[node] = None  # shape queries (x.shape, x.size(0)): not tensors
        elif node.op == "output":
            return
        elif node.op == "call_function":
            msg = (
                f"{node.name}: function {getattr(node.target, '__name__', node.target)!s} is not supported by "
                f"fixed-point quantization; supported: {_UNSUPPORTED_FUNCTION}"
            )
            raise UnsupportedLayerError(msg)
        else:
            msg = f"{node.name}: graph operation {node.op!r} is not supported"
            raise UnsupportedLayerError(msg)

    def _module(self, node: torch.fx.Node) -> None:
        mod = self.prep.modules[str(node.target)]
        name = str(node.target)
        src = node.args[0] if node.args else None
        if isinstance(mod, nn.Identity):
            self.types[node] = self.types.get(src, self.input_t)
            self.alias[node] = self.alias.get(src, src)
        elif isinstance(mod, WEIGHT_LAYERS):
            self._weight_layer(node, name, mod, src)
        elif isinstance(mod, ACTIVATION_MODULES):
            self._activation_module(node, name, mod, src)
        elif isinstance(mod, SHAPE_MODULES) or (isinstance(mod, nn.Upsample) and mod.mode == "nearest"):
            self.types[node] = self.types.get(src)  # moves values, keeps them on the grid
        else:
            why = (" (a batch norm is folded only directly after a Linear/convolution it follows alone)"
                   if isinstance(mod, BATCHNORMS) else "")
            msg = (f"{name}: {type(mod).__name__} is not supported by fixed-point quantization{why}; supported: "
                   f"{_UNSUPPORTED_MODULE}")
            raise UnsupportedLayerError(msg)

    def _weight_layer(self, node: torch.fx.Node, name: str, mod: Any, src: Any) -> None:
        cfg = self.cfg
        if name not in self.prep.selected:
            self.types[node] = None  # float layer: later layers cannot be typed exactly
            return
        x_t = self.types.get(src)
        if x_t is None:
            msg = f"{cfg.method}: layer {name!r} follows an unquantized layer; include every Linear"
            raise ConfigError(msg)
        w = mod.weight.detach().double()
        w_t = _spec(cfg, name, "weight").build(float(w.min()), float(w.max()), True, f"{name}.weight")
        w_int = w_t.quantize_int(w.numpy())
        if isinstance(mod, CONV_T):  # (in, out/g, k...) -> rows of output channels
            w_int = np.moveaxis(w_int, 1, 0)
        w_int = w_int.reshape(w_int.shape[0], -1)
        b_t: FixedType | None = None
        b_int = None
        if mod.bias is not None:
            b = mod.bias.detach().double()
            b_t = _spec(cfg, name, "bias").build(float(b.min()), float(b.max()), True, f"{name}.bias")
            b_int = b_t.quantize_int(b.numpy())
        acc_t = exact_accumulator(x_t, w_int, w_t, b_int, b_t or w_t)
        rr = self._range(name)
        res_t = _spec(cfg, name, "result").build(rr[0], rr[1], True, f"{name}.result")
        linear = isinstance(mod, nn.Linear)
        # a parametrized module's class is a generated subclass (e.g. ParametrizedConvTranspose2d)
        kind = next((cls.__name__ for cls in WEIGHT_LAYERS if isinstance(mod, cls)), "Linear")
        self.layers[name] = {
            "kind": kind,
            "weight": w_t.to_dict(),
            "bias": b_t.to_dict() if b_t else None,
            "accum": acc_t.to_dict(),
            "result": res_t.to_dict(),
            "activation": None,
            "activation_layer": None,
            "n_in": mod.in_features if linear else mod.in_channels,
            "n_out": mod.out_features if linear else mod.out_channels,
        }
        self.types[node] = res_t
        n_par = mod.weight.numel() + (mod.bias.numel() if mod.bias is not None else 0)
        bits_after = mod.weight.numel() * w_t.width + (mod.bias.numel() * b_t.width if b_t else 0)
        self.records.append(
            LayerRecord(name, kind, n_par, n_par, 32 * n_par, bits_after,
                        {"weight": w_t.to_hls(), "bias": b_t.to_hls() if b_t else None,
                         "accum": acc_t.to_hls(), "result": res_t.to_hls()})
        )

    def _activation_module(self, node: torch.fx.Node, name: str, mod: nn.Module, src: Any) -> None:
        if self.types.get(src) is None:
            self.types[node] = None
            return
        unsigned = isinstance(mod, (nn.ReLU, nn.Sigmoid))
        rr = self._range(name)
        act_t = _spec(self.cfg, name, "activation").build(rr[0], rr[1], not unsigned, f"{name}.activation")
        entry: dict[str, Any] = {"kind": type(mod).__name__, "result": act_t.to_dict()}
        if isinstance(mod, nn.LeakyReLU):
            alpha = float(mod.negative_slope)
            entry["param"] = _param_type(self.cfg, name, alpha).to_dict()
            entry["alpha"] = alpha
        self.layers[name] = entry
        self.types[node] = act_t
        src = self.alias.get(src, src)
        if hasattr(src, "op") and src.op == "call_module" and str(src.target) in self.layers:
            self.layers[str(src.target)]["activation"] = act_t.to_dict()
            self.layers[str(src.target)]["activation_layer"] = name

    def _functional(self, node: torch.fx.Node) -> None:
        kind = functional_kind(node)
        if self.types.get(node.args[0]) is None:
            self.types[node] = None
            return
        rr = self._range(node.name)
        act_t = _spec(self.cfg, node.name, "activation").build(rr[0], rr[1], kind != "Sigmoid",
                                                                 f"{node.name}.activation")
        entry: dict[str, Any] = {"kind": kind, "functional": True, "result": act_t.to_dict()}
        if kind == "LeakyReLU":
            slope: Any = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
            alpha = float(slope)
            entry["param"] = _param_type(self.cfg, node.name, alpha).to_dict()
            entry["alpha"] = alpha
        self.layers[node.name] = entry
        self.types[node] = act_t


def _wrap(model: nn.Module, prep: _Prepared, record: PrecisionRecord, ste: bool) -> nn.Module:
    """The model with its network replaced by the :class:`FixedPointNetwork` (in place)."""
    wrapped = FixedPointNetwork(prep.net, record, ste=ste)
    if prep.path == "":
        return wrapped
    set_submodule(model, prep.path, wrapped)
    return model


def _apply(model: nn.Module, cfg: FixedPointConfig, calibration: Any, ste: bool) -> CompressionResult:
    prep = _prepare(model, cfg)
    inputs = calibration_inputs(model, prep.net, cfg, calibration)
    ranges = observe_ranges(prep.gm, prep.modules, prep.selected, inputs) if inputs is not None else {}
    in_r = ranges.get(INPUT_RANGE, [None, None])
    input_t = cfg.input.build(in_r[0], in_r[1], True, f"{cfg.method}.input")
    walk = _TypeWalk(cfg, prep, ranges, input_t).run()
    record = PrecisionRecord.from_dict({
        "format_version": PRECISION_FORMAT_VERSION,
        "method": cfg.method,
        "network": prep.path,
        "inputs": walk.placeholders,
        "input_sizes": [int(t.shape[-1]) for t in inputs] if inputs is not None else None,
        "input": input_t.to_dict(),
        "layers": walk.layers,
        "folded_batchnorm": prep.folded,
    })
    out_model = _wrap(model, prep, record, ste)
    return CompressionResult(out_model, cfg, tuple(walk.records), extra={"precision": record.to_dict()})


@register_method(FixedPointConfig)
def fixed_point(model: nn.Module, config: FixedPointConfig, calibration: Sequence[torch.Tensor] | None = None,
                **_: Any) -> CompressionResult:
    """Post-training fixed-point quantization (frozen, on-grid weights)."""
    return _apply(model, config, calibration, ste=False)


@register_method(QATFixedPointConfig)
def qat_fixed_point(model: nn.Module, config: QATFixedPointConfig, calibration: Sequence[torch.Tensor] | None = None,
                    **_: Any) -> CompressionResult:
    """Fixed-point fake quantization with straight-through gradients (train it in the pipeline's fine-tuning)."""
    return _apply(model, config, calibration, ste=True)
