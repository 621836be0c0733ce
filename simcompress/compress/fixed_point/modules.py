"""The modules of a fixed-point network: quantizers, the folded batch-norm placeholder, the wrapper.

:class:`FixedPointNetwork` puts a plain network onto the types of a precision record:
:class:`FixedQuantize` parametrizations on the weights, forward hooks casting the recorded
outputs, the input cast, and the functional activations cast by an fx interpreter. All three
module classes join the compressed-bundle allowlist on import.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.nn.utils import parametrize

from ...errors import ConfigError
from .record import PrecisionEntry, PrecisionRecord
from .tracing import WEIGHT_LAYERS, trace
from .types import FixedType

__all__ = ["FixedPointNetwork", "FixedQuantize", "FoldedBatchNorm", "find_fixed_point_network", "precision_record"]


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
    typed precision record (:class:`~simcompress.compress.fixed_point.record.PrecisionRecord`),
    ``record`` its JSON form (``precision.json``).
    """

    def __init__(self, inner: nn.Module, record: PrecisionRecord | dict[str, Any], ste: bool = False) -> None:
        super().__init__()
        self.inner = inner
        if not isinstance(record, PrecisionRecord):
            record = PrecisionRecord.from_dict(json.loads(json.dumps(record)))
        self.precision = record
        self.ste = bool(ste)
        self.input_quant = FixedQuantize(record.input, ste=ste)
        self.output_quant = nn.ModuleDict()
        modules = dict(inner.named_modules())
        for name, entry in record.layers.items():
            mod = modules.get(name)
            if mod is None:
                continue  # functional node (e.g. torch.relu): lossless, nothing to cast
            if isinstance(mod, WEIGHT_LAYERS):
                for pname in ("weight", "bias"):
                    ftype = getattr(entry, pname)
                    if ftype is None or getattr(mod, pname) is None:
                        continue
                    # after a pruning Mask (or any other parametrization) the quantizer goes on top of it;
                    # only a weight that already has its FixedQuantize is left as it is
                    done = parametrize.is_parametrized(mod, pname) and any(
                        isinstance(q, FixedQuantize) for q in getattr(mod.parametrizations, pname)
                    )
                    if not done:
                        parametrize.register_parametrization(mod, pname, FixedQuantize(ftype, ste=ste))
            if isinstance(mod, nn.LeakyReLU) and entry.param is not None:
                # the slope the firmware multiplies by is param_t(alpha): use it in torch too
                alpha = entry.alpha if entry.alpha is not None else mod.negative_slope
                mod.negative_slope = float(entry.param.quantize(np.array([float(alpha)]))[0])
            if entry.result is not None:
                q = FixedQuantize(entry.result, ste=ste)
                self.output_quant[_key(name)] = q
                mod.register_forward_hook(_QuantHook(q))

        # functional activations (F.leaky_relu, torch.tanh, ...) are cast by running the traced
        # graph with an interpreter that applies the quantized version at those nodes
        self.functional_quant = nn.ModuleDict()
        self._functional: dict[str, PrecisionEntry] = {}
        for name, entry in record.layers.items():
            if entry.functional and entry.kind != "ReLU" and entry.result is not None:
                self.functional_quant[_key(name)] = FixedQuantize(entry.result, ste=ste)
                self._functional[name] = entry
        self._graph = trace(inner).graph if self._functional else None

    @property
    def record(self) -> dict[str, Any]:
        """The JSON form of :attr:`precision` (``precision.json``)."""
        return self.precision.to_dict()

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
            if entry.kind == "LeakyReLU":
                assert entry.param is not None and entry.alpha is not None  # recorded with every LeakyReLU
                alpha = entry.param.quantize(np.array([entry.alpha]))[0]
                return q(torch.where(x >= 0, x, x * float(alpha)))
            return q(torch.tanh(x) if entry.kind == "Tanh" else torch.sigmoid(x))


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
    return fpn.precision.replace(network=name).to_dict()


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
