"""Core of the compression library: typed method configs, the method registry,
per-layer records and :func:`compress`.

A compression method is a typed config (a :class:`MethodConfig` subclass with a
``method`` class attribute naming it) plus one transform registered with
:func:`register_method`. The transform receives a *copy* of the model (never
the caller's object) and returns a :class:`CompressionResult`. Third-party
methods register themselves from a module listed in the ``simcompress.methods``
entry-point group.

``compress`` never imports physics: fidelity enters the pipeline as a
:class:`Gate` callable built by the caller (the CLI builds it from
``simcompress.validation``).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from torch import nn

from .._config import StrictModel, parse_config
from .._registry import Registry
from ..errors import ConfigError, UnknownArgumentError, did_you_mean
from .coverage import check_coverage, coverage_of, snapshot
from .parametrizations import clone_model

__all__ = [
    "METHODS",
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
    "select_modules",
]


class MethodConfig(StrictModel):
    """Base of every method config. Subclasses set ``method: ClassVar[str]``.

    ``include``/``exclude`` are fnmatch patterns on module names
    (``model.named_modules()``); ``types`` restricts targets by module class name.
    """

    method: ClassVar[str] = ""
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    #: refuse the step (UnsupportedLayerError) instead of warning when it leaves weight layers
    #: untouched that include/exclude/types did not exclude (see :mod:`simcompress.compress.coverage`)
    strict: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **self.model_dump(mode="json")}


@dataclass(frozen=True)
class LayerRecord:
    """What a method did to one layer (free-form ``details`` plus common counters)."""

    name: str
    kind: str
    params_before: int
    params_after: int
    bits_before: int
    bits_after: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "bits_before": self.bits_before,
            "bits_after": self.bits_after,
            "details": self.details,
        }


@dataclass(frozen=True)
class CompressionResult:
    """A new model and the record of what was done to it."""

    model: nn.Module
    config: MethodConfig
    layers: tuple[LayerRecord, ...] = ()
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def coverage(self) -> dict[str, Any] | None:
        """Which weight layers this step changed and which it left alone (``extra["coverage"]``)."""
        return self.extra.get("coverage")

    def report(self) -> dict[str, Any]:
        return {
            "method": self.config.method,
            "config": self.config.to_dict(),
            "seconds": self.seconds,
            "layers": [r.to_dict() for r in self.layers],
            **self.extra,
        }


@dataclass(frozen=True)
class GateResult:
    """Outcome of a fidelity gate: ``passed`` plus the metrics behind it."""

    passed: bool
    summary: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


class Gate(Protocol):
    """A fidelity gate: called on a model after each pipeline step."""

    def __call__(self, model: nn.Module) -> GateResult: ...


Transform = Callable[[nn.Module, Any], CompressionResult]


#: Keywords ``compress()`` and ``Pipeline.run`` hand to every transform: the run's context, not method options
#: (those are config fields). A transform reads those it uses and ignores the rest; a method needing another
#: one declares it with ``register_method(..., context=("name",))``. Any other keyword is refused, so a
#: misspelled ``calibraton=`` cannot silently run an uncalibrated quantization.
CONTEXT_KEYWORDS = frozenset({"calibration", "trainer", "gate", "reference"})


@dataclass(frozen=True)
class _Method:
    name: str
    config_cls: type[MethodConfig]
    transform: Transform
    context: frozenset[str] = CONTEXT_KEYWORDS


METHODS: Registry[_Method] = Registry("compression method", entry_point_group="simcompress.methods")


def register_method(config_cls: type[MethodConfig], *, context: Iterable[str] = ()) -> Callable[[Transform], Transform]:
    """Decorator: register ``transform(model_copy, config, **context) -> CompressionResult`` for ``config_cls``.

    ``context`` names keywords the transform accepts beyond :data:`CONTEXT_KEYWORDS`.
    """
    if not config_cls.method:
        msg = f"{config_cls.__name__} has no 'method' name"
        raise ConfigError(msg)

    def deco(fn: Transform) -> Transform:
        METHODS.register(config_cls.method, _Method(config_cls.method, config_cls, fn, CONTEXT_KEYWORDS | frozenset(context)))
        return fn

    return deco


def _ensure_builtin_methods() -> None:
    # importing the package registers the built-in methods
    from . import methods  # noqa: F401


def get_method(name: str) -> _Method:
    _ensure_builtin_methods()
    return METHODS.get(name)


def list_methods() -> list[str]:
    _ensure_builtin_methods()
    return METHODS.list()


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> MethodConfig:
    """Build a typed method config from ``{"method": name, **options}`` (an allowlist: only registered methods)."""
    if not isinstance(data, dict) or "method" not in data:
        msg = f"{source}: a step needs a 'method' key; known methods: {', '.join(list_methods())}"
        raise ConfigError(msg)
    body = dict(data)
    name = body.pop("method")
    try:
        m = get_method(str(name))
    except KeyError as err:
        msg = f"{source}.method: {err}"
        raise ConfigError(msg) from None
    return parse_config(m.config_cls, body, source=source)


def select_modules(
    model: nn.Module, config: MethodConfig, types: tuple[type[nn.Module], ...]
) -> Iterator[tuple[str, nn.Module]]:
    """Modules of ``types`` whose names match ``config.include`` and none of ``config.exclude``."""
    for name, mod in model.named_modules():
        if not isinstance(mod, types) or not name:
            continue
        if not any(fnmatch.fnmatchcase(name, p) for p in config.include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in config.exclude):
            continue
        yield name, mod


def compress(model: nn.Module, config: MethodConfig, *, strict: bool | None = None, **kwargs: Any) -> CompressionResult:
    """Apply one compression method to a copy of ``model``; the input is never mutated.

    Keyword arguments go to the method; the built-in ones read
    ``calibration=`` (a callable ``(model) -> outputs``, an input tensor, a tuple of inputs
    or a list of batches; for activation quantizers and output sensitivities) and
    ``trainer=`` (a callable ``(model, steps, lr)`` training in place; QAT, gradual pruning,
    LoRA), ``gate=`` and ``reference=`` (distillation), and ignore the rest of
    :data:`CONTEXT_KEYWORDS`. Any other keyword raises :class:`~simcompress.errors.UnknownArgumentError`
    naming the nearest known one.

    The result's ``extra["coverage"]`` (also :attr:`CompressionResult.coverage`) lists every
    weight layer in scope as changed or left alone, with its parameter share; layers the
    method could not handle and the user did not exclude raise a
    :class:`~simcompress.compress.coverage.CoverageWarning`, or, with ``strict=True`` (argument
    or config field), :class:`~simcompress.errors.UnsupportedLayerError`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from simcompress.compress import compress, config_from_dict
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> result = compress(model, config_from_dict({"method": "svd", "rank": 2}))
        >>> type(result.model[0]).__name__, [type(m).__name__ for m in result.model[0]]
        ('Factorized', ['Linear', 'Linear'])
        >>> isinstance(model[0], nn.Linear)  # the input is untouched
        True
    """
    if not isinstance(config, MethodConfig):
        msg = f"compress() needs a MethodConfig, got {type(config).__name__}"
        raise ConfigError(msg)
    m = get_method(config.method)
    if not isinstance(config, m.config_cls):
        msg = f"method {config.method!r} expects {m.config_cls.__name__}, got {type(config).__name__}"
        raise ConfigError(msg)
    unknown = sorted(set(kwargs) - m.context)
    if unknown:
        msg = (f"compress(): unknown keyword {unknown[0]!r} for method {config.method!r} (method options go in its config); "
               f"{did_you_mean(unknown[0], m.context)}")
        raise UnknownArgumentError(msg)
    work = clone_model(model)
    before = snapshot(work)
    t0 = time.perf_counter()
    result = m.transform(work, config, **kwargs)
    seconds = result.seconds or time.perf_counter() - t0
    extra = dict(result.extra)
    if extra.get("replaces_model"):
        extra["coverage"] = {"scope": "whole architecture", "replaced": True, "changed_share": 1.0, "not_handled_share": 0.0,
                             "changed": [], "left_alone": [], "total_params": before.total_params}
    else:
        cov = coverage_of(before, result.model, config, result.layers)
        extra["coverage"] = cov
        check_coverage(cov, config.method, bool(config.strict if strict is None else strict))
    return CompressionResult(result.model, result.config, result.layers, seconds, extra)

