"""Structured pruning: remove whole neurons/channels and physically shrink the next layer.

Dependencies come from a ``torch.fx`` trace: a producer layer (Linear,
Conv1d/2d/3d or ConvTranspose1d/2d/3d) can lose output units (neurons,
channels) only when its output flows, through element-wise operations
(modules or functions), per-channel batch norms of the same dimension,
nearest upsampling and spatial crops, into exactly one consumer layer
(Linear -> Linear; a convolution or transposed convolution -> either kind of
the same dimension). Channels are followed through reshapes where the
mapping is well defined: ``flatten(1)`` from a convolution into a Linear (each
channel is a block of the Linear's inputs) and ``view(N, -1, *spatial)`` from a
Linear into a convolution (each channel is a block of the Linear's outputs).
A reshape that writes the channel count into the forward code
(``view(-1, 64, 2, 3)``) is refused, because the pruned network would no
longer fit it; so are residual additions, concatenations, channel crops,
several consumers and a layer called twice: each raises
:class:`~simcompress.errors.UnsupportedLayerError` naming the layer and the
blocking operation. A producer whose output is the traced module's output is
not pruned (its width is part of the interface) and is recorded as kept.

Removed units with all-zero incoming weights are constant (``act(bias)``);
for Linear consumers their constant contribution is folded into the
consumer's bias, so removing dead neurons is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, fx, nn
from torch.nn.utils import parametrize

from ...errors import UnsupportedLayerError
from ..base import CompressionResult, MethodConfig, register_method
from ..modules import Layer, TTLinear, base_type
from ..parametrizations import ActQuant, Mask, clone_model
from ._common import ALL_LAYER_TYPES, LAYER_TYPES, record, skipped_subclasses, targets, types_from_names

__all__ = ["StructuredPruneConfig", "find_chain", "structured_prune"]

ELEMENTWISE_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Dropout,
    nn.Identity, nn.Hardtanh, nn.ReLU6, nn.Mish, nn.CELU, nn.SELU, nn.Softsign, nn.Tanhshrink,
)
ELEMENTWISE_FUNCS = {
    F.relu, torch.relu, F.leaky_relu, torch.tanh, F.tanh, torch.sigmoid, F.sigmoid, F.gelu, F.silu, F.elu,
    F.softplus, F.dropout, F.hardtanh, F.relu6, F.mish, F.selu, F.celu,
}
ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid"}
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCHNORM_BY_DIM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
SHAPE_METHODS = {"view", "reshape"}


def _nd(t: type) -> int:
    """0 for Linear, the spatial dimension for (transposed) convolutions."""
    if t is nn.Linear:
        return 0
    return (CONVS + CONV_TS).index(t) % 3 + 1


def _out_axis(mod: nn.Module) -> int:
    return 1 if isinstance(mod, CONV_TS) else 0


def _in_axis(mod: nn.Module) -> int:
    return 0 if isinstance(mod, CONV_TS) else 1


class StructuredPruneConfig(MethodConfig):
    """Remove ``amount`` of the output units (neurons/channels) of each selected layer.

    Importance of unit ``j``: ``l2`` / ``l1`` norm of its incoming weights, or
    ``l2_product`` (incoming L2 norm times outgoing L2 norm in the consumer, so
    units nobody listens to go first). The kept count is rounded up to a
    multiple of ``round_to`` and is at least ``min_keep``. A selected layer whose
    dependencies cannot be shrunk exactly raises UnsupportedLayerError
    (``on_unsupported="error"``) or is kept unchanged with the reason in its record
    (``"keep"``, for recipes meant to run on several architectures).
    """

    method: ClassVar[str] = "structured_prune"
    amount: float = Field(0.5, ge=0.0, lt=1.0)
    criterion: Literal["l2", "l1", "l2_product"] = "l2_product"
    round_to: int = Field(1, ge=1)
    min_keep: int = Field(1, ge=1)
    types: tuple[str, ...] = ALL_LAYER_TYPES
    on_unsupported: Literal["error", "keep"] = "error"


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (TTLinear, ActQuant)) or parametrize.is_parametrized(m):
            return True
        return super().is_leaf_module(m, qualname)


@dataclass
class Chain:
    producer: str
    between: list[fx.Node]
    consumer: str | None  # None: output layer, kept
    graph_prefix: str
    group_out: int = 1  # producer output units per pruned unit (Linear -> view -> conv: prod(spatial))
    group_in: int = 1  # consumer input units per pruned unit (conv -> flatten -> Linear: prod(spatial))


def _graphs(module: nn.Module, prefix: str) -> list[tuple[str, fx.Graph, nn.Module]]:
    if isinstance(module, ELEMENTWISE_MODULES) or not list(module.children()):
        return []
    try:
        graph = _Tracer().trace(module)
    except Exception:
        out = []
        for cname, child in module.named_children():
            out += _graphs(child, f"{prefix}{cname}.")
        return out
    return [(prefix, graph, module)]


def _view_channels(node: fx.Node, units: int, producer: str) -> int:
    """Block size of ``view/reshape(N, -1, *spatial)`` of a Linear output with ``units`` features."""
    shape = list(node.args[1:])
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = list(shape[0])
    if len(shape) < 3:
        msg = f"structured_prune: {node.name} reshapes to {shape}; only (N, channels, *spatial) can be followed"
        raise UnsupportedLayerError(msg)
    ch, spatial = shape[1], shape[2:]
    if not all(isinstance(v, int) and v > 0 for v in spatial):
        msg = f"structured_prune: {node.name} reshapes to spatial size {spatial}, not known at trace time"
        raise UnsupportedLayerError(msg)
    if ch != -1:
        msg = (
            f"structured_prune: output of {producer!r} reaches {node.name}, which reshapes to {shape} with the channel count {ch} "
            "written into the forward code; "
            "the pruned network would not fit it (reshape with -1 for the channels, e.g. view(x.shape[0], -1, *spatial), to allow it)"
        )
        raise UnsupportedLayerError(
            msg)
    block = math.prod(int(v) for v in spatial if isinstance(v, int))  # all ints: checked above
    if units % block:
        msg = f"structured_prune: {node.name}: {units} features do not split into blocks of {block}"
        raise UnsupportedLayerError(msg)
    return block


def find_chain(root: nn.Module, graphs: list[tuple[str, fx.Graph, nn.Module]], name: str) -> Chain:
    """The dependency chain of producer ``name`` (full dotted name in ``root``)."""
    import operator

    for prefix, graph, sub in graphs:
        if not name.startswith(prefix):
            continue
        local = name[len(prefix):]
        nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == local]
        if not nodes:
            continue
        if len(nodes) > 1:
            msg = f"structured_prune: layer {name!r} is called {len(nodes)} times; cannot shrink a shared layer"
            raise UnsupportedLayerError(msg)
        prod: Layer = sub.get_submodule(local)
        nd = _nd(base_type(prod))  # dimension of the tensor flowing now (0: features)
        group_out, flattened = 1, False
        cur = nodes[0]
        between: list[fx.Node] = []
        while True:
            users = list(cur.users)
            if len(users) != 1:
                msg = (
                    f"structured_prune: output of {name!r} (via {cur.name}) feeds {len(users)} operations "
                    f"({', '.join(str(u.target) for u in users)}); only a single chain into one layer can be shrunk"
                )
                raise UnsupportedLayerError(
                    msg
                )
            u = users[0]
            if u.op == "output":
                return Chain(name, between, None, prefix)
            if u.op == "call_module":
                m: Layer = sub.get_submodule(str(u.target))
                mt = base_type(m)
                if isinstance(m, ELEMENTWISE_MODULES) and not (isinstance(m, nn.PReLU)) or mt in (BATCHNORM_BY_DIM.get(nd), nn.BatchNorm1d if nd == 0 else None) and mt is not None and not flattened or isinstance(m, nn.Upsample) and m.mode == "nearest" and nd > 0:
                    between.append(u)
                elif mt in (nn.Linear, *CONVS, *CONV_TS) and (_nd(mt) == nd or (flattened and mt is nn.Linear)):
                    if getattr(m, "groups", 1) != 1:
                        msg = f"structured_prune: consumer {prefix + u.target!r} of {name!r} is a grouped convolution"
                        raise UnsupportedLayerError(msg)
                    group_in = 1
                    if flattened:
                        units = _units(prod)
                        if m.in_features % units:
                            msg = (
                                f"structured_prune: {prefix + u.target!r} takes {m.in_features} inputs, "
                                                        f"not a multiple of the {units} channels of {name!r}"
                            )
                            raise UnsupportedLayerError(msg)
                        group_in = m.in_features // units
                    return Chain(name, between, prefix + u.target, prefix, group_out, group_in)
                elif isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1 and nd > 0:
                    between.append(u)
                    flattened, nd = True, 0
                else:
                    want = "a Linear" if nd == 0 else f"a {nd}-d (transposed) convolution"
                    msg = (
                        f"structured_prune: output of {name!r} flows into {prefix + u.target!r} ({mt.__name__}); "
                        f"supported in between: element-wise activations, batch norm, nearest upsampling, crops, then {want}"
                    )
                    raise UnsupportedLayerError(
                        msg
                    )
            elif (u.op == "call_function" and u.target in ELEMENTWISE_FUNCS) or (u.op == "call_method" and u.target in ELEMENTWISE_METHODS):
                if any(isinstance(a, fx.Node) and a is not cur for a in list(u.args) + list(u.kwargs.values())):
                    msg = f"structured_prune: output of {name!r} meets another tensor in {u.target}"
                    raise UnsupportedLayerError(msg)
                between.append(u)
            elif u.op == "call_method" and u.target in SHAPE_METHODS and nd == 0 and not flattened and group_out == 1:
                group_out = _view_channels(u, _units(prod), name)
                nd = len(u.args) - 3 if not isinstance(u.args[1], (tuple, list)) else len(u.args[1]) - 2
                between.append(u)
            elif ((u.op == "call_method" and u.target == "flatten") or (u.op == "call_function" and u.target is torch.flatten)) and nd > 0:
                start = u.args[1] if len(u.args) > 1 else u.kwargs.get("start_dim", 0)
                end_dim = u.args[2] if len(u.args) > 2 else u.kwargs.get("end_dim", -1)
                if start != 1 or end_dim != -1:
                    msg = f"structured_prune: {u.name} flattens dims {start}..{end_dim}; only flatten(1) can be followed"
                    raise UnsupportedLayerError(msg)
                between.append(u)
                flattened, nd = True, 0
            elif u.op == "call_function" and u.target is operator.getitem and nd > 0:
                idx = u.args[1] if isinstance(u.args[1], tuple) else (u.args[1],)
                if Ellipsis in idx or any(not isinstance(i, slice) for i in idx) or (len(idx) > 1 and idx[1] != slice(None)) or idx[0] != slice(None):
                    msg = f"structured_prune: {u.name} indexes {idx}; only spatial crops (x[:, :, a:b, ...]) keep the channels"
                    raise UnsupportedLayerError(msg)
                between.append(u)
            elif u.op == "call_function" and u.target is F.interpolate and nd > 0 and u.kwargs.get("mode", "nearest") == "nearest":
                between.append(u)
            else:
                tgt = getattr(u.target, "__name__", u.target)
                msg = (
                    f"structured_prune: output of {name!r} flows into {u.op} {tgt!r}; "
                    "only element-wise activations, batch norm, upsampling, crops and channel-preserving reshapes may sit between two pruned layers"
                )
                raise UnsupportedLayerError(
                    msg
                )
            cur = u
    msg = f"structured_prune: cannot trace the model around layer {name!r} (torch.fx failed on every enclosing module)"
    raise UnsupportedLayerError(msg)


def _replay(chain: Chain, sub: nn.Module, x: Tensor, prev: fx.Node) -> Tensor:
    for node in chain.between:
        if node.op == "call_module":
            x = sub.get_submodule(str(node.target))(x)
        elif node.op == "call_function":
            args = [x if a is prev else a for a in node.args]
            x = cast(Callable[..., Tensor], node.target)(*args, **node.kwargs)
        else:
            x = getattr(x, str(node.target))(*list(node.args[1:]), **node.kwargs)
        prev = node
    return x


def _slice_param(module: Layer, tname: str, idx: Tensor, dim: int) -> None:
    """Keep ``idx`` along ``dim`` of ``module.<tname>``, its original and its masks."""
    if parametrize.is_parametrized(module, tname):
        plist = module.parametrizations[tname]
        for p in plist:
            if not isinstance(p, Mask):
                msg = (
                    f"structured_prune: layer carries a {type(p).__name__} parametrization on {tname!r}; "
                    "run structured pruning before quantization/LoRA (masks are fine)"
                )
                raise UnsupportedLayerError(
                    msg
                )
            p.mask = p.mask.index_select(dim, idx)
        orig = plist.original
        plist.original = nn.Parameter(orig.detach().index_select(dim, idx).clone(), requires_grad=orig.requires_grad)
    else:
        t = getattr(module, tname)
        if t is None:
            return
        new = t.detach().index_select(dim, idx).clone()
        if isinstance(t, nn.Parameter):
            setattr(module, tname, nn.Parameter(new, requires_grad=t.requires_grad))
        else:
            setattr(module, tname, new)


def _shrink_out(mod: Layer, idx: Tensor) -> None:
    _slice_param(mod, "weight", idx, _out_axis(mod))
    if mod.bias is not None:
        _slice_param(mod, "bias", idx, 0)
    if isinstance(mod, nn.Linear):
        mod.out_features = len(idx)
    else:
        mod.out_channels = len(idx)


def _shrink_bn(bn: Layer, idx: Tensor) -> None:
    for t in ("weight", "bias", "running_mean", "running_var"):
        if getattr(bn, t, None) is not None:
            _slice_param(bn, t, idx, 0)
    bn.num_features = len(idx)


def _shrink_in(mod: Layer, idx: Tensor) -> None:
    _slice_param(mod, "weight", idx, _in_axis(mod))
    if isinstance(mod, nn.Linear):
        mod.in_features = len(idx)
    else:
        mod.in_channels = len(idx)


@register_method(StructuredPruneConfig)
def structured_prune(model: nn.Module, config: StructuredPruneConfig, **_: Any) -> CompressionResult:
    types = types_from_names(config.types, LAYER_TYPES, config.method)
    layers = targets(model, config, types)
    graphs = _graphs(model, "")
    recs = skipped_subclasses(model, config, types, "structured_prune")
    chains = []
    for name, mod in layers:  # analyse everything before changing anything
        try:
            chains.append(find_chain(model, graphs, name))
        except UnsupportedLayerError as err:
            if config.on_unsupported == "error":
                raise
            recs.append(record(name, "structured_prune", mod, mod, kept=True, note=str(err)))
    for chain in chains:
        prod: Layer = model.get_submodule(chain.producer)
        if chain.consumer is None:
            recs.append(record(chain.producer, "structured_prune", prod, prod, kept_units=_units(prod), removed_units=0,
                               note="output feeds the traced module's output; width kept"))
            continue
        cons: Layer = model.get_submodule(chain.consumer)
        before = nn.ModuleDict({"p": clone_model(prod), "c": clone_model(cons)})
        with torch.no_grad():
            n = _units(prod) // chain.group_out  # prunable units (channels after a reshape)
            w_in = prod.weight.detach().to(torch.float64).movedim(_out_axis(prod), 0).reshape(n, -1)
            w_out = cons.weight.detach().to(torch.float64).movedim(_in_axis(cons), 0).reshape(n, -1)
            if config.criterion == "l1":
                score = w_in.abs().sum(1)
            elif config.criterion == "l2":
                score = w_in.norm(dim=1)
            else:
                score = w_in.norm(dim=1) * w_out.norm(dim=1)
            keep_n = max(config.min_keep, n - math.floor(config.amount * n))
            keep_n = min(n, int(math.ceil(keep_n / config.round_to) * config.round_to))
            order = torch.argsort(score, descending=True, stable=True)
            idx = torch.sort(order[:keep_n]).values
            removed = torch.sort(order[keep_n:]).values
            folded = 0
            plain = chain.group_out == 1 and chain.group_in == 1
            if isinstance(cons, nn.Linear) and plain and len(removed):
                dead = removed[(w_in[removed].abs().sum(1) == 0)]
                if len(dead):
                    prefix, sub = chain.graph_prefix, _graph_module(model, chain.graph_prefix)
                    bias = prod.bias.detach() if prod.bias is not None else torch.zeros(n, dtype=prod.weight.dtype)
                    was_training = sub.training
                    sub.eval()
                    const = _replay(chain, sub, bias.reshape(1, n), _producer_node(chain, prefix))[0]
                    sub.train(was_training)
                    contrib = cons.weight.detach()[:, dead] @ const[dead].to(cons.weight.dtype)
                    if bool(contrib.abs().sum() > 0):
                        if cons.bias is None:
                            cons.bias = nn.Parameter(torch.zeros(cons.out_features, dtype=cons.weight.dtype))
                        cons.bias.add_(contrib)
                        folded = len(dead)
            out_idx = _blocks(idx, chain.group_out)
            _shrink_out(prod, out_idx)
            reshaped = False
            for node in chain.between:
                if node.op == "call_method" and node.target in SHAPE_METHODS:
                    reshaped = True
                if node.op == "call_module":
                    m = model.get_submodule(chain.graph_prefix + str(node.target))
                    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                        _shrink_bn(m, idx if reshaped or chain.group_out == 1 else out_idx)
            _shrink_in(cons, _blocks(idx, chain.group_in))
        after = nn.ModuleDict({"p": prod, "c": cons})
        recs.append(record(chain.producer, "structured_prune", before, after, kept_units=int(keep_n),
                           removed_units=int(n - keep_n), consumer=chain.consumer, folded_dead_units=folded))
    return CompressionResult(model, config, tuple(recs))


def _blocks(idx: Tensor, size: int) -> Tensor:
    """Unit indices -> indices of their consecutive blocks of ``size`` features."""
    if size == 1:
        return idx
    return (idx[:, None] * size + torch.arange(size)).reshape(-1)


def _units(mod: Layer) -> int:
    return mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels


def _graph_module(model: nn.Module, prefix: str) -> nn.Module:
    return model.get_submodule(prefix[:-1]) if prefix else model


def _producer_node(chain: Chain, prefix: str) -> fx.Node:
    first = chain.between[0] if chain.between else None
    if first is None:
        return None  # type: ignore[return-value]
    return first.args[0]  # type: ignore[return-value]
