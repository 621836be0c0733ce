"""Exception classes of simcompress.

Each subclasses the matching builtin, so ``except ValueError`` keeps working,
and each carries a one-line message that names the file, key or layer at fault
and what is allowed (the uproot ``KeyInFileError`` habit).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BundleError",
    "ConfigError",
    "ExtrapolationError",
    "ExtrapolationWarning",
    "FidelityGateError",
    "GeometryError",
    "ShowerFileError",
    "SimcompressError",
    "UnknownNameError",
    "UnsupportedLayerError",
    "did_you_mean",
]


class SimcompressError(Exception):
    """Base class of every error raised on purpose by simcompress."""


class ConfigError(SimcompressError, ValueError):
    """A configuration (YAML file, CLI option, typed config) is invalid."""


class UnknownNameError(SimcompressError, KeyError):
    """A name (geometry, method, generator, preset) is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ShowerFileError(SimcompressError, ValueError):
    """A shower file is missing, unreadable, truncated or inconsistent."""


class GeometryError(SimcompressError, ValueError):
    """A geometry description is invalid or does not match the data."""


class BundleError(SimcompressError, ValueError):
    """A model bundle is incomplete, corrupt or inconsistent with its config."""


class UnsupportedLayerError(SimcompressError, TypeError):
    """A layer or pattern cannot be handled exactly; never skipped silently."""


class UnknownArgumentError(SimcompressError, TypeError):
    """A keyword argument no receiver accepts (e.g. a misspelled ``calibraton=`` to ``compress()``)."""


class ExtrapolationError(ConfigError):
    """Incident energies outside a generator's trained range, refused because ``strict`` was asked."""


class ExtrapolationWarning(UserWarning):
    """Incident energies outside a generator's trained range: the model extrapolates there."""


class FidelityGateError(SimcompressError, RuntimeError):
    """A fidelity gate failed; ``.result`` carries the failing metrics."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``"did you mean 'x'? known: a, b, c"`` for an unknown ``name``."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known: {', '.join(known) if known else '(none)'}"
