"""Coverage of a compression step: which weight layers a method changed and which it left alone.

:func:`~simcompress.compress.base.compress` snapshots every weight layer in scope (the
``network`` of a shower generator, else the whole model) before the method runs and compares
after it: a layer is **changed** when it was replaced (factorized, wrapped), shrunk, got a new
parametrization (mask, quantizer, LoRA) or input quantizer or output cast, or when its effective
weight values differ. Every other weight layer is **left alone**, with the reason:

* ``excluded``: the user's ``include``/``exclude`` patterns or an explicit ``types:`` list left
  it out (a choice: no warning);
* ``kept``: the method looked at it and kept it on purpose (its record says why, e.g. "factors
  would not be smaller", "output layer: width kept"; no warning);
* ``not handled``: the method cannot act on it (its type is not one the method handles, or the
  method silently passed it by). This is a coverage gap: :class:`CoverageWarning` names the
  layers and their types, or, with ``strict=True``, the step is refused with
  :class:`~simcompress.errors.UnsupportedLayerError`.

A *weight layer* is a module holding a weight tensor of two or more dimensions (``Linear``, every
``Conv``/``ConvTranspose``, ``Embedding``, factor layers) or a ``TTLinear``; modules whose only
parameters are one-dimensional (batch norms, layer norms) are counted as "other parameters" and
never warned about. Shares are fractions of all parameters in scope (weights, biases and other
parameters together), so the figures add up over the whole model, not over the covered part.
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import UnsupportedLayerError
from .modules import Layer, TTLinear, base_type

__all__ = ["CoverageWarning", "Snapshot", "check_coverage", "coverage_lines", "coverage_of", "is_weight_layer", "snapshot"]


class CoverageWarning(UserWarning):
    """A compression method left weight layers untouched that the user did not exclude."""


def _is_generator(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("sample", "network", "condition", "latent_dim"))


def _effective(mod: nn.Module, tname: str) -> torch.Tensor | None:
    t = getattr(mod, tname, None)
    return t if isinstance(t, torch.Tensor) else None


def _own_params(mod: Layer) -> dict[str, torch.Tensor]:
    """Tensors the module itself computes with (parametrized ones by their effective value)."""
    out: dict[str, torch.Tensor] = {}
    if parametrize.is_parametrized(mod):
        for tname in mod.parametrizations:
            t = _effective(mod, tname)
            if t is not None:
                out[tname] = t
    for k, p in mod._parameters.items():
        if p is not None and k not in out:
            out[k] = p
    return out


def is_weight_layer(mod: nn.Module) -> bool:
    """A module with a >= 2-D weight of its own, or a tensor-train layer."""
    if isinstance(mod, TTLinear):
        return True
    w = _own_params(mod).get("weight")
    return w is not None and w.ndim >= 2


def _n_params(mod: nn.Module) -> int:
    if isinstance(mod, TTLinear):
        return sum(p.numel() for p in mod.parameters())
    return sum(t.numel() for t in _own_params(mod).values())


def _scope(model: nn.Module) -> tuple[str, nn.Module]:
    if _is_generator(model) and isinstance(getattr(model, "network", None), nn.Module):
        return "network.", cast(nn.Module, model.network)
    return "", model


def _modules_in_scope(model: nn.Module) -> list[tuple[str, nn.Module]]:
    prefix, root = _scope(model)
    out = []
    for name, mod in root.named_modules():
        if not name or "parametrizations" in name.split("."):
            continue
        if isinstance(mod, TTLinear) or _own_params(mod):
            out.append((prefix + name, mod))
    return out


@dataclass
class _Entry:
    name: str
    type: str
    params: int
    weight_layer: bool
    shapes: dict[str, tuple[int, ...]]
    values: dict[str, torch.Tensor]
    parametrizations: dict[str, list[str]]
    n_hooks: int
    input_quantizer: bool


@dataclass
class Snapshot:
    """The weight layers of a model before a method ran (keyed by module identity)."""

    entries: dict[int, _Entry]
    total_params: int


def _parametrization_names(mod: Layer) -> dict[str, list[str]]:
    if not parametrize.is_parametrized(mod):
        return {}
    return {t: [type(p).__name__ for p in plist] for t, plist in mod.parametrizations.items()}


def _entry(name: str, mod: nn.Module, with_values: bool) -> _Entry:
    tensors = _own_params(mod)
    return _Entry(
        name=name,
        type=base_type(mod).__name__,
        params=_n_params(mod),
        weight_layer=is_weight_layer(mod),
        shapes={k: tuple(v.shape) for k, v in tensors.items()},
        values={k: v.detach().clone() for k, v in tensors.items()} if with_values else {},
        parametrizations=_parametrization_names(mod),
        n_hooks=len(mod._forward_hooks) + len(mod._forward_pre_hooks),
        input_quantizer=getattr(mod, "input_quantizer", None) is not None,
    )


def snapshot(model: nn.Module) -> Snapshot:
    """Record the layers in scope (values cloned, so in-place changes are seen)."""
    with torch.no_grad():
        entries = {id(m): _entry(n, m, True) for n, m in _modules_in_scope(model)}
    return Snapshot(entries, sum(e.params for e in entries.values()))


def _changed(before: _Entry, after: _Entry) -> str | None:
    if before.type != after.type:
        return f"replaced by {after.type}"
    if before.shapes != after.shapes:
        return "shrunk" if after.params < before.params else "reshaped"
    if before.parametrizations != after.parametrizations:
        added = sorted({p for v in after.parametrizations.values() for p in v} - {p for v in before.parametrizations.values() for p in v})
        return "parametrized (" + ", ".join(added or ["changed parametrizations"]) + ")"
    if after.input_quantizer and not before.input_quantizer:
        return "input quantizer added"
    if after.n_hooks > before.n_hooks:
        return "output cast added"
    return None


def _user_excluded(name: str, mod_type: str, config: Any, prefix: str) -> str | None:
    include = tuple(getattr(config, "include", ("*",)))
    exclude = tuple(getattr(config, "exclude", ()))
    # methods that act on a sub-network match patterns on its local names, others on full names
    local = name[len(prefix):] if prefix and name.startswith(prefix) else name
    names = {name, local}
    net_path = getattr(config, "network", None)
    if isinstance(net_path, str) and net_path and name.startswith(net_path + "."):
        names.add(name[len(net_path) + 1:])
    if not any(fnmatch.fnmatchcase(n, p) for n in names for p in include):
        return f"not matched by include={list(include)}"
    if any(fnmatch.fnmatchcase(n, p) for n in names for p in exclude):
        return f"excluded by exclude={list(exclude)}"
    fields_set: set[str] = getattr(config, "model_fields_set", set())
    types = getattr(config, "types", None)
    if types is not None and "types" in fields_set and mod_type not in types:
        return f"type {mod_type} not in types={list(types)}"
    return None


def coverage_of(before: Snapshot, model: nn.Module, config: Any, records: tuple[Any, ...] = ()) -> dict[str, Any]:
    """Coverage section (JSON-ready) of one step: changed / kept / excluded / not handled layers."""
    prefix, _ = _scope(model)
    after_by_id = {id(m): (n, m) for n, m in _modules_in_scope(model)}
    kept_notes: dict[str, str] = {}
    for r in records:
        d = getattr(r, "details", {}) or {}
        if d.get("kept") or d.get("removed_units") == 0:
            kept_notes[r.name] = str(d.get("note") or "kept by the method")
    total = max(before.total_params, 1)
    changed, left = [], []
    with torch.no_grad():
        for key, b in before.entries.items():
            if not b.weight_layer:  # batch norms etc.: counted in other_params, never a gap
                continue
            now = after_by_id.get(key)
            row = {"name": b.name, "type": b.type, "params": b.params, "share": b.params / total}
            if now is None:
                changed.append({**row, "how": "replaced"})
                continue
            new_name, mod = now
            a = _entry(new_name, mod, False)
            how = _changed(b, a)
            if how is None:
                vals = _own_params(mod)
                if any(k not in vals or not torch.equal(vals[k].detach(), v) for k, v in b.values.items()):
                    how = "values changed"
            if how is not None:
                changed.append({**row, "how": how, **({"now": new_name} if new_name != b.name else {})})
                continue
            note = kept_notes.get(b.name) or kept_notes.get(new_name)
            excluded = _user_excluded(b.name, b.type, config, prefix)
            if excluded is not None:
                left.append({**row, "reason": "excluded", "note": excluded})
            elif note is not None:
                left.append({**row, "reason": "kept", "note": note})
            else:
                left.append({**row, "reason": "not handled",
                             "note": f"{getattr(config, 'method', '?')} does not act on this {b.type}"})
    weight_params = sum(e.params for e in before.entries.values() if e.weight_layer)
    return {
        "scope": "model.network" if prefix else "the whole model",
        "total_params": before.total_params,
        "weight_layers": sum(1 for e in before.entries.values() if e.weight_layer),
        "weight_params": weight_params,
        "other_params": before.total_params - weight_params,
        "changed": changed,
        "left_alone": left,
        "changed_share": sum(r["share"] for r in changed),
        "not_handled_share": sum(r["share"] for r in left if r["reason"] == "not handled"),
    }


def check_coverage(cov: dict[str, Any], method: str, strict: bool) -> None:
    """Warn (or, ``strict``, raise UnsupportedLayerError) when layers were not handled."""
    gaps = [r for r in cov["left_alone"] if r["reason"] == "not handled"]
    if not gaps:
        return
    names = ", ".join(f"{r['name']} ({r['type']}, {r['params']:,} params)" for r in gaps[:8]) + (" ..." if len(gaps) > 8 else "")
    msg = (f"{method}: left {len(gaps)} weight layer(s) untouched that were not excluded, "
           f"{100 * cov['not_handled_share']:.1f} % of the parameters: {names}; "
           "exclude them (exclude: [...]) or use a method that handles these layer types")
    if strict:
        raise UnsupportedLayerError(msg + " (strict=True)")
    warnings.warn(msg, CoverageWarning, stacklevel=3)


def coverage_lines(cov: dict[str, Any]) -> list[str]:
    """Markdown table rows of one step's coverage."""
    lines = ["| layer | type | params | share | status |", "|---|---|---|---|---|"]
    for r in cov["changed"]:
        lines.append(f"| {r['name']} | {r['type']} | {r['params']:,} | {100 * r['share']:.1f} % | changed: {r['how']} |")
    for r in cov["left_alone"]:
        lines.append(f"| {r['name']} | {r['type']} | {r['params']:,} | {100 * r['share']:.1f} % | left alone ({r['reason']}): {r['note']} |")
    return lines
