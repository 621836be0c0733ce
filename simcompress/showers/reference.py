"""Reference electromagnetic showers from the Grindhammer-Peters (GFlash) parametrisation.

This is the project's embedded stand-in for Geant4: a *parametrised electromagnetic*
shower simulator, good for producing training data and for measuring what compression
does to a generator. It is **not** Geant4, it has **no hadronic showers** (the
``ds1-pions`` geometry gets electromagnetic showers), and its voxel-to-voxel correlations
are only approximate: a classifier separates it from Geant4 easily.

Physics: the GFlash parametrisation in :mod:`simcompress.showers.gflash` (G. Grindhammer, S. Peters,
hep-ex/0001020; constants and algorithms from Geant4's GFlash).

Implementation: the simulator is vectorised over showers; it loops over readout layers
and over depth steps (``step_x0``, default 0.5 X0) inside a layer. Spots of one readout
layer are placed all at once: binning N independent spots with the same radial and
azimuthal distribution into voxels is exactly a multinomial draw over the voxels (plus
an overflow cell for ``r`` beyond the last edge, which is lost, i.e. lateral leakage),
so there is **no cap on the number of spots** and the cost does not grow with energy
(showers with fewer spots than voxels in a layer draw their spots one by one instead,
which has the same distribution and is cheaper).
The one approximation with respect to Geant4: all spots of one readout layer carry the
same energy (the layer energy over the layer's spot count), and their radial
distribution is the energy-weighted mixture of the step profiles inside the layer (exact
in the mean energy profile). Sampling fluctuations are drawn per voxel; because
independent Gamma variables with a common scale add up to a Gamma variable, the total
energy carries exactly the per-step GFlash fluctuation. Energy deposited before the
first layer, between layers, behind the last layer or beyond the outermost radial edge
is lost (leakage).

Determinism: events are simulated in fixed-size blocks, block ``k`` using
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(k,)))`` for its energies and
its showers. Results therefore depend only on ``(geometry, energies, seed, config)``,
not on ``chunk_size`` or ``n_events`` (the first n events of a longer run are the same).

Example:
    >>> from simcompress.showers.reference import simulate
    >>> s = simulate("ds1-photons", 200, energies="fixed:65536", seed=1, progress=False)
    >>> s.showers.shape
    (200, 368)
    >>> 0.9 < float(s.total_energy.mean() / 65536) < 1.05
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import gammainc

from .._progress import progress_bar
from ..errors import ConfigError, GeometryError
from .data import ShowerSet
from .energies import EnergySpec, parse_energy_spec
from .geometry import Geometry, Layer
from .gflash import (
    ALPHA_MIN,
    HOMO,
    PHOTON_CONVERSION_X0,
    SAMPLING,
    EffectiveMaterial,
    GFlashConfig,
    critical_energy_mev,
    effective_material,
    longitudinal_parameters,
    moliere_radius_mm,
    n_spots,
    radial_parameters,
    sample_longitudinal,
)

__all__ = [
    "EffectiveMaterial",
    "GFlashConfig",
    "block_size",
    "critical_energy_mev",
    "effective_material",
    "iter_simulate",
    "longitudinal_parameters",
    "moliere_radius_mm",
    "n_spots",
    "radial_parameters",
    "sample_longitudinal",
    "simulate",
]

log = logging.getLogger(__name__)

GENERATOR_NAME = "simcompress.showers.reference.gflash"
GENERATOR_VERSION = 1

def block_size(geometry: Geometry) -> int:
    """Events per RNG block for ``geometry`` (power of two, ~8 MB of float32 output per block)."""
    target = max(64, min(2048, (1 << 21) // max(geometry.n_voxels, 1)))
    return 1 << math.floor(math.log2(target))


# ----------------------------------------------------------------------------- simulator
@dataclass(frozen=True)
class _LayerPlan:
    index: int
    t_edges: np.ndarray  # (n_sub + 1,) depth boundaries, X0
    r_edges_rm: np.ndarray  # (n_r + 1,) radial edges in Molière radii (Cartesian: the fine annuli)
    n_alpha: int
    n_r: int
    #: Cartesian layers: (n_annuli, n_cells) fraction of each fine annulus's area in each cell
    overlap: np.ndarray | None = None


#: fine annuli for placing spots in a Cartesian layer: edges 0 and N_ANNULI geometric steps up to the
#: layer's farthest corner (the radial profile is integrated over each annulus, the annulus spread
#: over the cells by area)
N_ANNULI = 96


def _annulus_overlap(layer: Layer, r_edges_mm: np.ndarray, n_sub_r: int = 6, n_phi: int = 360) -> np.ndarray:
    """(n_annuli, ny * nx): share of each annulus's area falling in each cell of a grid layer.

    Area-uniform points (``n_sub_r`` radii x ``n_phi`` angles, offset half a step) per annulus;
    the remainder of a row (area outside the grid) is lateral leakage.
    """
    xe = np.asarray(layer.x_edges_mm, dtype=np.float64)
    ye = np.asarray(layer.y_edges_mm, dtype=np.float64)
    nx, ny = len(xe) - 1, len(ye) - 1
    lo2, hi2 = r_edges_mm[:-1] ** 2, r_edges_mm[1:] ** 2
    fr = (np.arange(n_sub_r) + 0.5) / n_sub_r
    r = np.sqrt(lo2[:, None] + (hi2 - lo2)[:, None] * fr[None, :])  # (n_annuli, n_sub_r)
    phi = (np.arange(n_phi) + 0.5) * (2.0 * math.pi / n_phi)
    x = r[:, :, None] * np.cos(phi)[None, None, :]
    y = r[:, :, None] * np.sin(phi)[None, None, :]
    ix = np.searchsorted(xe, x, side="right") - 1
    iy = np.searchsorted(ye, y, side="right") - 1
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    n_ann = len(r_edges_mm) - 1
    ann = np.broadcast_to(np.arange(n_ann)[:, None, None], x.shape)
    flat = ann[inside] * (nx * ny) + iy[inside] * nx + ix[inside]
    counts = np.bincount(flat, minlength=n_ann * nx * ny).reshape(n_ann, nx * ny)
    return counts / float(n_sub_r * n_phi)


def _plan(geometry: Geometry, eff: EffectiveMaterial, step_x0: float) -> list[_LayerPlan]:
    plans = []
    for i, layer in enumerate(geometry.layers):
        d0, d1 = layer.depth_x0
        if not d1 > d0:
            msg = (
                f"geometry {geometry.name!r}, layer {layer.id}: depth_x0 {list(layer.depth_x0)} has no thickness; "
                "the reference simulator needs [start, end] with end > start (X0)"
            )
            raise GeometryError(msg)
        n_sub = max(1, math.ceil((d1 - d0) / step_x0 - 1e-9))
        overlap = None
        if layer.kind == "cartesian":
            xe, ye = np.asarray(layer.x_edges_mm), np.asarray(layer.y_edges_mm)
            r_max = float(np.sqrt(max(xe[0] ** 2, xe[-1] ** 2) + max(ye[0] ** 2, ye[-1] ** 2)))
            cell = float(min(np.diff(xe).min(), np.diff(ye).min()))
            r_edges = np.concatenate([[0.0], np.geomspace(min(0.05 * cell, 0.01 * eff.rm_mm), r_max, N_ANNULI)])
            overlap = _annulus_overlap(layer, r_edges)
        else:
            r_edges = np.asarray(layer.r_edges_mm, dtype=np.float64)
        plans.append(
            _LayerPlan(
                index=i,
                t_edges=np.linspace(d0, d1, n_sub + 1),
                r_edges_rm=r_edges / eff.rm_mm,
                n_alpha=layer.n_alpha,
                n_r=layer.n_r,
                overlap=overlap,
            )
        )
    return plans


def _place_spots_grid(n_spots: np.ndarray, cdf: np.ndarray, overlap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Counts of spots per cell of a Cartesian layer, (n, n_cells): one multinomial per shower over
    the cells plus lateral leakage, with cell probabilities = annulus probabilities @ overlap."""
    q = np.diff(cdf, axis=1) @ overlap  # (n, k)
    k = q.shape[1]
    pvals = np.empty((len(q), k + 1))
    pvals[:, :k] = np.clip(q, 0.0, 1.0)
    pvals[:, k] = np.maximum(0.0, 1.0 - pvals[:, :k].sum(axis=1))
    pvals /= pvals.sum(axis=1, keepdims=True)
    return rng.multinomial(n_spots, pvals)[:, :k]


def _place_spots(n_spots: np.ndarray, cdf: np.ndarray, n_alpha: int, rng: np.random.Generator) -> np.ndarray:
    """Counts of spots per (alpha, r) voxel of one layer, (n, n_alpha * n_r), CaloChallenge order.

    ``cdf`` (n, n_r + 1) is each shower's radial CDF at the layer's edges; spots outside
    ``[r_0, r_max]`` are lost; the azimuth is uniform. Binning i.i.d. spots is exactly a
    multinomial draw, done two ways with the same distribution: showers with fewer spots
    than voxels draw each spot (inverse CDF; cost ~ spots), the others one multinomial over
    the voxels plus an overflow cell (cost ~ voxels, independent of the number of spots).
    """
    n, n_edges = cdf.shape
    n_r = n_edges - 1
    k = n_alpha * n_r
    counts = np.zeros((n, k), dtype=np.int64)
    few = n_spots < k
    rows = np.flatnonzero(few & (n_spots > 0))
    if rows.size:
        per = n_spots[rows]
        owner = np.repeat(np.arange(rows.size), per)
        u = rng.random(owner.size)
        # one searchsorted for all showers: row i's CDF (values in [0, 1]) shifted by 2 i is globally sorted
        shifted = (cdf[rows] + 2.0 * np.arange(rows.size)[:, None]).ravel()
        pos = np.searchsorted(shifted, u + 2.0 * owner, side="right")
        j = pos - owner * n_edges - 1  # radial bin; -1 inside r_0, n_r beyond r_max
        a = rng.integers(0, n_alpha, owner.size)
        keep = (j >= 0) & (j < n_r)
        flat = owner[keep] * k + a[keep] * n_r + j[keep]
        counts[rows] = np.bincount(flat, minlength=rows.size * k).reshape(rows.size, k)
    rows = np.flatnonzero(~few)
    if rows.size:
        q = np.diff(cdf[rows], axis=1) / n_alpha  # (m, n_r) probability per (alpha, r) cell
        m = rows.size
        pvals = np.empty((m, k + 1))
        pvals[:, :k] = np.broadcast_to(q[:, None, :], (m, n_alpha, n_r)).reshape(m, k)
        pvals[:, k] = np.maximum(0.0, 1.0 - pvals[:, :k].sum(axis=1))  # lateral leakage
        counts[rows] = rng.multinomial(n_spots[rows], pvals)[:, :k]
    return counts


def _simulate_block(
    energy: np.ndarray,
    eff: EffectiveMaterial,
    plans: list[_LayerPlan],
    offsets: np.ndarray,
    n_voxels: int,
    cfg: GFlashConfig,
    sampling_term: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Simulate one block of showers (vectorised over the block); returns (n, n_voxels) float32."""
    n = len(energy)
    out = np.zeros((n, n_voxels), dtype=np.float32)
    t_max, alpha, mean = sample_longitudinal(energy, eff, rng, cfg.fluctuations)
    beta = (alpha - 1.0) / t_max
    # spot profile (GFlash uses the homogeneous spot constants in both code paths)
    ts = t_max * (HOMO["spot_t1"] + HOMO["spot_t2"] * eff.Z)
    as_ = np.maximum(alpha * (HOMO["spot_a1"] + HOMO["spot_a2"] * eff.Z), ALPHA_MIN)
    bs = (as_ - 1.0) / ts
    nspot = n_spots(energy, eff) * cfg.spot_scale
    if cfg.max_spots is not None:
        nspot = np.minimum(nspot, cfg.max_spots)
    # tau correction of ComputeTau: (alpha-1)/alpha * <alpha>/(<alpha>-1)
    a_mean = mean["alpha"]
    tau_corr = (alpha - 1.0) / alpha * a_mean / np.maximum(a_mean - 1.0, 1e-6) / t_max
    # depth where the shower starts (photon conversion point), X0
    t0 = rng.exponential(PHOTON_CONVERSION_X0, n) if cfg.photon_conversion else np.zeros(n)
    for pl in plans:
        t_rel = np.maximum(pl.t_edges[None, :] - t0[:, None], 0.0)  # (n, n_sub+1) depth after the start
        frac = gammainc(alpha[:, None], beta[:, None] * t_rel)
        d_e = np.diff(frac, axis=1)  # (n, n_sub) energy fraction per step
        e_frac = d_e.sum(axis=1)
        e_layer = energy * e_frac
        ps = gammainc(as_[:, None], bs[:, None] * t_rel[:, [0, -1]])
        n_layer = np.floor(nspot * (ps[:, 1] - ps[:, 0]) + rng.random(n))
        n_layer = np.where(e_layer > 0, np.maximum(n_layer, 1.0), 0.0)
        # radial CDF at the layer's edges, energy-weighted over the steps inside the layer
        t_mid = 0.5 * (t_rel[:, 1:] + t_rel[:, :-1])
        tau = t_mid * tau_corr[:, None]  # (n, n_sub)
        rc, rt, wc = radial_parameters(energy[:, None], tau, eff)
        r2 = (pl.r_edges_rm**2)[None, None, :]
        cdf = wc[..., None] * r2 / (r2 + rc[..., None] ** 2) + (1.0 - wc[..., None]) * r2 / (r2 + rt[..., None] ** 2)
        w = d_e / np.where(e_frac > 0, e_frac, 1.0)[:, None]
        cdf = np.einsum("ns,nse->ne", w, cdf)
        if not np.all(e_frac > 0):  # a layer the shower never reaches: any valid distribution
            cdf[e_frac <= 0] = np.linspace(0.0, 1.0, len(pl.r_edges_rm))
        cdf = np.maximum.accumulate(np.clip(cdf, 0.0, 1.0), axis=1)
        if pl.overlap is not None:
            counts = _place_spots_grid(n_layer.astype(np.int64), cdf, pl.overlap, rng)
        else:
            counts = _place_spots(n_layer.astype(np.int64), cdf, pl.n_alpha, rng)
        e_spot = np.where(n_layer > 0, e_layer / np.maximum(n_layer, 1.0), 0.0)
        vox = counts * e_spot[:, None]
        if sampling_term > 0:
            theta = sampling_term**2 * 1000.0  # MeV: variance = s^2 E(GeV) GeV^2
            vox = rng.gamma(vox / theta, theta)
        out[:, offsets[pl.index] : offsets[pl.index + 1]] = vox
    return out


def _resolve(
    geometry: Geometry | str, energies: EnergySpec | str, config: GFlashConfig | dict[str, Any] | None
) -> tuple[Geometry, EnergySpec, GFlashConfig, EffectiveMaterial, float]:
    geo = geometry if isinstance(geometry, Geometry) else Geometry.from_name(str(geometry))
    if geo.material is None:
        msg = (
            f"geometry {geo.name!r} has no material description; the reference simulator needs one "
            "(a built-in geometry, or a YAML geometry with a 'material' section)"
        )
        raise GeometryError(msg)
    spec = parse_energy_spec(energies)
    if config is None:
        cfg = GFlashConfig()
    elif isinstance(config, GFlashConfig):
        cfg = config
    else:
        from .._config import parse_config

        cfg = parse_config(GFlashConfig, config, source="reference simulator config")
    eff = effective_material(geo.material)
    term = cfg.sampling_term if cfg.sampling_term is not None else (SAMPLING["sigma_samp"] if eff.is_sampling else 0.0)
    if geo.particle not in ("photon", "electron", "positron"):
        log.warning(
            "geometry %r is for %ss; the GFlash reference simulates electromagnetic showers only", geo.name, geo.particle
        )
    return geo, spec, cfg, eff, term


def iter_simulate(
    geometry: Geometry | str,
    n_events: int,
    energies: EnergySpec | str = "ds1",
    seed: int = 0,
    chunk_size: int = 10_000,
    progress: bool = True,
    *,
    config: GFlashConfig | dict[str, Any] | None = None,
) -> Iterator[ShowerSet]:
    """Simulate ``n_events`` reference showers and yield them in chunks of ``chunk_size``.

    Memory is bounded by one chunk plus one RNG block. Results depend only on the geometry,
    energies, seed and config (not on ``chunk_size``).

    Args:
        geometry: a :class:`Geometry` or a name/path accepted by :meth:`Geometry.from_name`.
        n_events: number of showers (>= 0).
        energies: an energy spec (see :mod:`simcompress.showers.energies`), MeV.
        seed: non-negative integer seed.
        chunk_size: events per yielded :class:`ShowerSet`.
        progress: show a rich progress bar.
        config: :class:`GFlashConfig` (or a dict validated against it).
    """
    if int(n_events) < 0:
        msg = f"n_events must be >= 0, got {n_events}"
        raise ConfigError(msg)
    if int(chunk_size) < 1:
        msg = f"chunk_size must be >= 1, got {chunk_size}"
        raise ConfigError(msg)
    if int(seed) < 0:
        msg = f"seed must be a non-negative integer, got {seed}"
        raise ConfigError(msg)
    geo, spec, cfg, eff, term = _resolve(geometry, energies, config)
    n_events, chunk_size, seed = int(n_events), int(chunk_size), int(seed)
    plans = _plan(geo, eff, cfg.step_x0)
    offsets = geo.layer_offsets
    bsize = block_size(geo)
    metadata = {
        "generator": GENERATOR_NAME,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "energies": spec.text,
        "n_events_requested": n_events,
        "config": cfg.model_dump(),
        "effective_material": asdict(eff),
        "sampling_term": term,
        "block_size": bsize,
    }

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n_blocks = -(-n_events // bsize)
        for k in range(n_blocks):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,)))
            e = spec.sample(bsize, rng).astype(np.float32)  # stored precision is what is simulated
            sh = _simulate_block(e.astype(np.float64), eff, plans, offsets, geo.n_voxels, cfg, term, rng)
            m = min(bsize, n_events - k * bsize)
            yield e[:m], sh[:m]

    with progress_bar(f"simulating {geo.name}", n_events, enabled=progress, transient=True) as bar:
        buf_e: list[np.ndarray] = []
        buf_s: list[np.ndarray] = []
        buffered = 0
        for e, sh in blocks():
            buf_e.append(e)
            buf_s.append(sh)
            buffered += len(e)
            bar.advance(len(e))
            while buffered >= chunk_size:
                all_e = np.concatenate(buf_e)
                all_s = np.concatenate(buf_s)
                yield ShowerSet(all_e[:chunk_size], all_s[:chunk_size], geo, dict(metadata))
                buf_e, buf_s = [all_e[chunk_size:]], [all_s[chunk_size:]]
                buffered -= chunk_size
        if buffered:
            yield ShowerSet(np.concatenate(buf_e), np.concatenate(buf_s), geo, dict(metadata))


def simulate(
    geometry: Geometry | str,
    n_events: int,
    energies: EnergySpec | str = "ds1",
    seed: int = 0,
    chunk_size: int = 10_000,
    progress: bool = True,
    *,
    config: GFlashConfig | dict[str, Any] | None = None,
) -> ShowerSet:
    """Simulate ``n_events`` reference showers into one :class:`ShowerSet` (see :func:`iter_simulate`)."""
    chunks = list(iter_simulate(geometry, n_events, energies, seed, chunk_size, progress, config=config))
    if not chunks:
        geo, spec, _cfg, _eff, _term = _resolve(geometry, energies, config)
        return ShowerSet(
            np.zeros(0, np.float32),
            np.zeros((0, geo.n_voxels), np.float32),
            geo,
            {"generator": GENERATOR_NAME, "seed": int(seed), "energies": spec.text},
        )
    return ShowerSet.concatenate(chunks)
