"""A fast toy electromagnetic-shower model for tests and benchmarks of the validation code.

Not physics: a Gamma longitudinal profile over the layers' depths (in X0) with log-normal
event-by-event fluctuations, a Grindhammer-Peters-like radial CDF ``r^2 / (r^2 + R^2)``
with a per-event radius, a dipole asymmetry in alpha and Gamma voxel fluctuations. It has
the properties the metrics care about (energy dependence, correlations, zeros after the
threshold) and runs at millions of showers per minute. Use
``simcompress.showers.reference.simulate`` (GFlash) where physics matters.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammainc

from ..showers.data import ShowerSet
from ..showers.geometry import Geometry

__all__ = ["DS1_ENERGIES_MEV", "toy_showers"]

DS1_ENERGIES_MEV = 2.0 ** np.arange(8, 23)


def toy_showers(
    geometry: Geometry,
    n_events: int,
    seed: int = 0,
    energies: np.ndarray | None = None,
    width_scale: float = 1.0,
) -> ShowerSet:
    """``n_events`` toy showers; ``energies`` (MeV) per event, default uniform over the 15 ds1 energies."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    if energies is None:
        energies = rng.choice(DS1_ENERGIES_MEV, size=n_events)
    e = np.asarray(energies, dtype=np.float64).reshape(-1)
    n = e.size
    lny = np.log(e / 10.0)
    t_max = np.exp(np.log(np.maximum(lny - 0.5, 0.5)) + rng.normal(0, 0.12, n))
    alpha = 1.0 + np.exp(np.log(0.5 + 0.3 * lny) + rng.normal(0, 0.1, n))
    beta = (alpha - 1.0) / t_max
    out = np.zeros((n, geometry.n_voxels), dtype=np.float64)
    phi0 = rng.uniform(-np.pi, np.pi, n)
    asym = rng.uniform(0.0, 0.3, n)
    for li, layer in enumerate(geometry.layers):
        a, b = layer.depth_x0
        frac = gammainc(alpha, beta * b) - gammainc(alpha, beta * a)
        radius = width_scale * (8.0 + 2.0 * li + 0.3 * (a + b)) * np.exp(rng.normal(0, 0.1, n))
        edges = np.asarray(layer.r_edges_mm, dtype=np.float64)
        cdf = edges[None, :] ** 2 / (edges[None, :] ** 2 + radius[:, None] ** 2)
        rfrac = np.diff(cdf, axis=1)  # (n, n_r)
        if layer.n_alpha > 1:
            ac = -np.pi + (np.arange(layer.n_alpha) + 0.5) * 2 * np.pi / layer.n_alpha
            w = 1.0 + asym[:, None] * np.cos(ac[None, :] - phi0[:, None])
            w /= w.sum(axis=1, keepdims=True)
        else:
            w = np.ones((n, 1))
        vox = (e * frac)[:, None, None] * w[:, :, None] * rfrac[:, None, :]
        out[:, geometry.layer_slices[li]] = vox.reshape(n, -1)
    # stochastic voxel response: Gamma with mean E_vox and variance 0.5 MeV * E_vox
    pos = out > 1e-9
    out[pos] = rng.gamma(out[pos] / 0.5, 0.5)
    out[~pos] = 0.0
    return ShowerSet(e.astype(np.float32), out.astype(np.float32), geometry, {"generator": "toy", "seed": seed})
