"""Layer images: the mean (or a single) shower drawn layer by layer, for any geometry.

Cartesian layers are drawn as their cell grids (x, y in mm, equal aspect), cylindrical
layers as polar (alpha, r) meshes with a log-like radius, both on one shared log colour
scale so samples can be compared by eye. Used by ``simcompress plot-layers`` and the
validation report.

Example:
    >>> from simcompress.showers.reference import simulate
    >>> from simcompress.showers.plots import layer_images_figure
    >>> s = simulate("calogan", 50, energies="fixed:10000", seed=1, progress=False)
    >>> fig = layer_images_figure({"GFlash": s.showers.mean(axis=0)}, s.geometry)
    >>> len(fig.axes)  # 3 layers + colour bar
    4
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path
from ..errors import ConfigError
from .geometry import Geometry

__all__ = ["layer_images_figure", "mean_images", "save_layer_images"]


def mean_images(readers: dict[str, Any], stop: int | None = None) -> dict[str, np.ndarray]:
    """Mean shower image (flat (V,), MeV) of each reader / ShowerSet, streamed in chunks."""
    from .data import ShowerSet

    out: dict[str, np.ndarray] = {}
    for name, src in readers.items():
        chunks = src.iter_chunks() if isinstance(src, ShowerSet) else src.iterate(stop=stop)
        total, n = None, 0
        for c in chunks:
            part = c.showers.sum(axis=0, dtype=np.float64)
            total = part if total is None else total + part
            n += len(c)
            if stop is not None and n >= stop:
                break
        out[name] = total / max(n, 1) if total is not None else np.zeros(0)
    return out


def layer_images_figure(
    images: dict[str, np.ndarray], geometry: Geometry, layers: list[int] | None = None, max_layers: int = 8,
    cmap: str = "viridis",
) -> Any:
    """A matplotlib figure: one row per sample, one column per layer, shared log colour scale.

    Args:
        images: name -> flat voxel energies (V,) in MeV (e.g. the mean shower).
        geometry: their geometry.
        layers: layer indices to draw (default: all, or ``max_layers`` evenly spread).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    g = geometry
    for name, img in images.items():
        if np.asarray(img).shape != (g.n_voxels,):
            msg = f"image {name!r}: {np.asarray(img).size} values but geometry {g.name!r} has {g.n_voxels} voxels"
            raise ConfigError(msg)
    if layers is None:
        layers = list(range(g.n_layers))
        if len(layers) > max_layers:
            layers = sorted(set(np.linspace(0, g.n_layers - 1, max_layers).round().astype(int).tolist()))
    pos = np.concatenate([np.asarray(v)[np.asarray(v) > 0] for v in images.values()]) if images else np.zeros(0)
    vmin = max(float(np.quantile(pos, 0.01)) if pos.size else 1e-3, 1e-6)
    vmax = float(pos.max()) if pos.size else 1.0
    norm = LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10))
    nrow, ncol = len(images), len(layers)
    fig = plt.figure(figsize=(2.8 * ncol + 1.0, 2.6 * nrow))
    mesh = None
    for r_i, (name, img) in enumerate(images.items()):
        for c_i, li in enumerate(layers):
            layer = g.layers[li]
            view = np.asarray(img, dtype=np.float64)[g.layer_slices[li]].reshape(layer.shape)
            if layer.kind == "cartesian":
                ax = fig.add_subplot(nrow, ncol, r_i * ncol + c_i + 1)
                mesh = ax.pcolormesh(np.asarray(layer.x_edges_mm), np.asarray(layer.y_edges_mm),
                                     np.clip(view, vmin, None), norm=norm, cmap=cmap)
                ax.set_aspect("equal")
                ax.tick_params(labelsize=7)
                if r_i == nrow - 1:
                    ax.set_xlabel("x [mm]", fontsize=8)
                if c_i == 0:
                    ax.set_ylabel(f"{name}\ny [mm]", fontsize=8)
            else:
                ax = fig.add_subplot(nrow, ncol, r_i * ncol + c_i + 1, projection="polar")
                sub = max(1, 64 // layer.n_alpha)  # polar quads have straight edges: split wide alpha bins
                a_edges = np.linspace(-np.pi, np.pi, layer.n_alpha * sub + 1)
                r_edges = np.log1p(np.asarray(layer.r_edges_mm, dtype=float))
                mesh = ax.pcolormesh(a_edges, r_edges, np.clip(np.repeat(view, sub, axis=0).T, vmin, None),
                                     norm=norm, cmap=cmap)
                ax.set_xticks([])
                ax.set_yticks([])
                if c_i == 0:
                    ax.text(-0.15, 0.5, name, transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=9)
            if r_i == 0:
                ax.set_title(f"layer {layer.id} ({layer.shape[0]}x{layer.shape[1]})", fontsize=9)
    if mesh is not None:
        cb = fig.colorbar(mesh, ax=fig.axes, shrink=0.8)
        cb.set_label("energy per cell [MeV]", fontsize=9)
    return fig


def save_layer_images(path: str | os.PathLike[str], images: dict[str, np.ndarray], geometry: Geometry, **kwargs: Any) -> Path:
    """Draw :func:`layer_images_figure` and write it (PNG/PDF/SVG from the suffix) atomically."""
    import matplotlib.pyplot as plt

    p = Path(path)
    fig = layer_images_figure(images, geometry, **kwargs)
    try:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=110, format=p.suffix[1:].lower() or None)  # the temporary name ends in .part
    finally:
        plt.close(fig)
    return p
