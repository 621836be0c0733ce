"""simcompress: compress calorimeter fast-simulation generators, validate their
physics, build FPGA trigger firmware and generate showers in batch on clusters.

``import simcompress`` stays light: subpackages are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Geometry", "ShowerSet", "__version__", "compress", "load_generator", "open_showers"]


def __getattr__(name: str) -> Any:
    if name in ("Geometry", "ShowerSet"):
        from . import showers

        return getattr(showers, name)
    if name == "open_showers":
        from .showers.io import open_showers

        return open_showers
    if name == "load_generator":
        from .generators import load_generator

        return load_generator
    if name == "compress":
        from .compress import compress

        return compress
    msg = f"module 'simcompress' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(__all__)
