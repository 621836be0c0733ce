"""A small generic registry: duplicate and unknown names are first-class errors,
third-party entries arrive through a Python entry-point group."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from .errors import ConfigError, UnknownNameError, did_you_mean

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Name -> object mapping with ``register``/``get``/``list`` and entry points."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.group = entry_point_group
        self._items: dict[str, T] = {}
        self._plugins_loaded = False

    def register(self, name: str, obj: T) -> T:
        if name in self._items and self._items[name] is not obj:
            msg = f"{self.kind} {name!r} is already registered"
            raise ConfigError(msg)
        self._items[name] = obj
        return obj

    def _load_plugins(self) -> None:
        if self._plugins_loaded or self.group is None:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            try:
                ep.load()  # importing the plugin module registers its entries
            except Exception as err:
                warnings.warn(f"could not load {self.kind} plugin {ep.name!r} ({ep.value}): {err}", stacklevel=2)

    def get(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            msg = f"unknown {self.kind} {name!r}; {did_you_mean(name, self._items)}"
            raise UnknownNameError(msg) from None

    def list(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())
