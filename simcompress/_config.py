"""Typed configuration: pydantic models that forbid unknown keys, loaded from YAML.

Every config class derives from :class:`StrictModel` (``extra="forbid"`` on every
nested model too, so a misspelled key is never dropped silently). Errors from
:func:`load_yaml` name the file, the dotted key path, the bad value and the
allowed keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError, did_you_mean

__all__ = ["StrictModel", "load_yaml", "parse_config", "read_yaml_mapping"]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every simcompress config: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk ``loc`` through nested pydantic models to find the one holding the last key."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        # unwrap list[X] / X | None / tuple[X, ...]
        args = getattr(ann, "__args__", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            current = ann
        elif args:
            sub = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            current = sub[0] if sub else None
        else:
            return None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def parse_config(model: type[M], data: Any, source: str = "<config>") -> M:
    """Validate ``data`` against ``model``; raise one-line :class:`ConfigError` naming ``source``."""
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first.get("loc", ()))
        where = _loc(loc)
        if first.get("type") == "extra_forbidden":
            owner = _model_at(model, loc)
            allowed = sorted(owner.model_fields) if owner else []
            key = str(loc[-1]) if loc else "?"
            msg = f"{source}: {where}: unknown key {key!r}; {did_you_mean(key, allowed)}"
        else:
            value = first.get("input")
            shown = repr(value)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            msg = f"{source}: {where}: {first.get('msg', 'invalid value')} (got {shown})"
        n_more = len(err.errors()) - 1
        if n_more:
            msg += f" [+{n_more} more problem{'s' if n_more > 1 else ''}]"
        raise ConfigError(msg) from None


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; clear errors for missing or malformed files."""
    p = Path(path)
    if not p.is_file():
        msg = f"{p}: config file not found"
        raise ConfigError(msg)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        msg = f"{p}:{where} not valid YAML ({getattr(err, 'problem', err)})"
        raise ConfigError(msg) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        msg = f"{p}: expected a mapping of keys at top level, got {type(data).__name__}"
        raise ConfigError(msg)
    return data


def load_yaml(model: type[M], path: str | os.PathLike[str]) -> M:
    """Load and validate a YAML config file against ``model``."""
    return parse_config(model, read_yaml_mapping(path), source=str(path))
