"""Showers: geometries, shower data, the reference simulator and shower files.

The file readers/writers (:mod:`simcompress.showers.io`) and the reference simulator
(:mod:`simcompress.showers.reference`) import uproot/h5py/scipy only when used.
"""

from .data import ShowerSet
from .energies import EnergySpec, parse_energy_spec
from .geometry import Geometry, Layer, Material, Medium, builtin_geometries

__all__ = [
    "EnergySpec",
    "Geometry",
    "Layer",
    "Material",
    "Medium",
    "ShowerReader",
    "ShowerSet",
    "builtin_geometries",
    "iter_simulate",
    "open_showers",
    "parse_energy_spec",
    "simulate",
    "write_showers",
]

_LAZY = {
    "open_showers": ".io",
    "write_showers": ".io",
    "ShowerReader": ".io",
    "simulate": ".reference",
    "iter_simulate": ".reference",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(__all__)
