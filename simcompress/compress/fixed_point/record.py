"""The precision record: what a fixed-point network computes, besides its plain weights.

The fixed-point methods write it (``precision.json`` in a compressed bundle, and the
``record`` of :class:`~simcompress.compress.fixed_point.modules.FixedPointNetwork`); the
firmware and interop packages read it. Together with the float weights of the plain network
it fixes every integer the hardware computes: the input type, and per layer (keyed by module
name, ``"body.0"``, or by the torch.fx node name of a functional activation):

* weight layers: ``kind`` (``Linear``, ``Conv2d``, ...), ``weight``, ``bias``, ``accum`` (the
  exact accumulator, :func:`~simcompress.compress.fixed_point.types.exact_accumulator`),
  ``result``, ``activation`` / ``activation_layer`` (the activation that follows), ``n_in``, ``n_out``;
* activations: ``kind`` (``ReLU``, ``LeakyReLU``, ``Tanh``, ``Sigmoid``), ``result``, for LeakyReLU
  ``param`` (hls4ml's ``param_t``) and ``alpha``; ``functional: true`` for a torch function;
* ``source``: the layer of another framework an entry came from (QKeras import).

Top level: ``format_version``, ``method``, ``network`` (attribute path of the network in the
model, ``""`` = the model), ``inputs`` (placeholder names), ``input_sizes``, ``input``,
``layers``, ``folded_batchnorm``. Keys absent in a file stay absent and the key order of a
file is kept, so ``PrecisionRecord.from_dict(d).to_dict() == d`` with the same JSON text.

>>> rec = PrecisionRecord.from_dict({"input": "ap_fixed<8,3>", "layers": {
...     "body.0": {"weight": "ap_fixed<6,1>", "bias": "ap_fixed<8,2>", "result": "ap_fixed<12,4>"}}})
>>> rec.input.to_hls(), rec.layers["body.0"].result.to_hls()
('ap_fixed<8,3>', 'ap_fixed<12,4>')
>>> list(rec.to_dict()["layers"]["body.0"])
['weight', 'bias', 'result']
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
from .types import FixedType

__all__ = ["PRECISION_FORMAT_VERSION", "PrecisionEntry", "PrecisionRecord", "find_precision_network"]

PRECISION_FORMAT_VERSION = 1

_TYPE_KEYS = ("weight", "bias", "accum", "result", "activation", "param")
#: the order keys are written in when a record is built in code (the order of every record so far)
_ENTRY_KEYS = ("kind", "functional", "weight", "bias", "accum", "result", "activation", "activation_layer", "n_in",
               "n_out", "param", "alpha", "source")
_RECORD_KEYS = ("format_version", "method", "network", "inputs", "input_sizes", "input", "layers", "folded_batchnorm")


def _type(value: Any, source: str) -> FixedType | None:
    if value is None or isinstance(value, FixedType):
        return value
    return FixedType.from_dict(value, source)


def _unknown(data: Mapping[str, Any], allowed: tuple[str, ...], source: str) -> None:
    bad = [k for k in data if k not in allowed]
    if bad:
        msg = f"{source}: unknown key {bad[0]!r}; allowed: {', '.join(allowed)}"
        raise ConfigError(msg)


@dataclass(frozen=True)
class PrecisionEntry:
    """The record of one layer (see the module docstring); ``keys`` are the keys present, in file order."""

    kind: str | None = None
    functional: bool | None = None
    weight: FixedType | None = None
    bias: FixedType | None = None
    accum: FixedType | None = None
    result: FixedType | None = None
    activation: FixedType | None = None
    activation_layer: str | None = None
    n_in: int | None = None
    n_out: int | None = None
    param: FixedType | None = None
    alpha: float | None = None
    source: str | None = None
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def make(cls, **values: Any) -> PrecisionEntry:
        """An entry with exactly the keys given (``None`` values included), written in the standard order."""
        _unknown(values, _ENTRY_KEYS, "precision entry")
        return cls(**values, keys=tuple(k for k in _ENTRY_KEYS if k in values))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "precision.layers") -> PrecisionEntry:
        if not isinstance(data, Mapping):
            msg = f"{source}: a layer entry must be a mapping"
            raise ConfigError(msg)
        _unknown(data, _ENTRY_KEYS, source)
        values: dict[str, Any] = {k: (_type(v, f"{source}.{k}") if k in _TYPE_KEYS else v) for k, v in data.items()}
        return cls(**values, keys=tuple(data))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.keys:
            v = getattr(self, k)
            out[k] = v.to_dict() if isinstance(v, FixedType) else v
        return out

    def replace(self, **changes: Any) -> PrecisionEntry:
        """A copy with ``changes``; keys not present before are added in the standard order."""
        keys = self.keys
        if not set(changes) <= set(keys):
            present = set(keys) | set(changes)
            keys = tuple(k for k in _ENTRY_KEYS if k in present)
        return dataclasses.replace(self, **changes, keys=keys)

    @property
    def has_weights(self) -> bool:
        return "weight" in self.keys


@dataclass(frozen=True)
class PrecisionRecord:
    """The per-layer fixed-point types of one network (see the module docstring)."""

    input: FixedType
    layers: Mapping[str, PrecisionEntry]
    format_version: int | None = None
    method: str | None = None
    network: str | None = None
    inputs: tuple[str, ...] | None = None
    input_sizes: tuple[int | None, ...] | None = None
    folded_batchnorm: tuple[str, ...] | None = None
    keys: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def make(cls, **values: Any) -> PrecisionRecord:
        """A record with exactly the keys given, written in the standard order."""
        _unknown(values, _RECORD_KEYS, "precision record")
        keys = tuple(k for k in _RECORD_KEYS if k in values)
        return cls(**_normalise(values), keys=keys)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "precision") -> PrecisionRecord:
        """Parse a record (``precision.json`` content); errors name ``source`` and the key."""
        if not isinstance(data, Mapping) or "input" not in data or "layers" not in data:
            msg = f"{source}: not a precision record (needs 'input' and 'layers')"
            raise ConfigError(msg)
        _unknown(data, _RECORD_KEYS, source)
        layers = data["layers"]
        if not isinstance(layers, Mapping):
            msg = f"{source}.layers: must be a mapping of layer name to entry"
            raise ConfigError(msg)
        values = dict(data)
        values["input"] = _type(data["input"], f"{source}.input")
        values["layers"] = {str(k): PrecisionEntry.from_dict(v, f"{source}.layers.{k}") for k, v in layers.items()}
        return cls(**_normalise(values), keys=tuple(data))

    @classmethod
    def from_json(cls, text: str, source: str = "precision.json") -> PrecisionRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            msg = f"{source}: not valid JSON ({err.msg} at line {err.lineno})"
            raise ConfigError(msg) from None
        return cls.from_dict(data, source)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record, with the keys (and key order) it was read or built with."""
        out: dict[str, Any] = {}
        for k in self.keys:
            v = getattr(self, k)
            if k == "input":
                out[k] = v.to_dict()
            elif k == "layers":
                out[k] = {name: e.to_dict() for name, e in v.items()}
            elif isinstance(v, tuple):
                out[k] = list(v)
            else:
                out[k] = v
        return out

    def replace(self, **changes: Any) -> PrecisionRecord:
        """A copy with ``changes``; keys not present before are appended."""
        keys = self.keys + tuple(k for k in changes if k not in self.keys)
        return dataclasses.replace(self, **_normalise(changes), keys=keys)

    def entry(self, name: str) -> PrecisionEntry | None:
        return self.layers.get(name)

    def weight_layers(self) -> Iterator[tuple[str, PrecisionEntry]]:
        """(name, entry) of every weight layer, in graph order."""
        return ((n, e) for n, e in self.layers.items() if e.has_weights)


def _normalise(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for k in ("inputs", "input_sizes", "folded_batchnorm"):
        if out.get(k) is not None:
            out[k] = tuple(out[k])
    return out


def find_precision_network(model: Any) -> tuple[str, Any, PrecisionRecord] | None:
    """``(path, inner network, record)`` of the first fixed-point network in ``model``, or None.

    A fixed-point network is any module with a ``precision`` attribute holding a
    :class:`PrecisionRecord` and the plain network as ``inner`` (as
    :class:`~simcompress.compress.fixed_point.modules.FixedPointNetwork`), so readers of the
    record need not import the module classes of compression.
    """
    for name, mod in model.named_modules():
        rec = getattr(mod, "precision", None)
        inner = getattr(mod, "inner", None)
        if isinstance(rec, PrecisionRecord) and inner is not None:
            return name, inner, rec
    return None
