"""The alkaid route: fixed-point networks hls4ml 1.3.0 cannot take -> alkaid adder graph -> Verilog.

hls4ml's PyTorch frontend has no ``ConvTranspose``, and its lookup tables for Tanh/Sigmoid are
not reproduced by the bit-exact path. alkaid 0.8 (the successor of da4ml) traces a torch.fx
graph, including transposed convolutions, into a constant-multiplier adder graph
(distributed arithmetic, no DSPs), turns unary functions into lookup tables, writes Verilog or
VHDL, and interprets the graph bit-exactly with its own C++ interpreter (no compiler needed).

:func:`build_cast_network` reads only the precision record and the plain weights: it rebuilds
the network as a torch.fx graph whose weights are the recorded integer codes times the LSB,
with a :class:`Cast` after every recorded layer (``result_t y = acc``, the record's rounding
and overflow) and an :class:`Activation` for every recorded activation (ReLU, LeakyReLU with
``param_t(alpha)``, Tanh and Sigmoid as ``result_t y = f(x)`` tables). Shape operations
(``view``, ``reshape``, ``flatten``, crops, ``torch.cat``, nearest ``Upsample``) pass values
unchanged. That one graph is evaluated twice:

* :meth:`CastNetwork.emulate`: float64 torch, every value on its fixed-point grid; exact
  because each accumulator is checked to need at most 53 bits (:data:`MAX_ACC_BITS`);
* :meth:`CastNetwork.trace`: alkaid's torch tracer, with the two casts registered as alkaid
  replay handlers that map each record type onto alkaid's ``quantize(k, i, f, overflow,
  round)``; :mod:`.alkaid_export` runs alkaid's interpreter and writes its Verilog.

What alkaid cannot express is refused, naming the layer: rounding modes other than TRN, RND
and RND_CONV, the SAT_ZERO overflow mode, an accumulator in the record narrower than the exact
one (alkaid's adders never wrap), batch norms that were not folded, any other layer.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.nn.utils import parametrize

from ..compress.fixed_point.record import PrecisionEntry, PrecisionRecord
from ..compress.fixed_point.types import FixedType
from ..errors import ConfigError, UnsupportedLayerError
from .alkaid_ops import kif, leaky_trace, patch_constant_cmvm
from .graph import clear_hooks

__all__ = [
    "ALKAID_LAYERS",
    "MAX_ACC_BITS",
    "Activation",
    "Cast",
    "CastNetwork",
    "alkaid_available",
    "bake",
    "build_cast_network",
]

#: what this route takes (for error messages)
ALKAID_LAYERS = ("Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d (batch norm folded), ReLU, LeakyReLU, Tanh, Sigmoid "
                 "(modules or functions), view/reshape/flatten, crops, torch.cat, nearest Upsample")
#: the float64 emulation is exact while every accumulator fits the float64 significand
MAX_ACC_BITS = 53
ROUNDING = ("TRN", "RND", "RND_CONV")
OVERFLOW = ("WRAP", "SAT", "SAT_SYM")

_WEIGHT = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_ACT_MODULES = {nn.ReLU: "ReLU", nn.LeakyReLU: "LeakyReLU", nn.Tanh: "Tanh", nn.Sigmoid: "Sigmoid"}
_ACT_FUNCTIONS = {
    torch.relu: "ReLU", torch.nn.functional.relu: "ReLU", torch.nn.functional.leaky_relu: "LeakyReLU",
    torch.tanh: "Tanh", torch.nn.functional.tanh: "Tanh", torch.sigmoid: "Sigmoid", torch.nn.functional.sigmoid: "Sigmoid",
}
_ACT_METHODS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid"}
_PASS_MODULES = (nn.Flatten, nn.Unflatten, nn.Upsample, nn.UpsamplingNearest2d)
_DROP_MODULES = (nn.Identity, nn.Dropout)  # FoldedBatchNorm is an Identity
_PASS_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "contiguous", "transpose", "unflatten"}
_PASS_FUNCTIONS = {torch.cat, torch.concat, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.permute,
                   torch.transpose, operator.getitem}


def alkaid_available() -> str | None:
    """None when alkaid is importable, else the reason (with the install command)."""
    try:
        import alkaid  # noqa: F401
    except ImportError:
        return 'the alkaid route needs alkaid: pip install "simcompress[firmware]" (alkaid==0.8.2)'
    return None


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


_UNARY: dict[str, Any] = {"Tanh": np.tanh, "Sigmoid": _np_sigmoid}


def _check_modes(t: FixedType, where: str) -> None:
    if t.rounding not in ROUNDING:
        msg = f"{where}: rounding {t.rounding} of {t.to_hls()} has no alkaid equivalent (alkaid rounds {', '.join(ROUNDING)})"
        raise UnsupportedLayerError(msg)
    if t.overflow not in OVERFLOW:
        msg = f"{where}: overflow {t.overflow} of {t.to_hls()} has no alkaid equivalent (alkaid has {', '.join(OVERFLOW)})"
        raise UnsupportedLayerError(msg)


class Cast(nn.Module):
    """``ftype y = x``: the record's cast, in float64 (exact); alkaid replays it as ``quantize``.

    ``port=True`` marks an input port: the emulation quantizes raw inputs, while the hardware
    receives values already on the grid, so its cast only declares the type (TRN, WRAP).
    """

    def __init__(self, ftype: FixedType, where: str, port: bool = False) -> None:
        super().__init__()
        _check_modes(ftype, where)
        self.ftype = ftype
        self.where = where
        self.port = port

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.ftype.quantize(x)
        return out

    def extra_repr(self) -> str:
        return f"{self.ftype.to_hls()}{', port' if self.port else ''}"


class Activation(nn.Module):
    """A recorded activation: ``result_t y = f(x)``.

    ReLU ``max(x, 0)``, LeakyReLU ``x > 0 ? x : param_t(alpha) * x`` (exact product), Tanh and
    Sigmoid evaluated in float64 numpy on the input grid (in hardware: a lookup table holding
    exactly these values), each cast to the result type.
    """

    def __init__(self, kind: str, result: FixedType, where: str, alpha: float | None = None) -> None:
        super().__init__()
        _check_modes(result, where)
        self.kind = kind
        self.result = result
        self.where = where
        self.alpha = alpha

    def table_values(self, x: np.ndarray) -> np.ndarray:
        """The table of a Tanh/Sigmoid: ``result_t(f(x))`` for grid values ``x`` (float64)."""
        out: np.ndarray = self.result.quantize(_UNARY[self.kind](np.asarray(x, dtype=np.float64)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "ReLU":
            y = torch.clamp(x, min=0)
        elif self.kind == "LeakyReLU":
            assert self.alpha is not None  # set for every LeakyReLU (build_cast_network)
            y = torch.where(x > 0, x, x * self.alpha)
        else:
            return torch.from_numpy(self.table_values(x.detach().double().numpy())).to(x.dtype)
        out: torch.Tensor = self.result.quantize(y)
        return out

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.result.to_hls()}" + (f", alpha={self.alpha}" if self.alpha is not None else "")


_registered = False


def _register_alkaid() -> None:
    """Register :class:`Cast` and :class:`Activation` as alkaid torch replay handlers (once)."""
    global _registered
    if _registered:
        return
    reason = alkaid_available()
    if reason:
        raise ConfigError(reason)
    from alkaid.converter.builtin.torch.layers.modules import ReplayModuleBase
    from alkaid.trace.ops import quantize, relu

    def q(x: Any, t: FixedType, port: bool = False) -> Any:
        k, i, f = kif(t)
        if port:
            return quantize(x, k, i, f, overflow_mode="WRAP", round_mode="TRN")
        return quantize(x, k, i, f, overflow_mode=t.overflow, round_mode=t.rounding)

    class _ReplayCast(ReplayModuleBase):  # registered by alkaid's metaclass on definition
        handles = (Cast,)

        def call(self, input: Any) -> Any:
            m: Cast = self.module
            return q(input, m.ftype, m.port)

    class _ReplayActivation(ReplayModuleBase):
        handles = (Activation,)

        def call(self, input: Any) -> Any:
            m: Activation = self.module
            t = m.result
            if m.kind == "ReLU":
                return q(relu(input), t)
            if m.kind == "LeakyReLU":
                return q(leaky_trace(input, float(m.alpha or 0.0)), t)
            # the table holds result_t(f(x)) already; the cast to the same type only declares it
            k, i, f = kif(t)
            return input.apply(m.table_values).quantize(k, i, f, overflow_mode="WRAP", round_mode="TRN")

    patch_constant_cmvm()
    # alkaid looks up a second-level plugin for every module class outside torch (entry point group
    # ``alkaid_torch``); the handlers above are registered already, so mark simcompress as loaded
    from alkaid.converter import _plugin_loader

    _plugin_loader._LOADED.add(("simcompress", "torch"))
    _registered = True


def bake(net: nn.Module, original: bool = False) -> nn.Module:
    """Deep copy with parametrized tensors baked in and hooks removed (any module type).

    With ``original=True`` the tensors before the parametrizations are kept (the float reference
    of a quantized network). ``remove_parametrizations`` is not used on the copy: it deletes the
    property from the dynamically created class, which the original module shares.
    """
    clean = copy.deepcopy(net)
    for _name, mod in list(clean.named_modules()):
        if parametrize.is_parametrized(mod):
            plist: Any = mod.parametrizations
            values = {t: (getattr(plist, t).original if original else getattr(mod, t)).detach().clone() for t in plist}
            del mod._modules["parametrizations"]
            mod.__class__ = type(mod).__bases__[0]
            for t, v in values.items():
                mod._parameters[t] = nn.Parameter(v, requires_grad=False)
        clear_hooks(mod)
    return clean


def _acc_bits(mod: nn.Module, w: np.ndarray, b: np.ndarray | None, x_t: FixedType, w_t: FixedType,
              b_t: FixedType | None) -> tuple[int, int]:
    """(bits, fractional bits) of an accumulator that holds every partial sum of the layer exactly."""
    frac = x_t.frac + w_t.frac
    if b is not None and b_t is not None:
        frac = max(frac, b_t.frac)
    xmax = max(abs(x_t.min_value), abs(x_t.max_value))
    axis = 1 if isinstance(mod, _CONV_T) else 0
    per_out = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).sum(axis=1)
    bound = float(per_out.max(initial=0.0)) * xmax + (float(np.abs(b).max(initial=0.0)) if b is not None else 0.0)
    codes = math.ldexp(bound, frac)
    return (math.ceil(math.log2(codes + 1)) + 1 if codes > 0 else 1), frac


@dataclass
class CastNetwork:
    """The fixed-point network of a record as one torch.fx graph (see the module docstring)."""

    module: torch.fx.GraphModule
    inputs: list[str]
    input_sizes: list[int]
    input_type: FixedType
    output_type: FixedType | None
    layers: dict[str, dict[str, Any]]

    def quantize_inputs(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Inputs on the input grid (float64): what the hardware ports receive."""
        return [np.asarray(self.input_type.quantize(np.asarray(x, dtype=np.float64)), dtype=np.float64) for x in inputs]

    def emulate(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Output values (float64, exact), flattened per sample: ``(N, n_out)``."""
        if len(inputs) != len(self.inputs):
            msg = f"the network takes {len(self.inputs)} inputs ({', '.join(self.inputs)}), got {len(inputs)}"
            raise ValueError(msg)
        xs = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)) for x in inputs]
        with torch.no_grad():
            y = self.module(*xs)
        return y.reshape(y.shape[0], -1).numpy().astype(np.float64, copy=False)

    def trace(self, solver_options: dict[str, Any] | None = None) -> Any:
        """alkaid ``CombLogic`` of the network (the adder graph with its lookup tables).

        ``solver_options`` go to alkaid's constant-matrix solver (e.g. ``{"method0": "dummy"}``:
        no common-subexpression search, a faster trace of a larger adder graph).
        """
        _register_alkaid()
        from alkaid.converter import trace_model
        from alkaid.trace import FVArrayInput
        from alkaid.trace import trace as comb_trace
        from alkaid.trace.passes import optimize

        ins = tuple(FVArrayInput((1, s), solver_options=solver_options) for s in self.input_sizes)
        with contextlib.redirect_stdout(io.StringIO()):
            inp, out = trace_model(self.module, inputs=ins, framework="torch")
            # alkaid's default optimisation also runs its LUT-cost surrogate, which the RTL writer
            # runs again; skip it here (the same adder graph, only the cost annotation differs)
            return optimize(comb_trace(inp, out, optimize=False), surrogate=False)


def build_cast_network(net: nn.Module, record: PrecisionRecord, input_sizes: list[int]) -> CastNetwork:
    """The :class:`CastNetwork` of ``net`` on the types of ``record`` (plain weights + record only).

    Raises:
        UnsupportedLayerError: a layer or type alkaid cannot express, naming the layer.
    """
    plain = bake(net)
    try:
        gm = torch.fx.symbolic_trace(plain)
    except Exception as err:
        msg = f"{type(net).__name__}: torch.fx cannot trace the network ({err}); the alkaid route needs a static graph"
        raise UnsupportedLayerError(msg) from None
    modules = dict(gm.named_modules())
    layers = record.layers
    types: dict[str, FixedType | None] = {}
    info: dict[str, dict[str, Any]] = {}
    graph = gm.graph
    inputs: list[str] = []
    n_cast = 0

    def add_after(node: torch.fx.Node, mod: nn.Module, name: str) -> torch.fx.Node:
        nonlocal n_cast
        n_cast += 1
        target = f"_cast{n_cast}_{name.replace('.', '_')}"
        gm.add_submodule(target, mod)
        with graph.inserting_after(node):
            new = graph.call_module(target, (node,))
        node.replace_all_uses_with(new, delete_user_cb=lambda u: u is not new)
        return new

    def entry_of(name: str, kind: str) -> PrecisionEntry:
        entry = layers.get(name)
        if entry is None or entry.result is None:
            msg = (f"layer {name!r} ({kind}) has no fixed-point result type in the precision record; quantize every "
                   "layer (fixed_point include/exclude)")
            raise UnsupportedLayerError(msg)
        return entry

    def src_type(node: torch.fx.Node) -> FixedType | None:
        a = node.args[0] if node.args else None
        return types.get(a.name) if isinstance(a, torch.fx.Node) else None

    for node in list(graph.nodes):
        if node.op == "placeholder":
            k = len(inputs)
            inputs.append(node.name)
            cast = add_after(node, Cast(record.input, "precision.input", port=True), f"in{k}")
            types[node.name] = types[cast.name] = record.input
        elif node.op == "call_module":
            name = str(node.target)
            if name.startswith(("_cast", "_act_")):
                continue
            mod = modules[name]
            if isinstance(mod, _WEIGHT):
                entry = entry_of(name, type(mod).__name__)
                _weight_layer(mod, name, entry, src_type(node), info)
                assert entry.result is not None
                cast = add_after(node, Cast(entry.result, f"precision.layers.{name}.result"), name)
                types[node.name] = types[cast.name] = entry.result
            elif type(mod) in _ACT_MODULES:
                kind = _ACT_MODULES[type(mod)]
                alpha = getattr(mod, "negative_slope", None)
                new = _replace(gm, node, _activation(kind, name, entry_of(name, kind), alpha), name)
                types[new.name] = layers[name].result
            elif isinstance(mod, _DROP_MODULES):
                node.replace_all_uses_with(node.args[0])  # type: ignore[arg-type,unused-ignore]
                graph.erase_node(node)
            elif isinstance(mod, _PASS_MODULES):
                if isinstance(mod, nn.Upsample) and mod.mode != "nearest":
                    msg = f"layer {name!r}: Upsample mode {mod.mode!r} is not exact in fixed point; use mode='nearest'"
                    raise UnsupportedLayerError(msg)
                types[node.name] = src_type(node)
            else:
                why = ("a batch norm that does not follow a Linear/Conv cannot be folded, and alkaid would scale by "
                       "float constants" if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
                       else f"supported: {ALKAID_LAYERS}")
                msg = f"layer {name!r} ({type(mod).__name__}) is not supported by the alkaid route; {why}"
                raise UnsupportedLayerError(msg)
        elif node.op in ("call_function", "call_method"):
            target: Any = node.target
            act = _ACT_FUNCTIONS.get(target) if node.op == "call_function" else _ACT_METHODS.get(str(target))
            if act is not None:
                kind = act
                entry = entry_of(node.name, kind)
                alpha = None
                if kind == "LeakyReLU":
                    alpha = node.kwargs.get("negative_slope", node.args[1] if len(node.args) > 1 else 0.01)
                new = _replace(gm, node, _activation(kind, node.name, entry, alpha), node.name)
                types[new.name] = entry.result
                continue
            fine = (node.target in _PASS_METHODS if node.op == "call_method" else node.target in _PASS_FUNCTIONS
                    or (node.target is torch.nn.functional.interpolate and node.kwargs.get("mode", "nearest") == "nearest"))
            if not fine:
                what = getattr(node.target, "__name__", node.target)
                msg = f"{node.name}: {node.op} {what} is not supported by the alkaid route; supported: {ALKAID_LAYERS}"
                raise UnsupportedLayerError(msg)
            if node.target in (torch.cat, torch.concat):
                ts = [types.get(a.name) for a in node.args[0] if isinstance(a, torch.fx.Node)]  # type: ignore[union-attr,unused-ignore]
                types[node.name] = _union(ts)
            else:
                types[node.name] = src_type(node)
        elif node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node):
                msg = "the network must return a single tensor for the alkaid route"
                raise UnsupportedLayerError(msg)
            out_t = types.get(out.name)
        elif node.op == "get_attr":
            msg = f"{node.name}: tensor attribute {node.target} used in forward is not supported by the alkaid route"
            raise UnsupportedLayerError(msg)
    graph.lint()
    gm.recompile()
    sizes = list(input_sizes)
    if len(sizes) != len(inputs):
        msg = f"the network takes {len(inputs)} inputs ({', '.join(inputs)}), but {len(sizes)} input sizes are known"
        raise UnsupportedLayerError(msg)
    return CastNetwork(gm.double().eval(), inputs, sizes, record.input, out_t, info)


def _union(ts: list[FixedType | None]) -> FixedType | None:
    if not ts or any(t is None for t in ts):
        return None
    out = ts[0]
    assert out is not None
    for t in ts[1:]:
        assert t is not None
        out = out.union(t)
    return out


def _replace(gm: torch.fx.GraphModule, node: torch.fx.Node, mod: nn.Module, name: str) -> torch.fx.Node:
    target = f"_act_{name.replace('.', '_')}"
    gm.add_submodule(target, mod)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_module(target, (node.args[0],))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return new


def _activation(kind: str, name: str, entry: PrecisionEntry, alpha: Any) -> Activation:
    assert entry.result is not None
    where = f"precision.layers.{name}"
    if kind == "LeakyReLU":
        if entry.param is None:
            msg = f"{where}: a LeakyReLU needs a 'param' type (the slope's fixed-point type)"
            raise UnsupportedLayerError(msg)
        a = float(entry.alpha if entry.alpha is not None else alpha)
        alpha_q = float(entry.param.quantize(np.array([a]))[0])
        return Activation(kind, entry.result, where, alpha=alpha_q)
    if entry.kind is not None and entry.kind != kind:
        msg = f"{where}: the record says {entry.kind}, the network has {kind} here"
        raise UnsupportedLayerError(msg)
    return Activation(kind, entry.result, where)


def _weight_layer(mod: nn.Module, name: str, entry: PrecisionEntry, x_t: FixedType | None,
                  info: dict[str, dict[str, Any]]) -> None:
    """Put the layer's weights on the record's grid (in place) and check the accumulator."""
    where = f"precision.layers.{name}"
    if entry.weight is None:
        msg = f"{where}: a {type(mod).__name__} layer needs a 'weight' type"
        raise UnsupportedLayerError(msg)
    if x_t is None:
        msg = f"layer {name!r}: its input has no fixed-point type (it does not follow a recorded layer or the input)"
        raise UnsupportedLayerError(msg)
    w_t, b_t = entry.weight, entry.bias
    for t in (w_t, b_t):
        if t is not None and t.width > 24:
            msg = f"{where}: {t.to_hls()} weights are wider than 24 bits (alkaid's constant matrices are float32)"
            raise UnsupportedLayerError(msg)
    weight: torch.Tensor = mod.weight  # type: ignore[assignment]
    w = w_t.quantize(weight.detach().double().numpy())
    bias: torch.Tensor | None = mod.bias  # type: ignore[assignment]
    b = None
    if bias is not None:
        if b_t is None:
            msg = f"{where}: the layer has a bias but the record no 'bias' type"
            raise UnsupportedLayerError(msg)
        b = b_t.quantize(bias.detach().double().numpy())
    bits, frac = _acc_bits(mod, w, b, x_t, w_t, b_t)
    if bits > MAX_ACC_BITS:
        msg = (f"layer {name!r}: its exact accumulator needs {bits} bits, more than the {MAX_ACC_BITS} the exact float64 "
               "emulation holds; use narrower weights or inputs")
        raise UnsupportedLayerError(msg)
    acc = entry.accum
    if acc is not None and (acc.frac < frac or acc.integer < bits - frac):
        msg = (f"{where}.accum: {acc.to_hls()} is narrower than the exact accumulator (ap_fixed<{bits},{bits - frac}>); "
               "alkaid's adders never round or wrap, so this record cannot be expressed")
        raise UnsupportedLayerError(msg)
    with torch.no_grad():
        weight.copy_(torch.from_numpy(w))
        if bias is not None and b is not None:
            bias.copy_(torch.from_numpy(b))
    info[name] = {"kind": type(mod).__name__, "weight": w_t.to_hls(), "bias": b_t.to_hls() if b_t else None,
                  "accum": f"ap_fixed<{bits},{bits - frac}>", "result": entry.result.to_hls() if entry.result else None}
