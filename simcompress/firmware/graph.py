"""The fixed-point graph of a quantized network and its bit-exact integer emulation.

:func:`build_graph` turns a network and its precision record
(:class:`~simcompress.compress.fixed_point.record.PrecisionRecord`: the types of every layer)
into a :class:`FixedGraph`: a
topologically ordered list of :class:`Op` with integer weight codes and the
fixed-point type of every tensor. :meth:`FixedGraph.emulate` runs it in exact
integer arithmetic (numpy int64; Python ints for accumulators wider than 62 bits),
exactly as the hls4ml ``io_parallel`` C++ computes:

* inputs are cast to the input type (``input_t x = float``);
* ``cat`` casts each input to the concatenation type;
* ``Dense``: ``acc = bias + sum_j w_j * x_j`` in an accumulator wide enough to be
  exact (so the order of summation, i.e. the reuse factor and strategy, does not
  matter), then ``result_t y = acc``;
* ``ReLU``: ``res_t y = x > 0 ? x : 0``; ``LeakyReLU``: ``res_t y = x > 0 ? x : param_t(alpha) * x``.

Layers whose hls4ml implementation is a lookup table (Tanh, Sigmoid, ELU, Softmax)
are refused in the bit-exact path, as are the patterns that hls4ml 1.3.0 cannot
convert or converts to wrong numbers (see :func:`check_supported`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..compress.fixed_point.record import PrecisionRecord, find_precision_network
from ..compress.fixed_point.types import FixedType, exact_accumulator
from ..errors import BundleError, UnsupportedLayerError

__all__ = ["SUPPORTED", "FixedGraph", "Op", "build_graph", "check_supported", "clean_float_network"]

SUPPORTED = "Linear, BatchNorm1d after a Linear (folded), ReLU, LeakyReLU, torch.cat of the inputs"

#: layer types refused before conversion, with the supported alternative
_REFUSED: dict[type[nn.Module], str] = {
    nn.ConvTranspose1d: "hls4ml 1.3.0 has no ConvTranspose; use Upsample followed by Conv1d",
    nn.ConvTranspose2d: "hls4ml 1.3.0 has no ConvTranspose; use Upsample followed by Conv2d",
    nn.Softplus: "hls4ml 1.3.0 has no Softplus; use ReLU (or apply softplus in postprocess())",
    nn.SiLU: "hls4ml 1.3.0 has no SiLU module; use ReLU or LeakyReLU",
    nn.GELU: "hls4ml 1.3.0 has no GELU; use ReLU or LeakyReLU",
    nn.LayerNorm: "hls4ml 1.3.0 LayerNorm needs 3-D inputs; use BatchNorm1d after a Linear (folded)",
    nn.Tanh: "hls4ml implements Tanh with a lookup table the bit-exact path does not reproduce; use ReLU/LeakyReLU "
    "in the network and apply tanh in postprocess()",
    nn.Sigmoid: "hls4ml implements Sigmoid with a lookup table the bit-exact path does not reproduce; use "
    "ReLU/LeakyReLU and apply sigmoid in postprocess()",
    nn.ELU: "hls4ml implements ELU with a lookup table the bit-exact path does not reproduce; use LeakyReLU",
    nn.Softmax: "hls4ml Softmax uses lookup tables (inexact); apply it in postprocess()",
    nn.Conv1d: "the bit-exact fixed-point path supports feed-forward (Linear) networks only; use Linear layers",
    nn.Conv2d: "the bit-exact fixed-point path supports feed-forward (Linear) networks only; use Linear layers",
}


@dataclass
class Op:
    """One node of the fixed-point graph (``kind`` in input, cat, linear, relu, leaky_relu)."""

    kind: str
    name: str
    srcs: list[str]
    out_t: FixedType
    n_out: int
    index: int = 0  # input position for kind == "input"
    w_int: np.ndarray | None = None  # (out, in) integer codes
    b_int: np.ndarray | None = None
    w_t: FixedType | None = None
    b_t: FixedType | None = None
    acc_t: FixedType | None = None
    acc_record: FixedType | None = None
    alpha_int: int = 0
    param_t: FixedType | None = None
    alpha: float = 0.0
    module: str = ""


@dataclass
class FixedGraph:
    """Topologically ordered fixed-point ops; ``inputs`` are placeholder names, ``output`` the last op."""

    ops: list[Op]
    inputs: list[str]
    input_sizes: list[int]
    output: str
    record: PrecisionRecord | None = field(default=None)

    def op(self, name: str) -> Op:
        for o in self.ops:
            if o.name == name:
                return o
        raise KeyError(name)

    @property
    def linear_ops(self) -> list[Op]:
        return [o for o in self.ops if o.kind == "linear"]

    @property
    def output_type(self) -> FixedType:
        return self.op(self.output).out_t

    def quantize_inputs(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Inputs put on the input grid (float64), ready for hls4ml ``predict``."""
        out = []
        for name, x in zip(self.inputs, inputs, strict=False):
            t = self.op(name).out_t
            out.append(np.ldexp(t.quantize_int(x).astype(np.float64), -t.frac))
        return out

    def emulate_int(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Integer codes of the output (int64, units of ``2**-output_type.frac``)."""
        if len(inputs) != len(self.inputs):
            msg = f"the network takes {len(self.inputs)} inputs ({', '.join(self.inputs)}), got {len(inputs)}"
            raise ValueError(msg)
        vals: dict[str, np.ndarray] = {}
        types: dict[str, FixedType] = {}
        for op in self.ops:
            if op.kind == "input":
                x = np.asarray(inputs[op.index], dtype=np.float64)
                if x.ndim != 2 or x.shape[1] != op.n_out:
                    msg = f"input {op.name!r}: expected shape (N, {op.n_out}), got {x.shape}"
                    raise ValueError(msg)
                vals[op.name] = op.out_t.quantize_int(x)
            elif op.kind == "cat":
                parts = [op.out_t.requantize(vals[s], types[s].frac) for s in op.srcs]
                vals[op.name] = np.concatenate(parts, axis=1)
            elif op.kind == "linear":
                x = vals[op.srcs[0]]
                fx = types[op.srcs[0]].frac
                assert op.w_int is not None and op.w_t is not None and op.acc_t is not None
                fp = fx + op.w_t.frac
                fa = op.acc_t.frac
                if op.acc_t.width <= 62 and (op.b_t is None or fa - op.b_t.frac >= 0) and fa - fp >= 0:
                    acc = (x @ op.w_int.T) << np.int64(fa - fp)
                    if op.b_int is not None and op.b_t is not None:
                        acc = acc + (op.b_int << np.int64(fa - op.b_t.frac))[None, :]
                else:  # very wide: exact Python integers
                    acc = (x.astype(object) @ op.w_int.T.astype(object)) * (1 << (fa - fp))
                    if op.b_int is not None and op.b_t is not None:
                        acc = acc + (op.b_int.astype(object) * (1 << (fa - op.b_t.frac)))[None, :]
                vals[op.name] = op.out_t.requantize(acc, fa)
            elif op.kind == "relu":
                x = vals[op.srcs[0]]
                vals[op.name] = op.out_t.requantize(np.maximum(x, 0), types[op.srcs[0]].frac)
            elif op.kind == "leaky_relu":
                x = vals[op.srcs[0]]
                fx = types[op.srcs[0]].frac
                assert op.param_t is not None
                pos = op.out_t.requantize(x, fx)
                negv = op.out_t.requantize(x * np.int64(op.alpha_int), fx + op.param_t.frac)
                vals[op.name] = np.where(x > 0, pos, negv)
            else:  # pragma: no cover - build_graph only creates the kinds above
                msg = f"{op.name}: unknown op kind {op.kind!r}"
                raise UnsupportedLayerError(msg)
            types[op.name] = op.out_t
        return vals[self.output]

    def emulate(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Output values (float64, exact) of the fixed-point network."""
        return np.ldexp(self.emulate_int(inputs).astype(np.float64), -self.output_type.frac)


def check_supported(net: nn.Module) -> None:
    """Refuse layers and patterns the bit-exact firmware path cannot handle, naming layer and alternative."""
    for name, mod in net.named_modules():
        own = type(mod).__bases__[0] if parametrize.is_parametrized(mod) else type(mod)  # ParametrizedX -> X
        for cls, why in _REFUSED.items():
            if own is cls:
                msg = f"layer {name!r} ({cls.__name__}) is not supported: {why}"
                raise UnsupportedLayerError(msg)
    gm = _trace(net)
    modules = dict(net.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_method" and node.target in ("view", "reshape", "unflatten"):
            users = [u for u in node.users if u.op == "call_module"]
            if any(isinstance(modules.get(u.target), (nn.Conv1d, nn.Conv2d)) for u in users):
                msg = (
                    f"pattern Linear -> {node.target} -> Conv at {node.name!r} converts to wrong numbers in hls4ml "
                    "1.3.0 (channels-last layout); use Linear layers only, or Upsample + Conv without the reshape"
                )
                raise UnsupportedLayerError(
                    msg
                )
            msg = f"{node.name}: tensor method .{node.target}() is not supported in the bit-exact path; supported: {SUPPORTED}"
            raise UnsupportedLayerError(
                msg
            )
        if node.op == "call_method":
            msg = f"{node.name}: tensor method .{node.target}() is not supported; supported: {SUPPORTED}"
            raise UnsupportedLayerError(msg)


def _trace(net: nn.Module) -> Any:
    import torch.fx

    try:
        return torch.fx.symbolic_trace(net)
    except Exception as err:
        msg = f"{type(net).__name__}: torch.fx cannot trace the network ({err}); firmware needs a static graph of {SUPPORTED}"
        raise UnsupportedLayerError(
            msg
        ) from None


def clear_hooks(mod: nn.Module) -> None:
    """Remove every forward (pre-)hook of ``mod`` (not of its children)."""
    for attr in ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                 "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs"):
        d = getattr(mod, attr, None)
        if d is not None:
            d.clear()


def _strip(net: nn.Module, original: bool = False) -> nn.Module:
    """Deep copy with parametrizations baked in (leave_parametrized) and no forward hooks.

    With ``original=True`` the pre-quantization tensors (``parametrizations.<name>.original``)
    are kept instead: the float reference of a quantized network.
    """

    def value(mod: nn.Module, tname: str) -> torch.Tensor:
        params: Any = getattr(mod, "parametrizations", None)
        if original and params is not None and tname in params:
            return getattr(params, tname).original
        return getattr(mod, tname)

    clean = copy.deepcopy(net)
    # never remove_parametrizations() on a deep copy: torch deletes the property from the
    # dynamically created class, which the original module shares; build fresh Linears instead
    for name, mod in list(clean.named_modules()):
        if parametrize.is_parametrized(mod):
            if not isinstance(mod, nn.Linear):
                msg = f"layer {name!r}: parametrized {type(mod).__name__} is not supported"
                raise UnsupportedLayerError(msg)
            fresh = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
            with torch.no_grad():
                fresh.weight.copy_(value(mod, "weight"))
                if mod.bias is not None:
                    fresh.bias.copy_(value(mod, "bias"))
            parent_name, _, attr = name.rpartition(".")
            setattr(clean.get_submodule(parent_name) if parent_name else clean, attr, fresh)
    for mod in list(clean.modules()):
        clear_hooks(mod)
    return clean


def clean_float_network(graph: FixedGraph, net: nn.Module) -> nn.Module:
    """A plain float32 torch network for the hls4ml frontend: on-grid weights, BatchNorm folded away.

    Identity modules (folded BatchNorm) are removed from the traced graph, so
    hls4ml sees Linear/ReLU/LeakyReLU/cat only, with the same layer names as
    the fixed-point graph. Weight values are the exact integer codes times the LSB.
    """
    import torch.fx

    clean = _strip(net)
    modules = dict(clean.named_modules())
    for op in graph.linear_ops:
        lin = modules[op.module]
        assert op.w_int is not None and op.w_t is not None
        w = np.ldexp(op.w_int.astype(np.float64), -op.w_t.frac)
        if not np.array_equal(w.astype(np.float32).astype(np.float64), w):
            msg = f"{op.name}: weights of {op.w_t.to_hls()} are not exact in float32; use <= 24 bits"
            raise UnsupportedLayerError(msg)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w).float())
            if lin.bias is not None and op.b_int is not None and op.b_t is not None:
                lin.bias.copy_(torch.from_numpy(np.ldexp(op.b_int.astype(np.float64), -op.b_t.frac)).float())
    gm = torch.fx.symbolic_trace(clean)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.Identity):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm.eval()


def as_record(record: PrecisionRecord | dict[str, Any], source: str = "precision") -> PrecisionRecord:
    """A :class:`PrecisionRecord` from a record or its JSON form."""
    return record if isinstance(record, PrecisionRecord) else PrecisionRecord.from_dict(record, source)


def resolve(model: nn.Module, record: PrecisionRecord | dict[str, Any] | None = None) -> tuple[nn.Module, PrecisionRecord]:
    """The network and the precision record of a fixed-point model (or of ``model`` + ``record``).

    A fixed-point model holds its record next to the network
    (:func:`~simcompress.compress.fixed_point.record.find_precision_network`); a given
    ``record`` wins over it.
    """
    found = find_precision_network(model)
    if found is not None:
        _name, inner, own = found
        return inner, (as_record(record) if record else own)
    if record is None:
        msg = (
            f"{type(model).__name__}: no fixed-point precision record; quantize first with the 'fixed_point' or "
            "'qat_fixed_point' compression method (or pass precision.json)"
        )
        raise BundleError(
            msg
        )
    rec = as_record(record)
    path = rec.network or ""
    net = model.get_submodule(path) if path and not _has_all(model, rec) else model
    return net, rec


def _has_all(model: nn.Module, record: PrecisionRecord) -> bool:
    names = {n for n, _ in model.named_modules()}
    return all(k in names for k, v in record.layers.items() if not v.functional)


def build_graph(model: nn.Module, record: PrecisionRecord | dict[str, Any] | None = None,
                input_sizes: list[int] | None = None) -> FixedGraph:
    """Build the :class:`FixedGraph` of a fixed-point model (see the module docstring).

    Only the record and the plain weights are read: the network is traced for its topology,
    and the integer codes are the recorded types applied to its float weights (with any
    quantizer of the model baked in, so a quantized and a plain network give the same codes).

    Raises:
        UnsupportedLayerError: a layer or pattern outside :data:`SUPPORTED`, or a
            layer without a recorded precision.
    """
    net, record = resolve(model, record)
    check_supported(net)
    plain = _strip(net)
    gm = _trace(plain)
    modules = dict(plain.named_modules())
    weights = {k: v.detach().double().numpy() for k, v in plain.state_dict().items()}
    layers = record.layers
    input_t = record.input
    ops: list[Op] = []
    sizes: dict[str, int] = {}
    types: dict[str, FixedType] = {}
    alias: dict[str, str] = {}
    inputs: list[str] = []
    output = ""

    def src_of(node: Any) -> str:
        n = node.name
        return alias.get(n, n)

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            k = len(inputs)
            inputs.append(node.name)
            sizes_rec = input_sizes or record.input_sizes
            size = sizes_rec[k] if sizes_rec and k < len(sizes_rec) else None
            if size is None:
                size = _infer_input_size(node, modules)
            ops.append(Op("input", node.name, [], input_t, size, index=k))
            sizes[node.name] = size
            types[node.name] = input_t
        elif node.op == "call_function" and node.target in (torch.cat, torch.concat):
            srcs = [src_of(s) for s in node.args[0]]
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            if dim not in (1, -1):
                msg = f"{node.name}: torch.cat must join features (dim=1), got dim={dim}"
                raise UnsupportedLayerError(msg)
            t = types[srcs[0]]
            for s in srcs[1:]:
                t = t.union(types[s])
            t = t.replace(rounding="TRN", overflow="WRAP")  # lossless: the modes never act
            ops.append(Op("cat", node.name, srcs, t, sum(sizes[s] for s in srcs)))
            sizes[node.name], types[node.name] = sum(sizes[s] for s in srcs), t
        elif node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu):
            s = src_of(node.args[0])
            entry = layers.get(node.name)
            t = entry.result if entry is not None and entry.result is not None else types[s]
            ops.append(Op("relu", node.name, [s], t, sizes[s]))
            sizes[node.name], types[node.name] = sizes[s], t
        elif node.op == "call_module":
            name = str(node.target)
            mod = modules[name]
            s = src_of(node.args[0])
            if isinstance(mod, nn.Identity):
                alias[node.name] = s
                continue
            entry = layers.get(name)
            if entry is None or entry.result is None:
                msg = (
                    f"layer {name!r} ({type(mod).__name__}) has no fixed-point precision in the record; quantize "
                    "every layer of the network (fixed_point include/exclude)"
                )
                raise UnsupportedLayerError(
                    msg
                )
            out_t = entry.result
            if isinstance(mod, nn.Linear):
                w_t = entry.weight
                if w_t is None:
                    msg = f"precision.layers.{name}: a Linear layer needs a 'weight' type"
                    raise UnsupportedLayerError(msg)
                w_int = w_t.quantize_int(weights[f"{name}.weight"])
                b_t = b_int = None
                if mod.bias is not None and entry.bias is not None:
                    b_t = entry.bias
                    b_int = b_t.quantize_int(weights[f"{name}.bias"])
                acc_t = exact_accumulator(types[s], w_int, w_t, b_int, b_t or w_t)
                acc_rec = entry.accum
                if acc_rec is not None and acc_rec.contains(acc_t):
                    acc_t = acc_rec  # the record's accumulator is exact too: keep it
                ops.append(Op("linear", node.name, [s], out_t, mod.out_features, w_int=w_int, b_int=b_int, w_t=w_t,
                              b_t=b_t, acc_t=acc_t, acc_record=acc_rec, module=name))
                sizes[node.name] = mod.out_features
            elif isinstance(mod, nn.ReLU):
                ops.append(Op("relu", node.name, [s], out_t, sizes[s], module=name))
                sizes[node.name] = sizes[s]
            elif isinstance(mod, nn.LeakyReLU):
                p_t = entry.param
                if p_t is None:
                    msg = f"precision.layers.{name}: a LeakyReLU needs a 'param' type"
                    raise UnsupportedLayerError(msg)
                alpha = float(entry.alpha if entry.alpha is not None else mod.negative_slope)
                a_int = int(p_t.quantize_int(np.array([alpha]))[0])
                ops.append(Op("leaky_relu", node.name, [s], out_t, sizes[s], alpha_int=a_int, param_t=p_t,
                              alpha=alpha, module=name))
                sizes[node.name] = sizes[s]
            else:
                msg = f"layer {name!r} ({type(mod).__name__}) is not supported; supported: {SUPPORTED}"
                raise UnsupportedLayerError(msg)
            types[node.name] = out_t
        elif node.op == "output":
            out = node.args[0]
            if not hasattr(out, "name"):
                msg = "the network must return a single tensor"
                raise UnsupportedLayerError(msg)
            output = src_of(out)
        else:
            msg = f"{node.name}: {node.op} {getattr(node.target, '__name__', node.target)!s} is not supported; supported: {SUPPORTED}"
            raise UnsupportedLayerError(
                msg
            )
    return FixedGraph(ops, inputs, [sizes[i] for i in inputs], output, record)


def _infer_input_size(node: Any, modules: dict[str, nn.Module]) -> int:
    """Feature size of an input: from a Linear it feeds, or from its share of a cat feeding a Linear."""
    for user in node.users:
        mod = modules.get(user.target) if user.op == "call_module" else None
        if isinstance(mod, nn.Linear):
            return int(mod.in_features)
    msg = f"cannot infer the size of input {node.name!r} (it does not feed a Linear directly); pass input_sizes"
    raise UnsupportedLayerError(
        msg
    )


def input_sizes_from(model: nn.Module) -> list[int] | None:
    """Input sizes (latent_dim, n_cond) of a shower generator, if the model says them."""
    latent = getattr(model, "latent_dim", None)
    n_cond = getattr(model, "n_cond", None)
    if latent is not None and n_cond is not None:
        return [int(latent), int(n_cond)]
    return None
