"""Calorimeter geometries in the CaloChallenge convention.

A :class:`Geometry` is a list of readout layers, each with radial bin edges (mm)
and a number of angular bins, plus the longitudinal extent of each layer (in
radiation lengths) and the detector material that the reference simulator needs.
Voxels are flattened in CaloChallenge order: layer, then angle, then radius, so
``showers.reshape(N, n_alpha, n_r)`` restores one layer.

Built-in geometries are described in the project's own YAML files under
``configs/geometries/`` (``ds1-photons``, ``ds1-pions``, ``ds2``, ``ds3``).
:func:`Geometry.from_xml` reads the CaloChallenge binning XML format so users can
bring their own detector description.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryError, UnknownNameError, did_you_mean

__all__ = ["Medium", "Material", "Layer", "Geometry", "builtin_geometries"]


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
            raise GeometryError(f"material.kind: {self.kind!r} is not allowed; allowed: homogeneous, sampling")
        if self.kind == "sampling" and (self.active is None or self.absorber_mm <= 0 or self.active_mm <= 0):
            raise GeometryError("material: a sampling calorimeter needs active, absorber_mm > 0 and active_mm > 0")

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
    """One readout layer: CaloChallenge layer id, radial edges (mm), angular bins, depth (X0)."""

    id: int
    r_edges_mm: tuple[float, ...]
    n_alpha: int
    depth_x0: tuple[float, float] = (0.0, 0.0)

    @property
    def n_r(self) -> int:
        return len(self.r_edges_mm) - 1

    @property
    def n_voxels(self) -> int:
        return self.n_r * self.n_alpha


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
            raise GeometryError(f"geometry {self.name!r}: no non-empty layers")
        for layer in self.layers:
            edges = np.asarray(layer.r_edges_mm)
            if layer.n_r < 1 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
                raise GeometryError(
                    f"geometry {self.name!r}, layer {layer.id}: r_edges_mm must be increasing and >= 0, got {layer.r_edges_mm}"
                )
            if layer.n_alpha < 1:
                raise GeometryError(f"geometry {self.name!r}, layer {layer.id}: n_alpha must be >= 1")
            if layer.depth_x0[1] < layer.depth_x0[0]:
                raise GeometryError(f"geometry {self.name!r}, layer {layer.id}: depth_x0 must be [start, end] with end >= start")

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
        """Return layer ``layer_index`` of flat ``showers`` (N, n_voxels) as (N, n_alpha, n_r)."""
        layer = self.layers[layer_index]
        return showers[..., self.layer_slices[layer_index]].reshape(*showers.shape[:-1], layer.n_alpha, layer.n_r)

    # ------------------------------------------------------------ identity
    def binning_dict(self) -> list[dict[str, Any]]:
        return [{"id": l.id, "r_edges_mm": list(l.r_edges_mm), "n_alpha": l.n_alpha} for l in self.layers]

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
            "layers": [
                {"id": l.id, "r_edges_mm": list(l.r_edges_mm), "n_alpha": l.n_alpha, "depth_x0": list(l.depth_x0)}
                for l in self.layers
            ],
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
        allowed = {"name", "particle", "description", "layers", "material", "overflow_values"}
        extra = set(d) - allowed
        if extra:
            key = sorted(extra)[0]
            raise GeometryError(f"{source}: unknown key {key!r}; {did_you_mean(key, allowed)}")
        try:
            layers = []
            for i, ld in enumerate(d["layers"]):
                lextra = set(ld) - {"id", "r_edges_mm", "n_alpha", "depth_x0"}
                if lextra:
                    key = sorted(lextra)[0]
                    raise GeometryError(
                        f"{source}: layers[{i}]: unknown key {key!r}; {did_you_mean(key, ['id', 'r_edges_mm', 'n_alpha', 'depth_x0'])}"
                    )
                layers.append(
                    Layer(
                        id=int(ld["id"]),
                        r_edges_mm=tuple(float(x) for x in ld["r_edges_mm"]),
                        n_alpha=int(ld["n_alpha"]),
                        depth_x0=tuple(float(x) for x in ld.get("depth_x0", (0.0, 0.0))),  # type: ignore[arg-type]
                    )
                )
            material = None
            if d.get("material"):
                md = dict(d["material"])
                material = Material(
                    kind=md["kind"],
                    absorber=Medium(**md["absorber"]),
                    active=Medium(**md["active"]) if md.get("active") else None,
                    absorber_mm=float(md.get("absorber_mm", 0.0)),
                    active_mm=float(md.get("active_mm", 0.0)),
                    sampling_fraction=float(md.get("sampling_fraction", 1.0)),
                )
        except GeometryError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise GeometryError(f"{source}: invalid geometry description ({type(err).__name__}: {err})") from None
        return cls(
            name=str(d.get("name", "custom")),
            layers=tuple(layers),
            material=material,
            particle=str(d.get("particle", "photon")),
            description=str(d.get("description", "")),
            source=source,
            overflow_values=int(d.get("overflow_values", 0)),
        )

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Geometry:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise GeometryError(f"{p}: geometry file not found")
        data = yaml.safe_load(p.read_text())
        if not isinstance(data, dict):
            raise GeometryError(f"{p}: expected a mapping at top level")
        return cls.from_dict(data, source=str(p))

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
        p = Path(path)
        if not p.is_file():
            raise GeometryError(f"{p}: binning file not found")
        try:
            root = ET.parse(p).getroot()
        except ET.ParseError as err:
            raise GeometryError(f"{p}: not a valid binning XML file ({err})") from None
        bins = root.findall("Bin") if root.tag == "Bins" else ([root] if root.tag == "Bin" else [])
        if not bins:
            raise GeometryError(f"{p}: no <Bin> element under <Bins>")
        if particle is None and len(bins) > 1:
            raise GeometryError(f"{p}: several <Bin> elements; pass particle= one of {[b.get('name') for b in bins]}")
        b = bins[0] if particle is None else next((x for x in bins if x.get("name") == particle), None)
        if b is None:
            raise GeometryError(f"{p}: no <Bin name={particle!r}>; available: {[x.get('name') for x in bins]}")
        layers = []
        for el in b.findall("Layer"):
            try:
                edges = tuple(float(x) for x in el.get("r_edges", "").split(","))
                n_alpha = int(el.get("n_bin_alpha", "1"))
                lid = int(el.get("id", str(len(layers))))
            except ValueError as err:
                raise GeometryError(f"{p}: layer {el.get('id')}: bad attribute ({err})") from None
            if len(edges) < 2:
                continue
            layers.append(Layer(id=lid, r_edges_mm=edges, n_alpha=n_alpha))
        if depth_x0 is not None:
            if len(depth_x0) != len(layers):
                raise GeometryError(f"{p}: {len(layers)} non-empty layers but {len(depth_x0)} depth ranges given")
            layers = [Layer(l.id, l.r_edges_mm, l.n_alpha, tuple(d)) for l, d in zip(layers, depth_x0)]  # type: ignore[arg-type]
        return cls(
            name=name or p.stem,
            layers=tuple(layers),
            material=material,
            particle=b.get("name", "photon") or "photon",
            source=str(p),
        )

    @classmethod
    def from_name(cls, name: str) -> Geometry:
        """A built-in geometry (``ds1-photons``, ``ds1-pions``, ``ds2``, ``ds3``) or a YAML/XML path."""
        if name.endswith((".yaml", ".yml")):
            return cls.from_yaml(name)
        if name.endswith(".xml"):
            return cls.from_xml(name)
        files = builtin_geometries()
        if name not in files:
            raise UnknownNameError(f"unknown geometry {name!r}; {did_you_mean(name, files)}")
        return _cached_builtin(name)

    def __repr__(self) -> str:
        return f"Geometry({self.name!r}, {self.n_layers} layers, {self.n_voxels} voxels)"


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
