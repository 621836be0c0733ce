"""Showers: geometries, shower data, the reference simulator and shower files."""

from .data import ShowerSet
from .geometry import Geometry, Layer, Material, Medium, builtin_geometries

__all__ = ["Geometry", "Layer", "Material", "Medium", "ShowerSet", "builtin_geometries"]
