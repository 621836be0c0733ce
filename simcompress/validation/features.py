"""CaloChallenge high-level shower features, computed chunk by chunk.

Definitions follow ``HighLevelFeatures.CalculateFeatures`` of the CaloChallenge 2022
evaluation code so numbers are comparable with published results:

* ``E_tot`` (MeV) and ``E_ratio`` = E_tot / E_inc;
* ``E_layer_<id>`` (MeV) and ``frac_layer_<id>`` = E_layer / E_tot;
* ``EC_x_<id>``, ``EC_y_<id>`` (mm), energy-weighted centres ``sum(x E) / (sum(E) + 1e-16)``
  with x = r cos(alpha), y = r sin(alpha) at the voxel centres, only for layers with alpha binning
  (Cartesian layers: x, y are the cell centres, and every layer has them);
* ``width_x_<id>``, ``width_y_<id>`` (mm), ``sqrt(max(sum(x^2 E)/sum(E) - EC^2, 0))``;
* ``EC_r_<id>``, ``width_r_<id>`` (mm) for every layer, with the radial bin centres;
* ``sparsity_<id>`` = 1 - fraction of the layer's voxels at or above the threshold.

For Cartesian geometries (CaloGAN, voxel grids) the same definitions apply with the cell
centres; ``EC_r``/``width_r`` use the distance of a cell centre from the shower axis (0, 0),
and the per-layer profile of the streaming summaries runs over the columns (x) instead of radii.

Voxels below ``threshold_mev`` are set to zero before anything is computed (CaloChallenge
uses 1 MeV for dataset 1 and 15.15 keV for datasets 2 and 3, see :func:`default_threshold_mev`).

Besides the per-event features, the accumulator keeps streaming sums (never the voxels):
the voxel-energy spectrum as a fixed log-binned histogram, the mean shower image with its
per-voxel variance, and the mean radial profile of every layer. Memory is the per-event
feature table (float32) plus O(n_voxels).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ShowerFileError
from ..showers.data import ShowerSet
from ..showers.energies import format_energy_mev
from ..showers.geometry import Geometry
from .feature_kernel import VOXEL_LOG10_EDGES, BlockKernel, BlockSums, one_blas_thread

__all__ = [
    "VOXEL_LOG10_EDGES",
    "EnergyBin",
    "FeatureAccumulator",
    "FeatureTable",
    "compute_features",
    "default_threshold_mev",
    "energy_bins",
    "feature_names",
    "high_level_vector",
]

#: rows per kernel call (one float64 copy of a block at a time per thread); a chunk is cut into blocks from its
#: first row, so the sums depend on where the chunks start (``sources`` cuts its read-ahead pieces to match)
BLOCK_ROWS = 4096
_BLOCK = BLOCK_ROWS
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The blocks' worker threads (shared by every accumulator; numpy releases the GIL in its loops)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="features")
        return _POOL


def default_threshold_mev(geometry: Geometry) -> float:
    """CaloChallenge's evaluation threshold: 1 MeV for dataset 1 (ds1 binning), 15.15 keV otherwise."""
    if geometry.n_voxels in (368, 533) or geometry.name.startswith("ds1"):
        return 1.0
    return 0.5e-3 / 0.033


def feature_names(geometry: Geometry) -> list[str]:
    """Names of the per-event features for ``geometry``, in table order."""
    names = ["E_tot", "E_ratio"]
    ids = [layer.id for layer in geometry.layers]
    names += [f"E_layer_{i}" for i in ids]
    names += [f"frac_layer_{i}" for i in ids]
    for layer in geometry.layers:
        if layer.has_xy:
            names += [f"EC_x_{layer.id}", f"EC_y_{layer.id}", f"width_x_{layer.id}", f"width_y_{layer.id}"]
    names += [f"EC_r_{i}" for i in ids]
    names += [f"width_r_{i}" for i in ids]
    names += [f"sparsity_{i}" for i in ids]
    return names


def feature_family(name: str) -> str:
    """``"E_layer_12"`` -> ``"E_layer"``; ``"E_ratio"`` -> ``"E_ratio"``."""
    head, _, tail = name.rpartition("_")
    return head if tail.isdigit() else name


@dataclass(frozen=True)
class EnergyBin:
    """An incident-energy bin ``[lo, hi)`` in MeV with a human label."""

    label: str
    lo: float
    hi: float

    def mask(self, e: np.ndarray) -> np.ndarray:
        return (e >= self.lo) & (e < self.hi)


def energy_bins(incident_energy: np.ndarray, max_discrete: int = 30) -> list[EnergyBin]:
    """Incident-energy bins for per-bin comparisons.

    Discrete energies (CaloChallenge ds1: 15 values 2^8..2^22 MeV) give one bin per value;
    continuous spectra give one bin per decade (1-10 GeV, 10-100 GeV, ...).
    """
    e = np.asarray(incident_energy, dtype=np.float64)
    if e.size == 0:
        return []
    uniq = np.unique(e)
    if uniq.size <= max_discrete:
        out = []
        for u in uniq:
            # a relative 1e-6 window: float32 round-off of the stored energy never drops an event
            out.append(EnergyBin(format_energy_mev(u), float(u) * (1 - 1e-6), float(u) * (1 + 1e-6)))
        return out
    lo_dec = math.floor(math.log10(float(uniq[0])))
    hi_dec = math.floor(math.log10(float(uniq[-1])))
    return [
        EnergyBin(f"{format_energy_mev(10.0**d)}-{format_energy_mev(10.0 ** (d + 1))}", 10.0**d, 10.0 ** (d + 1))
        for d in range(lo_dec, hi_dec + 1)
    ]


class FeatureTable(Mapping[str, np.ndarray]):
    """Per-event features (name -> 1-D float array) plus streaming summaries.

    Attributes:
        values: (N, F) float32 matrix, columns in :attr:`names` order.
        incident_energy: (N,) float64 MeV.
        geometry: the geometry the features were computed for.
        threshold_mev: voxel threshold used.
        voxel_hist: counts of non-zero voxels per :data:`VOXEL_LOG10_EDGES` bin (int64).
        mean_image / var_image: per-voxel mean and variance (MeV, MeV^2) over events.
        radial_mean / radial_var: (n_r_total,) per-event energy per (layer, radial bin), summed over alpha.
    """

    def __init__(
        self,
        names: list[str],
        values: np.ndarray,
        incident_energy: np.ndarray,
        geometry: Geometry,
        threshold_mev: float,
        voxel_hist: np.ndarray,
        image_sum: np.ndarray,
        image_sumsq: np.ndarray,
        radial_sum: np.ndarray,
        radial_sumsq: np.ndarray,
        radial_norm_sum: np.ndarray | None = None,
        radial_norm_sumsq: np.ndarray | None = None,
    ) -> None:
        self.names = list(names)
        self.values = values
        self.incident_energy = incident_energy
        self.geometry = geometry
        self.threshold_mev = float(threshold_mev)
        self.voxel_hist = voxel_hist
        self._image_sum = image_sum
        self._image_sumsq = image_sumsq
        self._radial_sum = radial_sum
        self._radial_sumsq = radial_sumsq
        self._radial_norm_sum = radial_sum * np.nan if radial_norm_sum is None else radial_norm_sum
        self._radial_norm_sumsq = radial_sumsq * np.nan if radial_norm_sumsq is None else radial_norm_sumsq
        self._index = {n: i for i, n in enumerate(self.names)}

    #: the (n_events, n_features) table; an attribute, so it shadows ``Mapping.values()`` on purpose
    values: np.ndarray  # type: ignore[assignment]

    # Mapping protocol
    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.values[:, self._index[name]]
        except KeyError:
            from ..errors import UnknownNameError, did_you_mean

            msg = f"unknown feature {name!r}; {did_you_mean(name, self.names)}"
            raise UnknownNameError(msg) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def n_events(self) -> int:
        return int(self.values.shape[0])

    def _mean_var(self, s: np.ndarray, ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = max(self.n_events, 1)
        mean = s / n
        var = np.maximum(ss / n - mean**2, 0.0)
        return mean, var

    @property
    def mean_image(self) -> np.ndarray:
        return self._mean_var(self._image_sum, self._image_sumsq)[0]

    @property
    def var_image(self) -> np.ndarray:
        return self._mean_var(self._image_sum, self._image_sumsq)[1]

    @property
    def radial_mean(self) -> np.ndarray:
        return self._mean_var(self._radial_sum, self._radial_sumsq)[0]

    @property
    def radial_var(self) -> np.ndarray:
        return self._mean_var(self._radial_sum, self._radial_sumsq)[1]

    def radial_profile(self, layer_index: int, normalised: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(r_edges_mm, mean energy per radial bin, standard error of that mean) for one layer.

        For a Cartesian layer the bins are the columns: (x_edges_mm, mean energy per column, error).

        ``normalised``: per-event energies divided by E_inc first (insensitive to the E_inc mix).
        """
        offs = np.concatenate([[0], np.cumsum([layer.n_r for layer in self.geometry.layers])])
        sl = slice(int(offs[layer_index]), int(offs[layer_index + 1]))
        if normalised:
            mean, var = self._mean_var(self._radial_norm_sum, self._radial_norm_sumsq)
        else:
            mean, var = self.radial_mean, self.radial_var
        err = np.sqrt(var[sl] / max(self.n_events, 1))
        return np.asarray(self.geometry.layers[layer_index].profile_edges_mm), mean[sl], err

    def longitudinal_profile(self, normalised: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(mean energy per layer, standard error of the mean), MeV; ``normalised``: of E_layer / E_inc."""
        cols = [self[f"E_layer_{layer.id}"].astype(np.float64) for layer in self.geometry.layers]
        if normalised:
            cols = [c / self.incident_energy for c in cols]
        m = np.array([c.mean() if c.size else np.nan for c in cols])
        e = np.array([c.std() / math.sqrt(max(c.size, 1)) if c.size else np.nan for c in cols])
        return m, e

    def select(self, mask: np.ndarray) -> FeatureTable:
        """A table of the events in boolean ``mask`` (streaming summaries are kept unchanged)."""
        return FeatureTable(
            self.names,
            self.values[mask],
            self.incident_energy[mask],
            self.geometry,
            self.threshold_mev,
            self.voxel_hist,
            self._image_sum,
            self._image_sumsq,
            self._radial_sum,
            self._radial_sumsq,
            self._radial_norm_sum,
            self._radial_norm_sumsq,
        )

    def take(self, index: np.ndarray) -> FeatureTable:
        """A table of the rows ``index`` (per-event features only; summaries unchanged)."""
        return self.select(np.asarray(index))

    def __repr__(self) -> str:
        return f"FeatureTable({self.n_events} events, {len(self.names)} features, {self.geometry.name!r})"


class FeatureAccumulator:
    """Streaming feature computation: ``update(chunk)`` repeatedly, then ``result()``.

    Example (chunks from any source, e.g. ``open_showers("ref.root").iterate(100_000)``):
        >>> from simcompress.showers.geometry import Geometry
        >>> from simcompress.validation._toy import toy_showers
        >>> g = Geometry.from_name("ds1-photons")
        >>> acc = FeatureAccumulator(g, threshold_mev=1.0)
        >>> for chunk in toy_showers(g, 300, seed=1).iter_chunks(100):
        ...     acc.update(chunk)
        >>> table = acc.result()
        >>> table.n_events, table["E_tot"].shape
        (300, (300,))
    """

    def __init__(self, geometry: Geometry, threshold_mev: float | None = None, source: str = "<showers>") -> None:
        self.geometry = geometry
        self.threshold_mev = default_threshold_mev(geometry) if threshold_mev is None else float(threshold_mev)
        if not math.isfinite(self.threshold_mev) or self.threshold_mev < 0:
            from ..errors import ConfigError

            msg = f"voxel threshold must be a finite energy >= 0 MeV, got {threshold_mev!r}"
            raise ConfigError(msg)
        self.source = source
        self.names = feature_names(geometry)
        self._kernel = BlockKernel(geometry, self.threshold_mev)
        n_rad = sum(layer.n_r for layer in geometry.layers)
        self._rows: list[np.ndarray] = []
        self._einc: list[np.ndarray] = []
        self._vox_hist = np.zeros(len(VOXEL_LOG10_EDGES) - 1, dtype=np.int64)
        self._img = np.zeros(geometry.n_voxels)
        self._img2 = np.zeros(geometry.n_voxels)
        self._rs = np.zeros(n_rad)
        self._rs2 = np.zeros(n_rad)
        self._rn = np.zeros(n_rad)
        self._rn2 = np.zeros(n_rad)
        self.n_events = 0

    def update(self, chunk: ShowerSet, *, checked: bool = False) -> None:
        """Add ``chunk``'s features; ``checked``: its values were already checked (``ShowerReader.iterate``
        checks every chunk it yields), so the two passes over the voxels are not made again."""
        if not chunk.geometry.same_binning(self.geometry):
            from ..errors import GeometryError

            msg = f"{self.source}: chunk geometry {chunk.geometry.name!r} does not match {self.geometry.name!r}"
            raise GeometryError(
                msg
            )
        if not checked:
            chunk.validate(self.source)
        blocks = [(chunk.incident_energy[i : i + _BLOCK], chunk.showers[i : i + _BLOCK]) for i in range(0, len(chunk), _BLOCK)]
        with one_blas_thread():  # the blocks have a thread per core already
            if len(blocks) > 1 and _WORKERS > 1:
                parts = list(_pool().map(lambda b: self._kernel(*b), blocks))
            else:
                parts = [self._kernel(*b) for b in blocks if b[1].shape[0]]
        for p in parts:  # in block order: the sums do not depend on thread timing
            self._add(p)

    def _update_block(self, einc32: np.ndarray, x32: np.ndarray) -> None:
        if x32.shape[0]:
            self._add(self._kernel(einc32, x32))

    def _add(self, p: BlockSums) -> None:
        self._rows.append(p.rows)
        self._einc.append(p.einc)
        self._vox_hist += p.voxel_hist
        self._img += p.image
        self._img2 += p.image_sq
        self._rs += p.radial
        self._rs2 += p.radial_sq
        self._rn += p.radial_norm
        self._rn2 += p.radial_norm_sq
        self.n_events += p.rows.shape[0]

    def result(self) -> FeatureTable:
        if self.n_events == 0:
            msg = f"{self.source}: no events to compute features from"
            raise ShowerFileError(msg)
        values = np.concatenate(self._rows) if len(self._rows) > 1 else self._rows[0]
        einc = np.concatenate(self._einc)
        return FeatureTable(
            self.names,
            values,
            einc,
            self.geometry,
            self.threshold_mev,
            self._vox_hist.copy(),
            self._img.copy(),
            self._img2.copy(),
            self._rs.copy(),
            self._rs2.copy(),
            self._rn.copy(),
            self._rn2.copy(),
        )


def compute_features(
    showers: ShowerSet | Iterable[ShowerSet],
    threshold_mev: float | None = None,
    geometry: Geometry | None = None,
    source: str = "<showers>",
) -> FeatureTable:
    """High-level features of a :class:`ShowerSet` or of an iterable of chunks (streamed).

    Args:
        showers: one ShowerSet, or any iterable of ShowerSet chunks
            (e.g. ``open_showers(path).iterate(100_000)``).
        threshold_mev: voxel threshold in MeV; ``None`` picks CaloChallenge's (1 MeV ds1, 15.15 keV ds2/3).
        geometry: optional; taken from the first chunk otherwise.
        source: name used in error messages.
    """
    chunks: Iterable[ShowerSet] = [showers] if isinstance(showers, ShowerSet) else showers
    acc: FeatureAccumulator | None = None
    for chunk in chunks:
        if acc is None:
            acc = FeatureAccumulator(geometry or chunk.geometry, threshold_mev, source)
        acc.update(chunk)
    if acc is None:
        msg = f"{source}: no events to compute features from"
        raise ShowerFileError(msg)
    return acc.result()


def high_level_vector(table: FeatureTable) -> np.ndarray:
    """The CaloChallenge ``cls-high`` / FPD-KPD feature vector (float64, (N, D)).

    ``[log10 E_inc, log10(E_layer + 1e-8), EC_x/100, EC_y/100, width_x/100, width_y/100,
    log10(E_tot + 1e-8), sparsity, EC_r/100, width_r/100]``, following ``evaluate.py``.
    """
    g = table.geometry
    cols: list[np.ndarray] = [np.log10(table.incident_energy)[:, None]]
    ids = [layer.id for layer in g.layers]
    alpha_ids = [layer.id for layer in g.layers if layer.has_xy]

    def block(fmt: str, which: list[int], fn: Any = None) -> None:
        if not which:
            return
        m = np.stack([table[fmt.format(i)].astype(np.float64) for i in which], axis=1)
        cols.append(fn(m) if fn else m)

    block("E_layer_{}", ids, lambda m: np.log10(m + 1e-8))
    for fam in ("EC_x_{}", "EC_y_{}", "width_x_{}", "width_y_{}"):
        block(fam, alpha_ids, lambda m: m / 100.0)
    cols.append(np.log10(table["E_tot"].astype(np.float64) + 1e-8)[:, None])
    block("sparsity_{}", ids)
    block("EC_r_{}", ids, lambda m: m / 100.0)
    block("width_r_{}", ids, lambda m: m / 100.0)
    return np.concatenate(cols, axis=1)
