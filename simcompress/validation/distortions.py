"""Controlled distortions of reference showers, to check that a gate catches known defects.

* :func:`scale_energy`: every voxel times ``factor`` (an energy-scale miscalibration).
* :func:`widen_radially`: each layer's radial distribution stretched by ``factor`` around the
  shower axis (r -> factor * r), energy redistributed between radial bins and conserved.

Both act on :class:`~simcompress.showers.data.ShowerSet` chunks and return new ones.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..showers.data import ShowerSet
from ..showers.geometry import Geometry

__all__ = ["radial_stretch_matrix", "scale_energy", "widen_radially"]


def scale_energy(showers: ShowerSet, factor: float) -> ShowerSet:
    """Multiply every voxel energy by ``factor`` (incident energies unchanged)."""
    if not factor > 0:
        msg = f"energy scale factor must be > 0, got {factor!r}"
        raise ConfigError(msg)
    return ShowerSet(
        showers.incident_energy.copy(),
        showers.showers * np.float32(factor),
        showers.geometry,
        {**showers.metadata, "distortion": f"energy scale x{factor}"},
    )


def radial_stretch_matrix(r_edges_mm: np.ndarray | tuple[float, ...], factor: float) -> np.ndarray:
    """(n_r, n_r) matrix M with ``M[i, j]`` the fraction of bin i's energy that lands in bin j when
    r -> factor * r, energy uniform in r within a bin; what leaves the last bin stays in it."""
    if not factor > 0:
        msg = f"radial stretch factor must be > 0, got {factor!r}"
        raise ConfigError(msg)
    e = np.asarray(r_edges_mm, dtype=np.float64)
    n = e.size - 1
    m = np.zeros((n, n))
    for i in range(n):
        lo, hi = factor * e[i], factor * e[i + 1]
        for j in range(n):
            ov = min(hi, e[j + 1]) - max(lo, e[j])
            if ov > 0:
                m[i, j] = ov / (hi - lo)
        m[i, n - 1] += 1.0 - m[i].sum()  # beyond the outer edge: keep it in the outermost bin
    return m


def widen_radially(showers: ShowerSet, factor: float = 1.1) -> ShowerSet:
    """Stretch every layer's radial profile by ``factor`` (1.1 = a 10 % wider shower), conserving energy."""
    g: Geometry = showers.geometry
    out = showers.showers.astype(np.float64).copy()
    for li, layer in enumerate(g.layers):
        m = radial_stretch_matrix(layer.r_edges_mm, factor)
        view = g.layer_view(out, li)  # (N, n_alpha, n_r)
        out[:, g.layer_slices[li]] = (view @ m).reshape(out.shape[0], -1)
    return ShowerSet(
        showers.incident_energy.copy(),
        out.astype(np.float32),
        g,
        {**showers.metadata, "distortion": f"radial widening x{factor}"},
    )
