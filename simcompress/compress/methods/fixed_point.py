"""Fixed-point (``ap_fixed``) quantization methods: ``fixed_point`` (PTQ) and ``qat_fixed_point`` (QAT).

Both put a feed-forward network (``model.network`` for a shower generator, or a
module given by ``network:``) onto per-layer HLS fixed-point types:

* the network inputs (noise and conditioning) are quantized to the ``input`` type;
* every selected ``nn.Linear`` gets ``weight`` and ``bias`` quantizers
  (``torch.nn.utils.parametrize``) and its output is cast to the ``result`` type;
  its ``accum`` type is derived, wide enough for the exact sum (worst case over
  the quantized weights and the input range, every partial sum included);
* every activation module (``nn.ReLU``, ``nn.LeakyReLU``) casts its output to the
  ``activation`` type (unsigned after ReLU unless said otherwise); LeakyReLU's
  slope gets the ``param`` type, as hls4ml's ``param_t``;
* ``BatchNorm1d`` directly after a ``Linear`` is folded into it first (float
  algebra, before quantization), so the firmware never sees it.

Integer bits not given in the config are chosen from ranges observed on
calibration inputs of the float model (plus ``headroom`` bits), with SAT overflow
by default. The quantizers and the whole per-layer record are exactly what
:mod:`simcompress.firmware` builds and emulates bit-exactly; the record is
available as :func:`precision_record` (the bundle's ``precision.json``).

``qat_fixed_point`` inserts the same quantizers with straight-through gradients,
so the pipeline's fine-tuning step trains through them; ``fixed_point`` freezes
the quantized weights (no gradient through the quantizers).
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.fx
from pydantic import Field, model_validator
from torch import nn
from torch.nn.utils import parametrize

from ..._config import StrictModel
from ...errors import ConfigError, UnsupportedLayerError
from ..base import CompressionResult, LayerRecord, MethodConfig, register_method
from ..fixed_point import OVERFLOW_MODES, ROUNDING_MODES, FixedType, integer_bits_for_range

__all__ = [
    "PRECISION_FORMAT_VERSION",
    "FixedPointConfig",
    "FixedPointNetwork",
    "FixedQuantize",
    "FixedSpec",
    "FoldedBatchNorm",
    "LayerPrecision",
    "QATFixedPointConfig",
    "find_fixed_point_network",
    "precision_record",
]

PRECISION_FORMAT_VERSION = 1
_ACTIVATION_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)
_FUNCTIONAL_RELU = {torch.relu, torch.nn.functional.relu}
#: functional activations whose output is cast to the activation type (kind, default slope)
_FUNCTIONAL_ACT = {
    torch.nn.functional.leaky_relu: "LeakyReLU",
    torch.tanh: "Tanh", torch.nn.functional.tanh: "Tanh",
    torch.sigmoid: "Sigmoid", torch.nn.functional.sigmoid: "Sigmoid",
}
_METHOD_ACT = {"tanh": "Tanh", "sigmoid": "Sigmoid"}
#: weight layers: Linear and every (transposed) convolution
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: shape operations that move values without changing them (the type passes through)
_SHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "contiguous", "select", "narrow", "transpose", "unflatten"}
_SHAPE_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.permute, torch.narrow, torch.select, torch.transpose}
_SHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.Dropout)


# --------------------------------------------------------------------------- configs
class FixedSpec(StrictModel):
    """How to build one fixed-point type: ``integer: null`` means "from the observed range"."""

    width: int = Field(ge=1, le=53)
    integer: int | None = None
    signed: bool | None = None
    rounding: str = "RND"
    overflow: str = "SAT"
    headroom: int = Field(default=0, ge=0, le=16)

    @model_validator(mode="after")
    def _check_modes(self) -> FixedSpec:
        if self.rounding not in ROUNDING_MODES:
            msg = f"rounding must be one of {', '.join(ROUNDING_MODES)}"
            raise ValueError(msg)
        if self.overflow not in OVERFLOW_MODES:
            msg = f"overflow must be one of {', '.join(OVERFLOW_MODES)}"
            raise ValueError(msg)
        return self

    def build(self, lo: float | None, hi: float | None, default_signed: bool, what: str) -> FixedType:
        signed = default_signed if self.signed is None else self.signed
        if self.integer is not None:
            integer = self.integer
        else:
            if lo is None or hi is None:
                msg = f"{what}: integer bits not given and no calibration range observed; set 'integer'"
                raise ConfigError(msg)
            if not signed:
                lo = max(lo, 0.0)
            integer = integer_bits_for_range(lo, hi, signed) + self.headroom
        return FixedType(self.width, integer, signed, self.rounding, self.overflow)


class LayerPrecision(StrictModel):
    """Per-layer overrides, keyed by an fnmatch pattern on the module name."""

    weight: FixedSpec | None = None
    bias: FixedSpec | None = None
    result: FixedSpec | None = None
    activation: FixedSpec | None = None
    param: FixedSpec | None = None


class FixedPointConfig(MethodConfig):
    """Post-training quantization onto HLS fixed-point types (see the module docstring)."""

    method: ClassVar[str] = "fixed_point"
    network: str | None = None
    input: FixedSpec = FixedSpec(width=12, headroom=0)
    weight: FixedSpec = FixedSpec(width=8)
    bias: FixedSpec = FixedSpec(width=12)
    result: FixedSpec = FixedSpec(width=16, headroom=1)
    activation: FixedSpec = FixedSpec(width=16, headroom=1)
    param: FixedSpec = FixedSpec(width=16, signed=False)
    layers: dict[str, LayerPrecision] = Field(default_factory=dict)
    calibration_samples: int = Field(default=4096, ge=16)
    seed: int = 0
    fold_batchnorm: bool = True


class QATFixedPointConfig(FixedPointConfig):
    """Fixed-point fake quantization with straight-through gradients, for training."""

    method: ClassVar[str] = "qat_fixed_point"
    result: FixedSpec = FixedSpec(width=16, headroom=2)
    activation: FixedSpec = FixedSpec(width=16, headroom=2)


# --------------------------------------------------------------------------- modules
class _STEQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, ftype: FixedType) -> torch.Tensor:
        return ftype.quantize(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class FixedQuantize(nn.Module):
    """Quantize a tensor onto a :class:`FixedType`; a parametrization (weights) or an output cast.

    With ``ste=True`` the backward pass is the identity (straight-through estimator);
    otherwise no gradient flows. The forward value is always exactly on the grid.
    """

    def __init__(self, ftype: FixedType | dict[str, Any] | str, ste: bool = False) -> None:
        super().__init__()
        self.ftype = ftype if isinstance(ftype, FixedType) else FixedType.from_dict(ftype)
        self.ste = bool(ste)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ste and torch.is_grad_enabled() and x.requires_grad:
            return _STEQuant.apply(x, self.ftype)
        return self.ftype.quantize(x)

    @property
    def value_bits(self) -> int:
        """Bits per stored value (the ap_fixed width), read by the storage accounting."""
        return int(self.ftype.width)

    def extra_repr(self) -> str:
        return f"{self.ftype.to_hls()}, ste={self.ste}"

    def to_spec(self) -> dict[str, Any]:
        return {"type": self.ftype.to_dict(), "ste": self.ste}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], *args: Any, **kwargs: Any) -> FixedQuantize:
        return cls(FixedType.from_dict(spec["type"], "FixedQuantize spec"), ste=bool(spec.get("ste", False)))


class FoldedBatchNorm(nn.Identity):
    """Placeholder left where a BatchNorm1d was folded into the preceding Linear (an identity)."""

    def __init__(self, num_features: int = 0) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def extra_repr(self) -> str:
        return f"{self.num_features}, folded into the previous Linear"

    def to_spec(self) -> dict[str, Any]:
        return {"num_features": self.num_features}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], *args: Any, **kwargs: Any) -> FoldedBatchNorm:
        return cls(int(spec.get("num_features", 0)))


class _QuantHook:
    """Forward hook casting a module's output through a quantizer (deep-copies with it)."""

    def __init__(self, quant: FixedQuantize) -> None:
        self.quant = quant

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return self.quant(output)


def _key(name: str) -> str:
    return name.replace(".", "__")


class FixedPointNetwork(nn.Module):
    """A feed-forward network with the fixed-point quantizers of a precision record.

    ``inner`` is the network itself (same module names as before quantization);
    its Linear weights and biases carry :class:`FixedQuantize` parametrizations,
    and the outputs of the recorded layers are cast with forward hooks. ``forward``
    quantizes every input to the record's input type first. ``record`` is the
    JSON-ready precision record (``precision.json``).
    """

    def __init__(self, inner: nn.Module, record: dict[str, Any], ste: bool = False) -> None:
        super().__init__()
        self.inner = inner
        self.record = json.loads(json.dumps(record))
        self.ste = bool(ste)
        self.input_quant = FixedQuantize(record["input"], ste=ste)
        self.output_quant = nn.ModuleDict()
        modules = dict(inner.named_modules())
        for name, entry in record["layers"].items():
            mod = modules.get(name)
            if mod is None:
                continue  # functional node (e.g. torch.relu): lossless, nothing to cast
            if isinstance(mod, _WEIGHT_LAYERS):
                for pname in ("weight", "bias"):
                    if entry.get(pname) is None or getattr(mod, pname) is None:
                        continue
                    if not parametrize.is_parametrized(mod, pname):
                        parametrize.register_parametrization(mod, pname, FixedQuantize(entry[pname], ste=ste))
            if isinstance(mod, nn.LeakyReLU) and entry.get("param") is not None:
                # the slope the firmware multiplies by is param_t(alpha): use it in torch too
                p_t = FixedType.from_dict(entry["param"], f"precision.layers.{name}.param")
                mod.negative_slope = float(p_t.quantize(np.array([float(entry.get("alpha", mod.negative_slope))]))[0])
            if entry.get("result") is not None:
                q = FixedQuantize(entry["result"], ste=ste)
                self.output_quant[_key(name)] = q
                mod.register_forward_hook(_QuantHook(q))

        # functional activations (F.leaky_relu, torch.tanh, ...) are cast by running the traced
        # graph with an interpreter that applies the quantized version at those nodes
        self.functional_quant = nn.ModuleDict()
        self._functional: dict[str, dict[str, Any]] = {}
        for name, entry in record["layers"].items():
            if entry.get("functional") and entry.get("kind") != "ReLU":
                self.functional_quant[_key(name)] = FixedQuantize(entry["result"], ste=ste)
                self._functional[name] = entry
        self._graph = _trace(inner).graph if self._functional else None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        xs = [self.input_quant(x) for x in inputs]
        if self._graph is None:
            return self.inner(*xs)
        return _CastInterpreter(self).run(*xs)

    def to_spec(self) -> dict[str, Any]:
        return {"record": self.record, "ste": self.ste}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], inner: nn.Module | None = None, **kwargs: Any) -> FixedPointNetwork:
        """Rebuild around ``inner`` (the network rebuilt by the bundle loader, parametrizations optional)."""
        if inner is None:
            inner = kwargs.get("children", {}).get("inner")
        if inner is None:
            msg = "FixedPointNetwork.from_spec needs the inner network module"
            raise ConfigError(msg)
        return cls(inner, spec["record"], ste=bool(spec.get("ste", False)))


class _CastInterpreter(torch.fx.Interpreter):
    """Runs ``FixedPointNetwork.inner`` node by node, casting recorded functional activations."""

    def __init__(self, fpn: FixedPointNetwork) -> None:
        super().__init__(fpn.inner, graph=fpn._graph, garbage_collect_values=True)
        self.fpn = fpn

    def run_node(self, n: torch.fx.Node) -> Any:
        entry = self.fpn._functional.get(n.name)
        if entry is None:
            return super().run_node(n)
        with self._set_current_node(n):
            args, _kwargs = self.fetch_args_kwargs_from_env(n)
            x = args[0]
            q = self.fpn.functional_quant[_key(n.name)]
            if entry["kind"] == "LeakyReLU":
                alpha = FixedType.from_dict(entry["param"], "param").quantize(np.array([entry["alpha"]]))[0]
                return q(torch.where(x >= 0, x, x * float(alpha)))
            return q(torch.tanh(x) if entry["kind"] == "Tanh" else torch.sigmoid(x))


def find_fixed_point_network(model: nn.Module) -> tuple[str, FixedPointNetwork] | None:
    """The (name, module) of the first :class:`FixedPointNetwork` in ``model`` (``""`` if it is the model)."""
    for name, mod in model.named_modules():
        if isinstance(mod, FixedPointNetwork):
            return name, mod
    return None


def precision_record(model: nn.Module) -> dict[str, Any] | None:
    """The per-layer precision record (``precision.json`` content) of a fixed-point model, or None."""
    found = find_fixed_point_network(model)
    if found is None:
        return None
    name, fpn = found
    rec = copy.deepcopy(fpn.record)
    rec["network"] = name
    return rec


def _register_bundle_types() -> None:
    """Add the quantizer modules to the compressed-bundle allowlist (if the bundle module exists)."""
    try:
        from .. import bundle  # written by the compression library; optional at import time
    except ImportError:
        return
    register = getattr(bundle, "register_module_type", None)
    if register is None:
        return
    for cls in (FixedQuantize, FixedPointNetwork, FoldedBatchNorm):
        with contextlib.suppress(ConfigError):  # already registered
            register(cls)


_register_bundle_types()


# --------------------------------------------------------------------------- helpers
def _resolve_network(model: nn.Module, path: str | None) -> tuple[str, nn.Module]:
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


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_name, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def _trace(net: nn.Module) -> Any:
    import torch.fx

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


def _bn_matches(bn: nn.Module, layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return isinstance(bn, nn.BatchNorm1d)
    nd = layer.weight.ndim - 2
    return isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[nd - 1])


def fold_batchnorm(net: nn.Module) -> list[str]:
    """Fold every batch norm that directly follows a Linear / (transposed) convolution (sole user) into it.

    BatchNorm1d after Linear or Conv1d/ConvTranspose1d, BatchNorm2d after the 2-D convolutions,
    BatchNorm3d after the 3-D ones (eval-mode statistics). Returns the folded names.
    """
    gm = _trace(net)
    modules = dict(net.named_modules())
    folded = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BATCHNORMS):
            continue
        src = node.args[0]
        if not (hasattr(src, "op") and src.op == "call_module" and isinstance(modules.get(src.target), _WEIGHT_LAYERS)):
            continue
        if len(src.users) != 1:
            continue
        bn = modules[node.target]
        lin = modules[src.target]
        if not _bn_matches(bn, lin) or getattr(lin, "groups", 1) != 1 and isinstance(lin, _CONV_T):
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
            axis = 1 if isinstance(lin, _CONV_T) else 0
            shape[axis] = -1
            w = lin.weight.double() * scale.reshape(shape)
            b = (lin.bias.double() if lin.bias is not None else torch.zeros_like(shift)) * scale + shift
            lin.weight.copy_(w.to(lin.weight.dtype))
            if lin.bias is None:
                lin.bias = nn.Parameter(b.to(lin.weight.dtype))
            else:
                lin.bias.copy_(b.to(lin.bias.dtype))
        _set_submodule(net, node.target, FoldedBatchNorm(bn.num_features))
        folded.append(str(node.target))
    return folded


def _calibration_inputs(model: nn.Module, net: nn.Module, cfg: FixedPointConfig, given: Any) -> list[torch.Tensor] | None:
    if given is not None:
        if callable(given):
            # the pipeline's calibration callable runs the whole model (e.g. m.network(z, m.condition(e)));
            # capture what reaches the network
            captured: list[list[torch.Tensor]] = []

            def grab(_m: nn.Module, args: tuple[Any, ...]) -> None:
                captured.append([a.detach() for a in args if isinstance(a, torch.Tensor)])

            handle = net.register_forward_pre_hook(grab)
            try:
                with torch.no_grad():
                    given(model)
            finally:
                handle.remove()
            if not captured:
                msg = f"{cfg.method}: the calibration callable never ran the network"
                raise ConfigError(msg)
            return [torch.cat([c[k] for c in captured]).float() for k in range(len(captured[0]))]
        if isinstance(given, torch.Tensor):
            return [given.float()]
        items = list(given)
        if items and isinstance(items[0], (list, tuple)):  # a list of batches
            return [torch.cat([torch.as_tensor(b[k]) for b in items]).float() for k in range(len(items[0]))]
        return [torch.as_tensor(t).float() for t in items]
    latent = getattr(model, "latent_dim", None)
    cond = getattr(model, "condition", None)
    erange = getattr(model, "energy_range_mev", None)
    if latent is None or cond is None or erange is None:
        return None
    gen = torch.Generator().manual_seed(cfg.seed)
    n = cfg.calibration_samples
    z = torch.randn(n, int(latent), generator=gen)
    lo, hi = (float(v) for v in erange)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    energies = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))).float()
    with torch.no_grad():
        c = cond(energies)
    if c.ndim == 1:
        c = c[:, None]
    return [z, c.float()]


def _match_override(cfg: FixedPointConfig, name: str, field: str) -> FixedSpec | None:
    for pattern, lp in cfg.layers.items():
        if fnmatch.fnmatchcase(name, pattern):
            spec = getattr(lp, field)
            if spec is not None:
                return spec
    return None


def exact_accumulator(x: FixedType, w_int: np.ndarray, w_t: FixedType, b_int: np.ndarray | None, b_t: FixedType) -> FixedType:
    """Narrowest signed type holding every partial sum of ``b + sum_j w_j x_j`` exactly, in any order.

    ``w_int`` (out, in) and ``b_int`` (out,) are the integer codes of the quantized weights and biases.
    """
    frac = max(x.frac + w_t.frac, b_t.frac if b_int is not None else -10**6)
    xlo = x.int_min if not (x.overflow == "SAT_SYM" and x.signed) else -x.int_max
    xhi = x.int_max
    w = w_int.astype(object) if w_int.size else w_int
    # per-term range in units of 2**-(x.frac + w.frac); each term's range contains 0
    pos = np.where(w_int >= 0, w * xhi, w * xlo).sum(axis=1) if w_int.size else np.zeros(0)
    neg = np.where(w_int >= 0, w * xlo, w * xhi).sum(axis=1) if w_int.size else np.zeros(0)
    shift_p = frac - (x.frac + w_t.frac)
    hi = max([int(v) << shift_p for v in pos] + [0])
    lo = min([int(v) << shift_p for v in neg] + [0])
    if b_int is not None and b_int.size:
        shift_b = frac - b_t.frac
        bs = [int(v) << shift_b for v in b_int]
        hi = max([hi] + [int(p << shift_p) + b for p, b in zip(pos, bs, strict=False)] + bs)
        lo = min([lo] + [int(n << shift_p) + b for n, b in zip(neg, bs, strict=False)] + bs)
    # integer code range [lo, hi] must fit a signed W-bit code
    bits = max(int(hi).bit_length() + 1, int(-lo - 1).bit_length() + 1 if lo < 0 else 1, 2)
    return FixedType(bits, bits - frac, signed=True)


def _functional_kind(node: Any) -> str | None:
    if node.op == "call_function" and node.target in _FUNCTIONAL_ACT:
        return _FUNCTIONAL_ACT[node.target]
    if node.op == "call_method" and node.target in _METHOD_ACT:
        return _METHOD_ACT[node.target]
    return None


def _is_shape_op(node: Any) -> bool:
    import operator

    if node.op == "call_method" and node.target in _SHAPE_METHODS:
        return True
    if node.op == "call_function" and node.target in _SHAPE_FUNCS:
        return True
    if node.op == "call_function" and node.target is operator.getitem:
        return True  # a crop of a typed tensor keeps its type; an index into x.shape gets None
    if node.op == "call_function" and node.target is torch.nn.functional.interpolate:
        return node.kwargs.get("mode", "nearest") == "nearest" and len(node.args) < 4
    return False


# --------------------------------------------------------------------------- the transform
def _apply(model: nn.Module, cfg: FixedPointConfig, calibration: Any, ste: bool) -> CompressionResult:
    path, net = _resolve_network(model, cfg.network)
    if isinstance(net, FixedPointNetwork) or find_fixed_point_network(net) is not None:
        msg = f"{cfg.method}: the network is already fixed-point quantized"
        raise ConfigError(msg)
    folded = fold_batchnorm(net) if cfg.fold_batchnorm else []
    gm = _trace(net)
    modules = dict(net.named_modules())

    selected = {
        n
        for n, m in modules.items()
        if isinstance(m, _WEIGHT_LAYERS)
        and any(fnmatch.fnmatchcase(n, p) for p in cfg.include)
        and not any(fnmatch.fnmatchcase(n, p) for p in cfg.exclude)
    }

    # ------------------------------------------------ observe ranges on the float model
    ranges: dict[str, list[float]] = {}
    inputs = _calibration_inputs(model, net, cfg, calibration)
    if inputs is not None:
        hooks = []

        def _obs(name: str) -> Any:
            def hook(_m: nn.Module, _a: Any, out: torch.Tensor) -> None:
                lo, hi = float(out.min()), float(out.max())
                r = ranges.setdefault(name, [lo, hi])
                r[0], r[1] = min(r[0], lo), max(r[1], hi)

            return hook

        for n, m in modules.items():
            if n in selected or isinstance(m, _ACTIVATION_MODULES):
                hooks.append(m.register_forward_hook(_obs(n)))
        functional = {n.name for n in gm.graph.nodes if _functional_kind(n) is not None}

        class _Observe(torch.fx.Interpreter):
            def run_node(self, n: torch.fx.Node) -> Any:
                out = super().run_node(n)
                if n.name in functional and isinstance(out, torch.Tensor):
                    lo, hi = float(out.min()), float(out.max())
                    r = ranges.setdefault(n.name, [lo, hi])
                    r[0], r[1] = min(r[0], lo), max(r[1], hi)
                return out

        try:
            with torch.no_grad():
                _Observe(gm).run(*inputs)
        finally:
            for h in hooks:
                h.remove()
        allv = torch.cat([t.reshape(-1) for t in inputs])
        ranges["__input__"] = [float(allv.min()), float(allv.max())]

    in_r = ranges.get("__input__", [None, None])
    input_t = cfg.input.build(in_r[0], in_r[1], True, f"{cfg.method}.input")

    # ------------------------------------------------ walk the graph, assign types
    types: dict[Any, FixedType] = {}
    layers: dict[str, dict[str, Any]] = {}
    records: list[LayerRecord] = []
    placeholders = []
    alias: dict[Any, Any] = {}  # Identity (folded BatchNorm) -> its input
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            types[node] = input_t
            placeholders.append(node.name)
        elif node.op == "call_function" and node.target in (torch.cat, torch.concat):
            srcs = node.args[0]
            t = types[srcs[0]]
            for s in srcs[1:]:
                t = t.union(types[s])
            types[node] = t
        elif node.op == "call_module":
            mod = modules[node.target]
            name = str(node.target)
            src = node.args[0] if node.args else None
            if isinstance(mod, nn.Identity):
                types[node] = types.get(src, input_t)
                alias[node] = alias.get(src, src)
            elif isinstance(mod, _WEIGHT_LAYERS):
                if name not in selected:
                    types[node] = None  # float layer: later layers cannot be typed exactly
                    continue
                x_t = types.get(src)
                if x_t is None:
                    msg = f"{cfg.method}: layer {name!r} follows an unquantized layer; include every Linear"
                    raise ConfigError(msg)
                w_spec = _match_override(cfg, name, "weight") or cfg.weight
                b_spec = _match_override(cfg, name, "bias") or cfg.bias
                r_spec = _match_override(cfg, name, "result") or cfg.result
                w = mod.weight.detach().double()
                w_t = w_spec.build(float(w.min()), float(w.max()), True, f"{name}.weight")
                w_int = w_t.quantize_int(w.numpy())
                if isinstance(mod, _CONV_T):  # (in, out/g, k...) -> rows of output channels
                    w_int = np.moveaxis(w_int, 1, 0)
                w_int = w_int.reshape(w_int.shape[0], -1)
                if mod.bias is not None:
                    b = mod.bias.detach().double()
                    b_t = b_spec.build(float(b.min()), float(b.max()), True, f"{name}.bias")
                    b_int = b_t.quantize_int(b.numpy())
                else:
                    b_t, b_int = None, None
                acc_t = exact_accumulator(x_t, w_int, w_t, b_int, b_t or w_t)
                rr = ranges.get(name, [None, None])
                res_t = r_spec.build(rr[0], rr[1], True, f"{name}.result")
                n_in = mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels
                n_out = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
                layers[name] = {
                    "kind": type(mod).__name__ if type(mod) in _WEIGHT_LAYERS else "Linear",
                    "weight": w_t.to_dict(),
                    "bias": b_t.to_dict() if b_t else None,
                    "accum": acc_t.to_dict(),
                    "result": res_t.to_dict(),
                    "activation": None,
                    "activation_layer": None,
                    "n_in": n_in,
                    "n_out": n_out,
                }
                types[node] = res_t
                n_par = mod.weight.numel() + (mod.bias.numel() if mod.bias is not None else 0)
                bits_after = mod.weight.numel() * w_t.width + (mod.bias.numel() * b_t.width if b_t else 0)
                records.append(
                    LayerRecord(name, layers[name]["kind"], n_par, n_par, 32 * n_par, bits_after,
                                {"weight": w_t.to_hls(), "bias": b_t.to_hls() if b_t else None,
                                 "accum": acc_t.to_hls(), "result": res_t.to_hls()})
                )
            elif isinstance(mod, _ACTIVATION_MODULES):
                x_t = types.get(src)
                if x_t is None:
                    types[node] = None
                    continue
                unsigned = isinstance(mod, (nn.ReLU, nn.Sigmoid))
                a_spec = _match_override(cfg, name, "activation") or cfg.activation
                rr = ranges.get(name, [None, None])
                act_t = a_spec.build(rr[0], rr[1], not unsigned, f"{name}.activation")
                entry: dict[str, Any] = {"kind": type(mod).__name__, "result": act_t.to_dict()}
                if isinstance(mod, nn.LeakyReLU):
                    p_spec = _match_override(cfg, name, "param") or cfg.param
                    alpha = float(mod.negative_slope)
                    p_t = p_spec.build(min(alpha, 0.0), max(alpha, 0.0), alpha < 0, f"{name}.param")
                    entry["param"] = p_t.to_dict()
                    entry["alpha"] = alpha
                layers[name] = entry
                types[node] = act_t
                src = alias.get(src, src)
                if hasattr(src, "op") and src.op == "call_module" and str(src.target) in layers:
                    layers[str(src.target)]["activation"] = act_t.to_dict()
                    layers[str(src.target)]["activation_layer"] = name
            elif isinstance(mod, _SHAPE_MODULES) or (isinstance(mod, nn.Upsample) and mod.mode == "nearest"):
                types[node] = types.get(src)  # moves values, keeps them on the grid
            else:
                why = " (a batch norm is folded only directly after a Linear/convolution it follows alone)" if isinstance(mod, _BATCHNORMS) else ""
                msg = (
                    f"{name}: {type(mod).__name__} is not supported by fixed-point quantization{why}; supported: "
                    "Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d, BatchNorm (folded), ReLU, LeakyReLU, Tanh, Sigmoid "
                    "(modules or functions), nearest Upsample, reshapes, crops, torch.cat"
                )
                raise UnsupportedLayerError(
                    msg
                )
        elif node.op == "call_function" and node.target in _FUNCTIONAL_RELU:
            x_t = types.get(node.args[0])
            types[node] = x_t  # relu of an on-grid value is on the grid: lossless in the same type
            if x_t is not None:
                layers[node.name] = {"kind": "ReLU", "functional": True, "result": x_t.to_dict()}
        elif _functional_kind(node) is not None:
            kind = _functional_kind(node)
            x_t = types.get(node.args[0])
            if x_t is None:
                types[node] = None
                continue
            a_spec = _match_override(cfg, node.name, "activation") or cfg.activation
            rr = ranges.get(node.name, [None, None])
            act_t = a_spec.build(rr[0], rr[1], kind != "Sigmoid", f"{node.name}.activation")
            entry = {"kind": kind, "functional": True, "result": act_t.to_dict()}
            if kind == "LeakyReLU":
                alpha = float(node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01))
                p_spec = _match_override(cfg, node.name, "param") or cfg.param
                p_t = p_spec.build(min(alpha, 0.0), max(alpha, 0.0), alpha < 0, f"{node.name}.param")
                entry["param"] = p_t.to_dict()
                entry["alpha"] = alpha
            layers[node.name] = entry
            types[node] = act_t
        elif _is_shape_op(node):
            src = node.args[0] if node.args else None
            types[node] = types.get(src) if isinstance(src, torch.fx.Node) else None
        elif node.op == "call_function" and node.target is getattr or node.op == "call_method" and node.target in ("size", "dim"):
            types[node] = None  # shape queries (x.shape, x.size(0)): not tensors
        elif node.op == "output":
            continue
        elif node.op == "call_function":
            msg = (
                f"{node.name}: function {getattr(node.target, '__name__', node.target)!s} is not supported by "
                "fixed-point quantization; supported: torch.cat, relu / leaky_relu / tanh / sigmoid, reshapes, crops, nearest interpolate"
            )
            raise UnsupportedLayerError(
                msg
            )
        else:
            msg = f"{node.name}: graph operation {node.op!r} is not supported"
            raise UnsupportedLayerError(msg)

    record = {
        "format_version": PRECISION_FORMAT_VERSION,
        "method": cfg.method,
        "network": path,
        "inputs": placeholders,
        "input_sizes": [int(t.shape[-1]) for t in inputs] if inputs is not None else None,
        "input": input_t.to_dict(),
        "layers": layers,
        "folded_batchnorm": folded,
    }
    wrapped = FixedPointNetwork(net, record, ste=ste)
    if path == "":
        out_model: nn.Module = wrapped
    else:
        _set_submodule(model, path, wrapped)
        out_model = model
    return CompressionResult(out_model, cfg, tuple(records), extra={"precision": record})


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
