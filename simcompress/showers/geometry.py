"""Calorimeter geometries: CaloChallenge cylinders and Cartesian grids.

A :class:`Geometry` is a list of readout layers, each with radial bin edges (mm)
and a number of angular bins, plus the longitudinal extent of each layer (in
radiation lengths) and the detector material that the reference simulator needs.
Voxels are flattened in CaloChallenge order: layer, then angle, then radius, so
``showers.reshape(N, n_alpha, n_r)`` restores one layer.

Built-in geometries are described in the project's own YAML files under
``configs/geometries/`` (``ds1-photons``, ``ds1-pions``, ``ds2``, ``ds3``).
:func:`Geometry.from_xml` reads the CaloChallenge binning XML format so users can
bring their own detector description.

**Cartesian detectors** (CaloGAN, 3DGAN, ECAL images): each layer is a grid of ``ny`` rows by
``nx`` columns of rectangular cells with ``x_edges_mm`` / ``y_edges_mm``; voxels are flattened
row by row (y outer, x inner), so ``layer_view`` gives ``(N, ny, nx)`` images, as CaloGAN's
``layer_0`` (3 x 96), ``layer_1`` (12 x 12), ``layer_2`` (12 x 6). A 3-D voxel grid is a stack
of such layers (``grid:`` in YAML). For Cartesian layers ``n_alpha`` is ``ny`` and ``n_r`` is
``nx``; ``voxel_x``/``voxel_y`` are the cell centres and ``voxel_r``/``voxel_alpha`` their
polar coordinates, so the features defined on x, y and r apply to both kinds. Built-in:
``calogan`` (504 cells, files with 507 carry 3 overflow cells) and ``grid-25`` (25 x 25 x 25).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryError, UnknownNameError, did_you_mean

__all__ = ["Geometry", "Layer", "Material", "Medium", "builtin_geometries"]


@dataclass(frozen=True)
class Medium:
    """One material: atomic number, mass number, density (g/cm3), radiation length (mm)."""

    name: str
    Z: float
    A: float
    density: float
    x0_mm: float

    @property
    def critical_energy_mev(self) -> float:
        """E_c = 2.66 (X0 Z / A)^1.1 MeV with X0 in g/cm2 (Grindhammer-Peters)."""
        x0_gcm2 = self.x0_mm / 10.0 * self.density
        return 2.66 * (x0_gcm2 * self.Z / self.A) ** 1.1


@dataclass(frozen=True)
class Material:
    """Detector material: homogeneous (``absorber`` only) or a sampling stack.

    For a sampling calorimeter, ``absorber_mm`` and ``active_mm`` are the
    thicknesses of one absorber/active pair and ``sampling_fraction`` the
    fraction of deposited energy seen by the active medium (showers are stored
    rescaled by its inverse, as in CaloChallenge).
    """

    kind: str  # "homogeneous" | "sampling"
    absorber: Medium
    active: Medium | None = None
    absorber_mm: float = 0.0
    active_mm: float = 0.0
    sampling_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("homogeneous", "sampling"):
            msg = f"material.kind: {self.kind!r} is not allowed; allowed: homogeneous, sampling"
            raise GeometryError(msg)
        if self.kind == "sampling" and (self.active is None or self.absorber_mm <= 0 or self.active_mm <= 0):
            msg = "material: a sampling calorimeter needs active, absorber_mm > 0 and active_mm > 0"
            raise GeometryError(msg)

    @property
    def x0_mm(self) -> float:
        """Effective radiation length (mm); for sampling stacks the GFlash mixture rule."""
        if self.kind == "homogeneous" or self.active is None:
            return self.absorber.x0_mm
        d = np.array([self.absorber_mm, self.active_mm])
        rho = np.array([self.absorber.density, self.active.density])
        x0 = np.array([self.absorber.x0_mm, self.active.x0_mm])
        w = d * rho / np.sum(d * rho)
        rho_eff = np.sum(d * rho) / np.sum(d)
        return float(1.0 / np.sum(w * rho_eff / (x0 * rho)))


@dataclass(frozen=True)
class Layer:
    """One readout layer: CaloChallenge layer id, depth (X0) and either radial edges (mm) and
    angular bins (cylindrical) or ``x_edges_mm`` / ``y_edges_mm`` (Cartesian grid; then
    ``n_alpha`` is the number of rows ``ny`` and ``r_edges_mm`` is ``(0, distance of the
    farthest corner from the axis)``, the radial range the layer covers)."""

    id: int
    r_edges_mm: tuple[float, ...]
    n_alpha: int
    depth_x0: tuple[float, float] = (0.0, 0.0)
    x_edges_mm: tuple[float, ...] = ()
    y_edges_mm: tuple[float, ...] = ()

    @classmethod
    def cartesian(
        cls, id: int, x_edges_mm: Any, y_edges_mm: Any, depth_x0: tuple[float, float] = (0.0, 0.0)
    ) -> Layer:
        """A grid layer of ``len(y_edges)-1`` rows by ``len(x_edges)-1`` columns."""
        xe = tuple(float(v) for v in x_edges_mm)
        ye = tuple(float(v) for v in y_edges_mm)
        return cls(id=int(id), r_edges_mm=_grid_r_range(xe, ye), n_alpha=max(len(ye) - 1, 0),
                   depth_x0=tuple(depth_x0), x_edges_mm=xe, y_edges_mm=ye)  # type: ignore[arg-type]

    @property
    def kind(self) -> str:
        """``"cartesian"`` or ``"cylindrical"``."""
        return "cartesian" if self.x_edges_mm else "cylindrical"

    @property
    def nx(self) -> int:
        """Columns of a Cartesian layer (radial bins of a cylindrical one)."""
        return len(self.x_edges_mm) - 1 if self.x_edges_mm else self.n_r

    @property
    def ny(self) -> int:
        """Rows of a Cartesian layer (angular bins of a cylindrical one)."""
        return self.n_alpha

    @property
    def n_r(self) -> int:
        if self.x_edges_mm:
            return len(self.x_edges_mm) - 1
        return len(self.r_edges_mm) - 1

    @property
    def n_voxels(self) -> int:
        return self.n_r * self.n_alpha

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of :meth:`Geometry.layer_view`: (n_alpha, n_r) or (ny, nx)."""
        return (self.n_alpha, self.n_r)

    @property
    def has_xy(self) -> bool:
        """Whether x/y centres and widths are defined (Cartesian, or more than one angular bin)."""
        return self.kind == "cartesian" or self.n_alpha > 1

    @property
    def profile_edges_mm(self) -> tuple[float, ...]:
        """Edges of the layer's 1-D profile bins: radial edges, or x edges for Cartesian layers."""
        return self.x_edges_mm if self.x_edges_mm else self.r_edges_mm

    def binning(self) -> dict[str, Any]:
        if self.kind == "cartesian":
            return {"id": self.id, "x_edges_mm": list(self.x_edges_mm), "y_edges_mm": list(self.y_edges_mm)}
        return {"id": self.id, "r_edges_mm": list(self.r_edges_mm), "n_alpha": self.n_alpha}


@dataclass(frozen=True)
class Geometry:
    """A calorimeter readout geometry (see module docstring)."""

    name: str
    layers: tuple[Layer, ...]
    material: Material | None = None
    particle: str = "photon"
    description: str = ""
    source: str = field(default="", compare=False)
    #: values per event that this detector's own files carry after the voxels (CaloGAN's Geant4
    #: output: one overflow cell per layer); the file reader drops them.
    overflow_values: int = 0

    def __post_init__(self) -> None:
        if not self.layers:
            msg = f"geometry {self.name!r}: no non-empty layers"
            raise GeometryError(msg)
        kinds = {layer.kind for layer in self.layers}
        if len(kinds) > 1:
            msg = f"geometry {self.name!r}: mixes cylindrical and Cartesian layers; use one kind"
            raise GeometryError(msg)
        for layer in self.layers:
            if layer.kind == "cartesian":
                for axis, e in (("x_edges_mm", layer.x_edges_mm), ("y_edges_mm", layer.y_edges_mm)):
                    edges = np.asarray(e)
                    if edges.size < 2 or np.any(np.diff(edges) <= 0) or not np.all(np.isfinite(edges)):
                        msg = f"geometry {self.name!r}, layer {layer.id}: {axis} must be at least 2 increasing values, got {list(e)}"
                        raise GeometryError(msg)
                if layer.r_edges_mm != _grid_r_range(layer.x_edges_mm, layer.y_edges_mm) or layer.n_alpha != len(layer.y_edges_mm) - 1:
                    msg = f"geometry {self.name!r}, layer {layer.id}: use Layer.cartesian() for grid layers"
                    raise GeometryError(msg)
            else:
                edges = np.asarray(layer.r_edges_mm)
                if layer.n_r < 1 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
                    msg = f"geometry {self.name!r}, layer {layer.id}: r_edges_mm must be increasing and >= 0, got {layer.r_edges_mm}"
                    raise GeometryError(msg)
                if layer.n_alpha < 1:
                    msg = f"geometry {self.name!r}, layer {layer.id}: n_alpha must be >= 1"
                    raise GeometryError(msg)
            if layer.depth_x0[1] < layer.depth_x0[0]:
                msg = f"geometry {self.name!r}, layer {layer.id}: depth_x0 must be [start, end] with end >= start"
                raise GeometryError(msg)
        if self.overflow_values < 0:
            msg = f"geometry {self.name!r}: overflow_values must be >= 0"
            raise GeometryError(msg)

    @property
    def kind(self) -> str:
        """``"cylindrical"`` (CaloChallenge) or ``"cartesian"`` (rectangular grids)."""
        return self.layers[0].kind

    # ------------------------------------------------------------------ sizes
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @cached_property
    def n_voxels(self) -> int:
        return sum(layer.n_voxels for layer in self.layers)

    @cached_property
    def layer_offsets(self) -> np.ndarray:
        """Start index of each layer in the flat voxel vector, plus the total at the end."""
        return np.concatenate([[0], np.cumsum([layer.n_voxels for layer in self.layers])]).astype(np.int64)

    @property
    def layer_slices(self) -> list[slice]:
        o = self.layer_offsets
        return [slice(int(o[i]), int(o[i + 1])) for i in range(self.n_layers)]

    @cached_property
    def voxel_layer(self) -> np.ndarray:
        """Layer index (0..n_layers-1, not the CaloChallenge id) of each voxel."""
        return np.repeat(np.arange(self.n_layers), [layer.n_voxels for layer in self.layers])

    # ------------------------------------------------------------ voxel centres
    @cached_property
    def _centres(self) -> dict[str, np.ndarray]:
        if self.kind == "cartesian":
            xs, ys, ia, ir = [], [], [], []
            for layer in self.layers:
                xe = np.asarray(layer.x_edges_mm, dtype=np.float64)
                ye = np.asarray(layer.y_edges_mm, dtype=np.float64)
                nx, ny = len(xe) - 1, len(ye) - 1
                # flattening order inside a layer: row (y) outer, column (x) inner
                xs.append(np.tile(0.5 * (xe[:-1] + xe[1:]), ny))
                ys.append(np.repeat(0.5 * (ye[:-1] + ye[1:]), nx))
                ia.append(np.repeat(np.arange(ny), nx))
                ir.append(np.tile(np.arange(nx), ny))
            x, y = np.concatenate(xs), np.concatenate(ys)
            return {"r": np.hypot(x, y), "alpha": np.arctan2(y, x), "x": x, "y": y,
                    "i_alpha": np.concatenate(ia), "i_r": np.concatenate(ir)}
        rs, als, ia, ir = [], [], [], []
        for layer in self.layers:
            edges = np.asarray(layer.r_edges_mm, dtype=np.float64)
            r_mid = 0.5 * (edges[:-1] + edges[1:])
            a_edges = np.linspace(-math.pi, math.pi, layer.n_alpha + 1)
            a_mid = 0.5 * (a_edges[:-1] + a_edges[1:]) if layer.n_alpha > 1 else np.zeros(1)
            # flattening order inside a layer: alpha outer, radius inner
            rs.append(np.tile(r_mid, layer.n_alpha))
            als.append(np.repeat(a_mid, layer.n_r))
            ia.append(np.repeat(np.arange(layer.n_alpha), layer.n_r))
            ir.append(np.tile(np.arange(layer.n_r), layer.n_alpha))
        r = np.concatenate(rs)
        alpha = np.concatenate(als)
        return {
            "r": r,
            "alpha": alpha,
            "x": r * np.cos(alpha),
            "y": r * np.sin(alpha),
            "i_alpha": np.concatenate(ia),
            "i_r": np.concatenate(ir),
        }

    @property
    def voxel_r(self) -> np.ndarray:
        """Radial bin centre of each voxel (mm)."""
        return self._centres["r"]

    @property
    def voxel_alpha(self) -> np.ndarray:
        """Angular bin centre of each voxel (rad, on [-pi, pi] like CaloChallenge's XMLHandler)."""
        return self._centres["alpha"]

    @property
    def voxel_x(self) -> np.ndarray:
        """x = r cos(alpha) of each voxel centre (mm); CaloChallenge's "eta" direction."""
        return self._centres["x"]

    @property
    def voxel_y(self) -> np.ndarray:
        """y = r sin(alpha) of each voxel centre (mm); CaloChallenge's "phi" direction."""
        return self._centres["y"]

    @property
    def voxel_i_alpha(self) -> np.ndarray:
        return self._centres["i_alpha"]

    @property
    def voxel_i_r(self) -> np.ndarray:
        return self._centres["i_r"]

    def depth_mm(self, layer_index: int) -> tuple[float, float]:
        """Depth range (mm) of a layer, from its depth in X0 and the material's X0."""
        x0 = self.material.x0_mm if self.material else float("nan")
        a, b = self.layers[layer_index].depth_x0
        return (a * x0, b * x0)

    def layer_view(self, showers: np.ndarray, layer_index: int) -> np.ndarray:
        """Return layer ``layer_index`` of flat ``showers`` (N, n_voxels) as (N, n_alpha, n_r);
        for a Cartesian layer that is the (N, ny, nx) image."""
        layer = self.layers[layer_index]
        return showers[..., self.layer_slices[layer_index]].reshape(*showers.shape[:-1], layer.n_alpha, layer.n_r)

    # ------------------------------------------------------------ identity
    def binning_dict(self) -> list[dict[str, Any]]:
        return [layer.binning() for layer in self.layers]

    @cached_property
    def fingerprint(self) -> str:
        """Short hash of the voxel binning only (what must match between two files)."""
        blob = json.dumps(self.binning_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def same_binning(self, other: Geometry) -> bool:
        return self.fingerprint == other.fingerprint

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "particle": self.particle,
            "description": self.description,
            "layers": [{**l.binning(), "depth_x0": list(l.depth_x0)} for l in self.layers],
        }
        if self.overflow_values:
            d["overflow_values"] = self.overflow_values
        if self.material is not None:
            m = self.material
            d["material"] = {
                "kind": m.kind,
                "absorber": vars(m.absorber).copy(),
                "active": vars(m.active).copy() if m.active else None,
                "absorber_mm": m.absorber_mm,
                "active_mm": m.active_mm,
                "sampling_fraction": m.sampling_fraction,
            }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> Geometry:
        """Geometry from its dict/YAML description.

        Cylindrical layers: ``{id, r_edges_mm, n_alpha, depth_x0}``. Cartesian layers:
        ``{id, x_edges_mm, y_edges_mm}`` or ``{id, nx, ny, cell_x_mm, cell_y_mm}`` (a grid centred
        on the shower axis), with ``depth_x0: [start, end]`` or ``thickness_mm`` (layers stacked in
        order, converted with the material's X0). A 3-D voxel grid: top-level
        ``grid: {nx, ny, nz, cell_x_mm, cell_y_mm, layer_x0}`` instead of ``layers``.
        """
        from .geometry_files import geometry_from_dict

        return geometry_from_dict(cls, d, source)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Geometry:
        """Geometry from a YAML file in the :meth:`from_dict` schema."""
        from .geometry_files import geometry_from_yaml

        return geometry_from_yaml(cls, path)

    @classmethod
    def from_xml(
        cls,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        particle: str | None = None,
        material: Material | None = None,
        depth_x0: list[tuple[float, float]] | None = None,
    ) -> Geometry:
        """Read a CaloChallenge binning XML file (``<Bins><Bin><Layer r_edges=.. n_bin_alpha=../>``).

        Layers with ``r_edges="0"`` are empty and skipped, as in CaloChallenge's
        ``XMLHandler``. The XML carries no material or depth; pass them, or take
        them from a built-in geometry with the same binning.
        """
        from .geometry_files import geometry_from_xml

        return geometry_from_xml(cls, path, name=name, particle=particle, material=material, depth_x0=depth_x0)

    @classmethod
    def from_name(cls, name: str) -> Geometry:
        """A built-in geometry (``ds1-photons``, ``ds1-pions``, ``ds2``, ``ds3``, ``calogan``, ``grid-25``) or a YAML/XML path."""
        if name.endswith((".yaml", ".yml")):
            return cls.from_yaml(name)
        if name.endswith(".xml"):
            return cls.from_xml(name)
        files = builtin_geometries()
        if name not in files:
            msg = f"unknown geometry {name!r}; {did_you_mean(name, files)}"
            raise UnknownNameError(msg)
        return _cached_builtin(name)

    def __repr__(self) -> str:
        return f"Geometry({self.name!r}, {self.n_layers} layers, {self.n_voxels} voxels)"


def _grid_r_range(xe: tuple[float, ...], ye: tuple[float, ...]) -> tuple[float, ...]:
    """(0, farthest corner's distance from the axis) of a grid layer, mm; () for no edges."""
    if len(xe) < 2 or len(ye) < 2:
        return ()
    return (0.0, float(math.hypot(max(abs(xe[0]), abs(xe[-1])), max(abs(ye[0]), abs(ye[-1])))))


def _geometry_dir() -> Path:
    return Path(str(resources.files("simcompress") / "_configs" / "geometries"))


def builtin_geometries() -> dict[str, Path]:
    """Names and files of the built-in geometries."""
    d = _geometry_dir()
    return {p.stem: p for p in sorted(d.glob("*.yaml"))}


_CACHE: dict[str, Geometry] = {}


def _cached_builtin(name: str) -> Geometry:
    if name not in _CACHE:
        _CACHE[name] = Geometry.from_yaml(builtin_geometries()[name])
    return _CACHE[name]
