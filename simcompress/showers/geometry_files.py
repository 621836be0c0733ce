"""Reading geometry descriptions: the dict/YAML schema (cylindrical and Cartesian layers, 3-D grids) and
CaloChallenge binning XML. :class:`~simcompress.showers.geometry.Geometry`'s ``from_dict``, ``from_yaml``
and ``from_xml`` call these; every problem is a one-line :class:`~simcompress.errors.GeometryError` naming
the file and key.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryError, did_you_mean
from .geometry import Geometry, Layer, Material, Medium

__all__ = ["geometry_from_dict", "geometry_from_xml", "geometry_from_yaml"]


def geometry_from_dict(cls: type[Geometry], d: dict[str, Any], source: str = "<dict>") -> Geometry:
    """Geometry from its dict/YAML description.

    Cylindrical layers: ``{id, r_edges_mm, n_alpha, depth_x0}``. Cartesian layers:
    ``{id, x_edges_mm, y_edges_mm}`` or ``{id, nx, ny, cell_x_mm, cell_y_mm}`` (a grid centred
    on the shower axis), with ``depth_x0: [start, end]`` or ``thickness_mm`` (layers stacked in
    order, converted with the material's X0). A 3-D voxel grid: top-level
    ``grid: {nx, ny, nz, cell_x_mm, cell_y_mm, layer_x0}`` instead of ``layers``.
    """
    allowed = {"name", "particle", "description", "layers", "material", "overflow_values", "grid"}
    extra = set(d) - allowed
    if extra:
        key = min(extra)
        msg = f"{source}: unknown key {key!r}; {did_you_mean(key, allowed)}"
        raise GeometryError(msg)
    layer_keys = ["id", "r_edges_mm", "n_alpha", "depth_x0", "x_edges_mm", "y_edges_mm", "nx", "ny",
                  "cell_x_mm", "cell_y_mm", "thickness_mm"]
    try:
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
        layer_dicts = d.get("layers")
        if d.get("grid") is not None:
            if layer_dicts:
                msg = f"{source}: give either 'grid' or 'layers', not both"
                raise GeometryError(msg)
            layer_dicts = _grid_layers(dict(d["grid"]), source)
        if not layer_dicts:
            msg = f"{source}: no layers (give 'layers' or 'grid')"
            raise GeometryError(msg)
        layers = []
        depth_mm = 0.0
        for i, ld in enumerate(layer_dicts):
            lextra = set(ld) - set(layer_keys)
            if lextra:
                key = min(lextra)
                msg = f"{source}: layers[{i}]: unknown key {key!r}; {did_you_mean(key, layer_keys)}"
                raise GeometryError(msg)
            depth = tuple(float(x) for x in ld.get("depth_x0", (0.0, 0.0)))
            if "thickness_mm" in ld:
                if material is None:
                    msg = f"{source}: layers[{i}]: thickness_mm needs a material (for X0)"
                    raise GeometryError(msg)
                t = float(ld["thickness_mm"])
                depth = (depth_mm / material.x0_mm, (depth_mm + t) / material.x0_mm)
                depth_mm += t
            cart = [k for k in ("x_edges_mm", "y_edges_mm", "nx", "ny", "cell_x_mm", "cell_y_mm") if k in ld]
            if cart:
                if "r_edges_mm" in ld or "n_alpha" in ld:
                    msg = f"{source}: layers[{i}]: give r_edges_mm/n_alpha or a grid, not both"
                    raise GeometryError(msg)
                xe = _axis_edges(ld, "x", source, i)
                ye = _axis_edges(ld, "y", source, i)
                layers.append(Layer.cartesian(int(ld.get("id", i)), xe, ye, depth))  # type: ignore[arg-type]
            else:
                layers.append(
                    Layer(
                        id=int(ld["id"]),
                        r_edges_mm=tuple(float(x) for x in ld["r_edges_mm"]),
                        n_alpha=int(ld["n_alpha"]),
                        depth_x0=depth,  # type: ignore[arg-type]
                    )
                )
    except GeometryError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        msg = f"{source}: invalid geometry description ({type(err).__name__}: {err})"
        raise GeometryError(msg) from None
    return cls(
        name=str(d.get("name", "custom")),
        layers=tuple(layers),
        material=material,
        particle=str(d.get("particle", "photon")),
        description=str(d.get("description", "")),
        source=source,
        overflow_values=int(d.get("overflow_values", 0)),
    )


def geometry_from_yaml(cls: type[Geometry], path: str | os.PathLike[str]) -> Geometry:
    """Geometry from a YAML file in the :meth:`Geometry.from_dict` schema."""
    import yaml

    p = Path(path)
    if not p.is_file():
        msg = f"{p}: geometry file not found"
        raise GeometryError(msg)
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict):
        msg = f"{p}: expected a mapping at top level"
        raise GeometryError(msg)
    return cls.from_dict(data, source=str(p))


def geometry_from_xml(
    cls: type[Geometry],
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
        msg = f"{p}: binning file not found"
        raise GeometryError(msg)
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as err:
        msg = f"{p}: not a valid binning XML file ({err})"
        raise GeometryError(msg) from None
    bins = root.findall("Bin") if root.tag == "Bins" else ([root] if root.tag == "Bin" else [])
    if not bins:
        msg = f"{p}: no <Bin> element under <Bins>"
        raise GeometryError(msg)
    if particle is None and len(bins) > 1:
        msg = f"{p}: several <Bin> elements; pass particle= one of {[b.get('name') for b in bins]}"
        raise GeometryError(msg)
    b = bins[0] if particle is None else next((x for x in bins if x.get("name") == particle), None)
    if b is None:
        msg = f"{p}: no <Bin name={particle!r}>; available: {[x.get('name') for x in bins]}"
        raise GeometryError(msg)
    layers: list[Layer] = []
    for el in b.findall("Layer"):
        try:
            edges = tuple(float(x) for x in el.get("r_edges", "").split(","))
            n_alpha = int(el.get("n_bin_alpha", "1"))
            lid = int(el.get("id", str(len(layers))))
        except ValueError as err:
            msg = f"{p}: layer {el.get('id')}: bad attribute ({err})"
            raise GeometryError(msg) from None
        if len(edges) < 2:
            continue
        layers.append(Layer(id=lid, r_edges_mm=edges, n_alpha=n_alpha))
    if depth_x0 is not None:
        if len(depth_x0) != len(layers):
            msg = f"{p}: {len(layers)} non-empty layers but {len(depth_x0)} depth ranges given"
            raise GeometryError(msg)
        layers = [Layer(l.id, l.r_edges_mm, l.n_alpha, tuple(d)) for l, d in zip(layers, depth_x0, strict=False)]  # type: ignore[arg-type]
    return cls(
        name=name or p.stem,
        layers=tuple(layers),
        material=material,
        particle=b.get("name", "photon") or "photon",
        source=str(p),
    )


def _axis_edges(ld: dict[str, Any], axis: str, source: str, i: int) -> list[float]:
    """Cell edges along ``axis`` from ``<axis>_edges_mm`` or ``n<axis>`` + ``cell_<axis>_mm`` (centred on 0)."""
    if f"{axis}_edges_mm" in ld:
        return [float(v) for v in ld[f"{axis}_edges_mm"]]
    if f"n{axis}" not in ld or f"cell_{axis}_mm" not in ld:
        msg = f"{source}: layers[{i}]: a grid layer needs {axis}_edges_mm or n{axis} and cell_{axis}_mm"
        raise GeometryError(msg)
    n, c = int(ld[f"n{axis}"]), float(ld[f"cell_{axis}_mm"])
    if n < 1 or not c > 0:
        msg = f"{source}: layers[{i}]: n{axis} must be >= 1 and cell_{axis}_mm > 0"
        raise GeometryError(msg)
    return ((np.arange(n + 1, dtype=np.float64) - n / 2.0) * c).tolist()  # symmetric about the axis


def _grid_layers(g: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """Layer dicts of a 3-D voxel grid: ``nz`` layers of ``ny`` x ``nx`` cells, ``layer_x0`` deep each."""
    keys = ["nx", "ny", "nz", "cell_x_mm", "cell_y_mm", "layer_x0"]
    extra = set(g) - set(keys)
    if extra:
        key = min(extra)
        msg = f"{source}: grid: unknown key {key!r}; {did_you_mean(key, keys)}"
        raise GeometryError(msg)
    missing = [k for k in keys if k not in g]
    if missing:
        msg = f"{source}: grid: missing key {missing[0]!r} (needs {', '.join(keys)})"
        raise GeometryError(msg)
    nz, dz = int(g["nz"]), float(g["layer_x0"])
    if nz < 1 or not dz > 0:
        msg = f"{source}: grid: nz must be >= 1 and layer_x0 > 0"
        raise GeometryError(msg)
    return [
        {"id": k, "nx": g["nx"], "ny": g["ny"], "cell_x_mm": g["cell_x_mm"], "cell_y_mm": g["cell_y_mm"],
         "depth_x0": [k * dz, (k + 1) * dz]}
        for k in range(nz)
    ]
