"""The arithmetic of the high-level features on one block of showers.

:class:`BlockKernel` turns a block of float32 voxel energies into its rows of the feature table
and its share of the streaming sums (voxel-energy histogram, image, radial profiles), so that
:class:`~simcompress.validation.features.FeatureAccumulator` can run blocks on several threads
(numpy releases the GIL in its loops and matrix products) and add the sums in block order.

It gives the numbers of the straightforward float64 computation (threshold a float64 copy, one
product per kind of sum, ``log10`` of every non-zero voxel) up to float rounding, with fewer
passes over the block: the threshold is applied to the float32 voxels (at the float32 value
equivalent to the float64 comparison), one stacked float64 product gives every per-layer and
radial sum, and hit counts are read per layer slice.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..showers.geometry import Geometry

__all__ = ["VOXEL_LOG10_EDGES", "BlockKernel", "BlockSums", "busy_core", "one_blas_thread", "spare_core", "voxel_histogram"]

#: fixed log10(E/MeV) edges of the voxel-energy spectrum: 1 eV .. 10 TeV, 20 bins per decade.
VOXEL_LOG10_EDGES = np.linspace(-6.0, 7.0, 13 * 20 + 1)

_EPS = 1e-16  # CaloChallenge's guard in centres and widths


@dataclass
class _Weights:
    """Voxel weight matrix so that one matmul gives every per-layer sum."""

    matrix: np.ndarray  # (V, K) float64
    layer: np.ndarray  # column indices of sum(E) per layer
    x: np.ndarray
    xx: np.ndarray
    y: np.ndarray
    yy: np.ndarray
    r: np.ndarray
    rr: np.ndarray
    alpha_layers: list[int] = field(default_factory=list)


_BLAS: Any = None
_BLAS_LOCK = threading.Lock()


def one_blas_thread() -> Any:
    """A context in which BLAS and LAPACK (numpy's and scipy's OpenBLAS) run on the calling thread only.

    For the work that already has its own thread per core: the features' blocks (one per worker
    thread) and FPD/KPD (on the main thread next to the classifier or the 1-D metrics). Asking BLAS
    for its own threads as well put more busy threads than cores, and OpenBLAS's threads wait
    spinning: the features took 2.2x the CPU seconds of one BLAS thread, KPD's kernel sums 2.5x
    (5,000 x 5,000, bitwise the same sums: OpenBLAS splits the output, not the sums, among its threads).
    threadpoolctl sets the libraries' thread count, so the limit is process-wide while the context holds.
    """
    global _BLAS
    with _BLAS_LOCK:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


_BUSY = [0]  # validation threads that have marked a core as theirs (busy_core)
_BUSY_LOCK = threading.Lock()


@contextmanager
def busy_core() -> Iterator[None]:
    """Marks one core as taken by the calling thread while the context holds (see :func:`spare_core`).

    The threads that run validation work side by side mark themselves: the classifier's own thread,
    and the thread computing the floor, the 1-D metrics or FPD/KPD beside it. The classifier hands
    half of each step to its helper thread only while a core is left (:func:`spare_core`), so it never
    puts more busy threads than cores; which thread computes a part never changes a number.
    """
    with _BUSY_LOCK:
        _BUSY[0] += 1
    try:
        yield
    finally:
        with _BUSY_LOCK:
            _BUSY[0] -= 1


def _n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def spare_core() -> bool:
    """Whether this process has a core no validation thread has marked (:func:`busy_core`) as its own."""
    return _BUSY[0] < _n_cores()


def _build_weights(g: Geometry) -> _Weights:
    nl = g.n_layers
    vl = g.voxel_layer
    onehot = np.zeros((g.n_voxels, nl))
    onehot[np.arange(g.n_voxels), vl] = 1.0
    alpha_layers = [i for i, layer in enumerate(g.layers) if layer.has_xy]
    cols = [onehot]
    for coord in (g.voxel_x, g.voxel_y):
        a = onehot[:, alpha_layers] * coord[:, None]
        cols += [a, a * coord[:, None]]
    cols += [onehot * g.voxel_r[:, None], onehot * (g.voxel_r**2)[:, None]]
    m = np.concatenate(cols, axis=1)
    na = len(alpha_layers)
    o = nl
    x = np.arange(o, o + na)
    xx = np.arange(o + na, o + 2 * na)
    y = np.arange(o + 2 * na, o + 3 * na)
    yy = np.arange(o + 3 * na, o + 4 * na)
    r = np.arange(o + 4 * na, o + 4 * na + nl)
    rr = np.arange(o + 4 * na + nl, o + 4 * na + 2 * nl)
    return _Weights(m, np.arange(nl), x, xx, y, yy, r, rr, alpha_layers)


def _radial_matrix(g: Geometry) -> np.ndarray:
    """(V, sum n_r) indicator: voxel -> (layer, radial bin)."""
    offs = np.concatenate([[0], np.cumsum([layer.n_r for layer in g.layers])])
    col = offs[g.voxel_layer] + g.voxel_i_r
    m = np.zeros((g.n_voxels, int(offs[-1])))
    m[np.arange(g.n_voxels), col] = 1.0
    return m


def float32_threshold(threshold_mev: float) -> np.float32:
    """The float32 ``t`` with ``v < t`` exactly when ``float64(v) < threshold_mev``, for every float32 ``v``."""
    t = np.float32(threshold_mev)
    if float(t) < threshold_mev:
        t = np.nextafter(t, np.float32(np.inf))
    return t


def _hist_bin(v: np.ndarray) -> np.ndarray:
    """Voxel-histogram bin of positive float32 energies: ``floor((log10 E - lo) / step)`` in float64, clipped."""
    e = VOXEL_LOG10_EDGES
    idx = np.floor((np.log10(v.astype(np.float64)) - e[0]) / (e[1] - e[0]))
    return np.clip(idx.astype(np.int64), 0, len(e) - 2)


#: bits of a float32 dropped to name its cell of the voxel-histogram table: 2^18 cells of 2^14 neighbouring floats
#: (1/512 of a binary octave, about 0.0006 in log10 E; a histogram bin is 0.05 wide)
_CELL_SHIFT = np.uint32(14)
_DROP, _EXACT, _FIRST_BIN = 0, 1, 2  # cell codes: below the threshold / a bin edge or the threshold inside / bin + 2


def _cell_table(t32: np.float32 | None) -> np.ndarray:
    """uint16 code per cell of ``(bits(v) - 1) >> _CELL_SHIFT`` (``bits``: a float32's uint32 pattern).

    Why not ``np.histogram`` or ``log10`` per voxel: the voxel histogram is the kernel's dearest step
    (a float64 ``log10`` of every non-zero voxel), and the bin of a float32 depends on its bit pattern
    only, monotonically for positive floats. Minus one first, so +0.0 wraps to the top and -0.0 and
    NaN patterns land in the cells above every finite positive float: all dropped. A cell whose first
    and last float have the same :func:`_hist_bin` bin with a margin of 1e-9 of a bin (the float64
    rounding of ``log10`` and the division is below 1e-13 of a bin) and lies at or above the threshold
    is ``bin + _FIRST_BIN``; a cell wholly below the threshold (or outside the positive finite floats)
    is ``_DROP``; the few cells with a bin edge or the threshold inside are ``_EXACT``: their voxels go
    through :func:`_hist_bin` one by one. So the counts are exactly those of :func:`_hist_bin` of
    every voxel at or above the threshold.
    """
    n_cells = 1 << (32 - int(_CELL_SHIFT))
    first = (np.arange(n_cells, dtype=np.uint64) << np.uint64(_CELL_SHIFT)) + np.uint64(1)
    last = first + np.uint64((1 << int(_CELL_SHIFT)) - 1)
    positive = last < np.uint64(0x7F800000)  # every bit pattern of the cell a finite float > 0
    lo = np.where(positive, first, 1).astype(np.uint32).view(np.float32)
    hi = np.where(positive, last, 1).astype(np.uint32).view(np.float32)
    e = VOXEL_LOG10_EDGES
    g_lo = (np.log10(lo.astype(np.float64)) - e[0]) / (e[1] - e[0])
    g_hi = (np.log10(hi.astype(np.float64)) - e[0]) / (e[1] - e[0])
    b_lo = np.clip(np.floor(g_lo - 1e-9), 0, len(e) - 2)
    b_hi = np.clip(np.floor(g_hi + 1e-9), 0, len(e) - 2)
    same = (b_lo == b_hi) & (_hist_bin(lo) == b_lo) & (_hist_bin(hi) == b_lo)
    above = np.ones(n_cells, dtype=bool) if t32 is None else lo >= t32
    below = np.zeros(n_cells, dtype=bool) if t32 is None else hi < t32
    code = np.where(same & above, b_lo + _FIRST_BIN, _EXACT)
    code = np.where(~positive | below, _DROP, code)
    # the cell of the largest finite floats also holds +inf (never in a checked chunk): bin by bin
    code[int(np.uint32(0x7F7FFFFF) >> _CELL_SHIFT)] = _EXACT
    return code.astype(np.uint16)


def voxel_histogram(x32: np.ndarray, t32: np.float32 | None, table: np.ndarray) -> np.ndarray:
    """Counts per :data:`VOXEL_LOG10_EDGES` bin (int64) of the float32 voxels ``x32`` at or above ``t32``
    (``None``: above 0), exactly ``np.bincount(_hist_bin(v))`` of those voxels, through :func:`_cell_table`."""
    n_bins = len(VOXEL_LOG10_EDGES) - 1
    flat = np.ascontiguousarray(x32, dtype=np.float32).reshape(-1)
    cells = flat.view(np.uint32) - np.uint32(1)
    np.right_shift(cells, _CELL_SHIFT, out=cells)
    code = table.take(cells)
    counts = np.bincount(code, minlength=n_bins + _FIRST_BIN)[_FIRST_BIN:].astype(np.int64)
    v = flat.take(np.flatnonzero(code == _EXACT))
    v = v[v > 0] if t32 is None else v[v >= t32]
    if v.size:
        counts += np.bincount(_hist_bin(v), minlength=n_bins)
    return counts


@dataclass
class BlockSums:
    """One block's rows of the feature table and its share of the streaming sums."""

    rows: np.ndarray  # (n, F) float32
    einc: np.ndarray  # (n,) float64
    voxel_hist: np.ndarray  # int64 per bin
    image: np.ndarray  # per-voxel sum and sum of squares
    image_sq: np.ndarray
    radial: np.ndarray  # per (layer, radial bin): sums, squares, and the same of energy / E_inc
    radial_sq: np.ndarray
    radial_norm: np.ndarray
    radial_norm_sq: np.ndarray


class BlockKernel:
    """Features and streaming sums of a block of showers (thread-safe: no state changes on call)."""

    def __init__(self, geometry: Geometry, threshold_mev: float) -> None:
        self.w = _build_weights(geometry)
        rad = _radial_matrix(geometry)
        self.n_w = self.w.matrix.shape[1]
        self.matrix = np.ascontiguousarray(np.concatenate([self.w.matrix, rad], axis=1))
        self.threshold_mev = float(threshold_mev)
        self.t32 = float32_threshold(self.threshold_mev) if self.threshold_mev > 0 else None
        self.layer_slices = geometry.layer_slices
        self.layer_n = np.array([layer.n_voxels for layer in geometry.layers], dtype=np.float64)
        self.n_hist = len(VOXEL_LOG10_EDGES) - 1
        self.cells = _cell_table(self.t32)

    def __call__(self, einc32: np.ndarray, x32: np.ndarray) -> BlockSums:
        n = x32.shape[0]
        # no threshold: tiny negative float noise is accepted by validate() but is no energy
        zero = np.float32(0.0)
        xt = np.maximum(x32, zero) if self.t32 is None else np.where(x32 < self.t32, zero, x32)
        x = xt.astype(np.float64)
        einc = einc32.astype(np.float64)
        w = self.w
        sall = x @ self.matrix
        s = sall[:, : self.n_w]
        e_layer = s[:, w.layer]
        e_tot = e_layer.sum(axis=1)
        denom = e_layer + _EPS
        cols: list[np.ndarray] = [e_tot[:, None], (e_tot / einc)[:, None], e_layer]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(e_tot[:, None] > 0, e_layer / np.where(e_tot > 0, e_tot, 1.0)[:, None], 0.0)
        cols.append(frac)
        al = w.alpha_layers
        if al:
            da = denom[:, al]
            ecx = s[:, w.x] / da
            ecy = s[:, w.y] / da
            wx = np.sqrt(np.maximum(s[:, w.xx] / da - ecx**2, 0.0))
            wy = np.sqrt(np.maximum(s[:, w.yy] / da - ecy**2, 0.0))
            block = np.empty((n, 4 * len(al)))
            block[:, 0::4], block[:, 1::4], block[:, 2::4], block[:, 3::4] = ecx, ecy, wx, wy
            cols.append(block)
        ecr = s[:, w.r] / denom
        wr = np.sqrt(np.maximum(s[:, w.rr] / denom - ecr**2, 0.0))
        cols += [ecr, wr]
        hits = np.stack([np.count_nonzero(xt[:, sl], axis=1) for sl in self.layer_slices], axis=1)
        cols.append(1.0 - hits / self.layer_n)
        rows = np.concatenate(cols, axis=1).astype(np.float32)
        # streaming summaries; zeros (and voxels below the threshold) are dropped
        hist = voxel_histogram(x32, self.t32, self.cells)
        rad = sall[:, self.n_w :]
        radn = rad / einc[:, None]
        return BlockSums(
            rows,
            einc,
            hist,
            x.sum(axis=0),
            np.einsum("ij,ij->j", x, x),
            rad.sum(axis=0),
            np.einsum("ij,ij->j", rad, rad),
            radn.sum(axis=0),
            np.einsum("ij,ij->j", radn, radn),
        )
