"""Reading the reference and the candidates: one streaming pass per source.

A source is a path (ROOT/HDF5/folder/glob, read with :func:`simcompress.showers.io.open_showers`),
a :class:`~simcompress.showers.data.ShowerSet`, a reader or an iterable of ``ShowerSet`` chunks.
:func:`read_sample` streams it once and keeps a :class:`Sample`: the high-level features and a
seeded random subsample of raw showers for the low-level classifier.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._progress import progress_bar
from ..errors import ConfigError, GeometryError, ShowerFileError
from ..showers.data import ShowerSet
from ..showers.geometry import Geometry
from .features import FeatureAccumulator, FeatureTable

__all__ = ["Sample", "read_sample"]


@dataclass
class Sample:
    """What one streaming pass over a shower source keeps."""

    name: str
    source: str
    features: FeatureTable
    voxels: np.ndarray | None  # random subsample (k, V) for the low-level classifier
    voxel_einc: np.ndarray | None
    #: seconds spent reading chunks and computing features (one streaming pass)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def geometry(self) -> Geometry:
        return self.features.geometry


class _Reservoir:
    """Uniform random subsample of k rows from a stream (smallest random keys), seeded."""

    def __init__(self, k: int, seed: int) -> None:
        self.k = k
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        self.keys = np.empty(0)
        self.rows: np.ndarray | None = None
        self.einc = np.empty(0, dtype=np.float32)

    def update(self, einc: np.ndarray, rows: np.ndarray) -> None:
        keys = self.rng.random(int(rows.shape[0]))
        if self.rows is not None and self.keys.size >= self.k:
            sel = keys < self.keys.max()
            keys, rows, einc = keys[sel], rows[sel], einc[sel]
        allk = np.concatenate([self.keys, keys])
        allr = rows if self.rows is None else np.concatenate([self.rows, rows])
        alle = np.concatenate([self.einc, einc])
        if allk.size > self.k:
            keep = np.argpartition(allk, self.k - 1)[: self.k]
            keep.sort()
            allk, allr, alle = allk[keep], allr[keep], alle[keep]
        self.keys, self.rows, self.einc = allk, np.ascontiguousarray(allr), alle


def _describe(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, ShowerSet):
        return f"<ShowerSet {len(src)} events>"
    return f"<{type(src).__name__}>"


def _open(src: Any, geometry: Geometry | None) -> tuple[Geometry | None, Iterable[ShowerSet], int | None]:
    """(geometry or None if unknown until the first chunk, chunk iterable, number of events or None)."""
    if isinstance(src, ShowerSet):
        return src.geometry, [src], len(src)
    if isinstance(src, (str, os.PathLike)):
        try:
            from ..showers.io import open_showers
        except ImportError as err:  # pragma: no cover - depends on the showers package state
            msg = f"{src}: reading shower files needs simcompress.showers.io ({err})"
            raise ShowerFileError(msg) from None
        reader = open_showers(src, geometry=geometry)
        return reader.geometry, _ReaderChunks(reader), int(reader.n_events)
    if hasattr(src, "iterate") and hasattr(src, "geometry"):
        return src.geometry, _ReaderChunks(src), int(getattr(src, "n_events", 0)) or None
    if isinstance(src, Iterable):
        return None, src, None
    msg = f"cannot read showers from {type(src).__name__}; pass a path, a ShowerSet or a reader"
    raise ConfigError(msg)


class _ReaderChunks:
    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.step = 100_000
        #: a ShowerReader checks every chunk it yields (NaN/inf, negative energies), so they need no second check
        from ..showers.io import ShowerReader

        self.checked = isinstance(reader, ShowerReader)

    def __iter__(self) -> Iterator[ShowerSet]:
        return iter(self.reader.iterate(step_size=self.step))


def read_sample(
    src: Any,
    name: str,
    *,
    geometry: Geometry | None = None,
    threshold_mev: float | None = None,
    keep_voxels: int = 0,
    step_size: int = 100_000,
    seed: int = 0,
    progress: bool = False,
) -> Sample:
    """Stream ``src`` once: features, plus a random subsample of ``keep_voxels`` raw showers (``progress``: a bar)."""
    desc = _describe(src)
    geom0, chunks, n_total = _open(src, geometry)
    if isinstance(chunks, _ReaderChunks):
        chunks.step = step_size
    if geom0 is not None and geometry is not None and not geom0.same_binning(geometry):
        msg = (
            f"{desc}: geometry {geom0.name!r} ({geom0.n_voxels} voxels) does not match the reference geometry "
            f"{geometry.name!r} ({geometry.n_voxels} voxels)"
        )
        raise GeometryError(msg)
    acc: FeatureAccumulator | None = None
    res = _Reservoir(keep_voxels, seed) if keep_voxels > 0 else None
    t_read = t_feat = 0.0
    checked = isinstance(chunks, _ReaderChunks) and chunks.checked
    it = iter(chunks)
    with progress_bar(f"features {name}", n_total, enabled=progress) as bar:
        while True:
            t0 = time.perf_counter()
            chunk = next(it, None)
            t1 = time.perf_counter()
            t_read += t1 - t0
            if chunk is None:
                break
            if acc is None:
                g = geometry or geom0 or chunk.geometry
                if not chunk.geometry.same_binning(g):
                    msg = (
                        f"{desc}: geometry {chunk.geometry.name!r} ({chunk.geometry.n_voxels} voxels) does not match "
                        f"the reference geometry {g.name!r} ({g.n_voxels} voxels)"
                    )
                    raise GeometryError(msg)
                acc = FeatureAccumulator(g, threshold_mev, desc)
            acc.update(chunk, checked=checked)
            if res is not None:
                res.update(chunk.incident_energy, chunk.showers)
            t_feat += time.perf_counter() - t1
            bar.advance(len(chunk))
    if acc is None or acc.n_events == 0:
        msg = f"{desc}: no events (empty file or selection)"
        raise ShowerFileError(msg)
    t1 = time.perf_counter()
    table = acc.result()
    t_feat += time.perf_counter() - t1
    return Sample(
        name, desc, table, res.rows if res else None, res.einc if res else None, {"read": t_read, "features": t_feat}
    )
