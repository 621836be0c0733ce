"""Helpers shared by the built-in methods: target selection, calibration runs,
trainer calls, layer records and the verification probe."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import ConfigError, UnsupportedLayerError
from ..accounting import count_params, storage_bits
from ..base import LayerRecord, MethodConfig, select_modules
from ..modules import Layer, base_type

__all__ = [
    "ALL_LAYER_TYPES",
    "LAYER_TYPES",
    "collect_outputs",
    "get_module",
    "output_axis",
    "record",
    "require_trainer",
    "run_calibration",
    "set_module",
    "targets",
]

LAYER_TYPES: dict[str, type[nn.Module]] = {
    "Linear": nn.Linear,
    "Conv1d": nn.Conv1d,
    "Conv2d": nn.Conv2d,
    "Conv3d": nn.Conv3d,
    "ConvTranspose1d": nn.ConvTranspose1d,
    "ConvTranspose2d": nn.ConvTranspose2d,
    "ConvTranspose3d": nn.ConvTranspose3d,
}
#: default ``types`` of the weight-only methods (pruning, quantization): every layer type above
ALL_LAYER_TYPES: tuple[str, ...] = tuple(LAYER_TYPES)
CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def output_axis(mod: nn.Module) -> int:
    """Axis of the output channels in ``mod.weight`` (1 for transposed convolutions, else 0)."""
    return 1 if isinstance(mod, CONV_TRANSPOSE) else 0


def types_from_names(names: Iterable[str], allowed: dict[str, type[nn.Module]], method: str) -> tuple[type[nn.Module], ...]:
    out = []
    for n in names:
        if n not in allowed:
            msg = f"method {method!r} cannot handle layer type {n!r}; supported: {', '.join(sorted(allowed))}"
            raise UnsupportedLayerError(msg)
        out.append(allowed[n])
    return tuple(out)


def targets(
    model: nn.Module, config: MethodConfig, types: tuple[type[nn.Module], ...], subclasses: bool = False
) -> list[tuple[str, Layer]]:
    """Selected layers (ConfigError when none match).

    ``subclasses=False`` (structural methods: factorizing, shrinking) takes exact types
    only: a subclass with its own forward (e.g. a MADE ``MaskedLinear``) would lose its
    maths; see :func:`skipped_subclasses`. Weight-only methods (quantizers, masks, LoRA)
    act through ``module.weight`` and accept subclasses.
    """
    found = [
        (n, m) for n, m in select_modules(model, config, types)
        if (subclasses or base_type(m) in types) and "parametrizations" not in n.split(".")
    ]
    if _is_generator(model):  # a shower generator: only its sampling network is compressed
        found = [(n, m) for n, m in found if n.startswith("network.")]
    if not found:
        names = ", ".join(t.__name__ for t in types)
        msg = f"method {config.method!r}: no {names} layer matches include={list(config.include)} exclude={list(config.exclude)}"
        raise ConfigError(
            msg
        )
    return found


def skipped_subclasses(model: nn.Module, config: MethodConfig, types: tuple[type[nn.Module], ...], kind: str) -> list[LayerRecord]:
    """Records for selected layers that subclass a target type but are not one (kept unchanged, said so)."""
    recs = []
    for n, m in select_modules(model, config, types):
        if base_type(m) in types or "parametrizations" in n.split("."):
            continue
        if _is_generator(model) and not n.startswith("network."):
            continue
        recs.append(record(n, kind, m, m, kept=True,
                           note=f"{base_type(m).__name__} subclasses a supported layer but has its own forward; a {kind} of it would change its maths"))
    return recs


def _is_generator(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("sample", "network", "condition", "latent_dim"))


Calibration = Callable[[nn.Module], Any] | Tensor | tuple[Tensor, ...] | list[Any]


def _flatten(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    return []


def run_calibration(model: nn.Module, calibration: Any) -> list[Tensor]:
    """Run the calibration data through ``model``; returns its outputs (tensors, flattened).

    ``calibration`` is a callable ``(model) -> outputs`` (e.g. ``lambda m: m.network(z, c)``),
    one input tensor, a tuple of input tensors (one batch, several arguments), or a list
    of such batches.
    """
    if calibration is None:
        msg = "this method needs calibration data: pass calibration=<callable(model) | tensor | tuple | list of batches>"
        raise ConfigError(msg)
    outs: list[Tensor] = []
    with torch.no_grad():
        if callable(calibration):
            outs += _flatten(calibration(model))
        elif isinstance(calibration, Tensor):
            outs += _flatten(model(calibration))
        elif isinstance(calibration, tuple):
            outs += _flatten(model(*calibration))
        elif isinstance(calibration, list):
            for batch in calibration:
                outs += run_calibration(model, batch)
        else:
            msg = f"unsupported calibration data of type {type(calibration).__name__}"
            raise ConfigError(msg)
    return outs


def collect_outputs(model: nn.Module, calibration: Any) -> Tensor:
    """All calibration outputs concatenated into one flat float64 vector (for sensitivity)."""
    outs = run_calibration(model, calibration)
    if not outs:
        msg = "calibration produced no tensor output"
        raise ConfigError(msg)
    return torch.cat([o.detach().reshape(-1).to(torch.float64) for o in outs])


Trainer = Callable[[nn.Module, int, float], Any]


def require_trainer(trainer: Trainer | None, method: str) -> Trainer:
    if trainer is None:
        msg = (
            f"method {method!r} trains the model: pass trainer=<callable(model, steps, lr)> "
            "(the pipeline passes its finetune callable)"
        )
        raise ConfigError(
            msg
        )
    return trainer


def record(name: str, kind: str, before: nn.Module, after: nn.Module, **details: Any) -> LayerRecord:
    return LayerRecord(
        name=name,
        kind=kind,
        params_before=count_params(before),
        params_after=count_params(after),
        bits_before=storage_bits(before),
        bits_after=storage_bits(after),
        details=details,
    )


def get_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``name``."""
    parent_name, _, child = name.rpartition(".")
    parent = get_module(model, parent_name)
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and child.isdigit():
        parent[int(child)] = new
    else:
        setattr(parent, child, new)
