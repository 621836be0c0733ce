"""Reading the reference and the candidates: one streaming pass per source.

A source is a path (ROOT/HDF5/folder/glob, read with :func:`simcompress.showers.io.open_showers`),
a :class:`~simcompress.showers.data.ShowerSet`, a reader or an iterable of ``ShowerSet`` chunks.
:func:`read_sample` streams it once and keeps a :class:`Sample`: the high-level features and a
seeded random subsample of raw showers for the low-level classifier.

Files and readers are read ahead: one worker thread reads the next piece while the features of the
last one are computed (uproot's decompression and numpy's loops release the GIL), with at most one
piece in flight. A chunk of ``step_size`` events is read in pieces of :data:`READ_AHEAD_EVENTS`
(so a file of one chunk overlaps too), cut back by :func:`_recut` to the feature blocks of the plain
loop: the accumulator makes the same kernel calls in the same order, so every number is bitwise
that of the plain loop (``read_ahead=False``); memory is two pieces plus one partial block. An
error of the reader surfaces unchanged (the same ``ShowerFileError`` naming the file) when its piece
is taken; an event index in it counts from the start of that piece, not of the chunk.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._progress import progress_bar
from ..errors import ConfigError, GeometryError, ShowerFileError
from ..showers.data import ShowerSet
from ..showers.geometry import Geometry
from .features import BLOCK_ROWS, FeatureAccumulator, FeatureTable

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


#: events per read of a read-ahead file source: a chunk of ``step_size`` events is read in pieces of this
#: size, so reading overlaps the features even when a file is a single chunk (ds1: 37 MB of voxels a piece)
READ_AHEAD_EVENTS = 6 * BLOCK_ROWS


def _boundary_after(pos: int, step: int) -> int:
    """The first place after stream row ``pos`` where the plain loop (chunks of ``step``) starts a feature block."""
    start = pos - pos % step
    return min(start + ((pos - start) // BLOCK_ROWS + 1) * BLOCK_ROWS, start + step)


def _last_boundary(pos: int, end: int, step: int) -> int:
    """The last feature-block start of the plain loop in ``(pos, end]`` inside the chunk holding ``pos``, or ``pos``."""
    start = pos - pos % step
    if end >= start + step:
        return start + step
    return max(pos, start + ((end - start) // BLOCK_ROWS) * BLOCK_ROWS)


def _recut(pieces: Iterable[ShowerSet], step: int) -> Iterator[ShowerSet]:
    """The rows of ``pieces`` (any lengths, in stream order) cut where the plain loop's feature blocks start.

    The plain loop hands chunks of ``step`` events to :class:`FeatureAccumulator`, which cuts each into
    blocks of :data:`BLOCK_ROWS` from its first row and adds the blocks' sums in order. Every piece
    yielded here starts at one of those block starts and ends at one (or at the stream's end), inside
    one plain chunk, so the accumulator makes the very same kernel calls in the same order: bitwise the
    same sums. The rows of a block split between two reads are copied (fewer than ``BLOCK_ROWS``);
    everything else is a view. Own code: no library re-chunks a stream at a given set of boundaries.
    """
    pos = 0  # stream row of the next row to yield
    carry: tuple[np.ndarray, np.ndarray] | None = None  # rows from ``pos`` that do not reach a boundary yet
    last: ShowerSet | None = None
    for piece in pieces:
        last = piece
        e, s = piece.incident_energy, piece.showers
        if carry is not None:
            need = _boundary_after(pos, step) - pos - len(carry[0])
            if len(e) < need:
                carry = (np.concatenate([carry[0], e]), np.concatenate([carry[1], s]))
                continue
            head = ShowerSet(
                np.concatenate([carry[0], e[:need]]), np.concatenate([carry[1], s[:need]]), piece.geometry,
                piece.metadata,
            )
            carry = None
            pos += len(head)
            e, s = e[need:], s[need:]
            yield head
        while len(e):
            end = _last_boundary(pos, pos + len(e), step)
            if end == pos:
                carry = (e.copy(), s.copy())
                break
            k = end - pos
            pos = end
            yield ShowerSet(e[:k], s[:k], piece.geometry, piece.metadata)
            e, s = e[k:], s[k:]
    if carry is not None and last is not None:
        yield ShowerSet(carry[0], carry[1], last.geometry, last.metadata)


class _ReadAhead:
    """Iterator over ``chunks`` that reads the next chunk on a worker thread while the caller works on this one.

    Own code rather than a library: neither uproot (``uproot.iterate`` reads on the caller's thread)
    nor the standard library has a bounded one-item prefetching iterator; this is the usual pattern of
    a one-worker ``ThreadPoolExecutor`` with a single pending ``Future``. The source iterator is only
    ever advanced by that one worker, one call at a time, so chunks come in their order.
    ``close()`` waits for the chunk in flight (discarding it and any error of it) and closes the
    source, so an exception in the caller's loop leaves no thread reading.
    """

    def __init__(self, chunks: Iterable[ShowerSet]) -> None:
        self._it = iter(chunks)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")
        self._pending: Future[tuple[ShowerSet | None, float]] | None = self._pool.submit(self._next)
        #: seconds the worker spent producing chunks (overlapped with the caller's work)
        self.read_seconds = 0.0

    def _next(self) -> tuple[ShowerSet | None, float]:
        t0 = time.perf_counter()
        chunk = next(self._it, None)
        return chunk, time.perf_counter() - t0

    def __iter__(self) -> _ReadAhead:
        return self

    def __next__(self) -> ShowerSet:
        if self._pending is None:
            raise StopIteration
        fut, self._pending = self._pending, None
        chunk, secs = fut.result()  # re-raises the reader's own exception (ShowerFileError naming the file)
        self.read_seconds += secs
        if chunk is None:
            self.close()
            raise StopIteration
        self._pending = self._pool.submit(self._next)  # at most one chunk in flight
        return chunk

    def close(self) -> None:
        fut, self._pending = self._pending, None
        if fut is not None:
            fut.exception()  # wait: the source must not be running when it is closed; its error is not ours now
        self._pool.shutdown(wait=True)
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


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
    read_ahead: bool = True,
) -> Sample:
    """Stream ``src`` once: features, plus a random subsample of ``keep_voxels`` raw showers (``progress``: a bar).

    ``read_ahead``: a file or reader source reads its next piece on a worker thread while this one's
    features are computed (pieces of at most :data:`READ_AHEAD_EVENTS`, cut back to the plain loop's
    feature blocks: the same numbers; ``False``: the plain loop). Other iterables are consumed
    on the calling thread (their producer may hold thread-bound state, e.g. a torch generator).
    Timings: ``read`` is the time spent waiting for chunks, ``read_thread`` (read-ahead only) the
    worker's reading time, most of it overlapped with ``features``.
    """
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
    ahead = None
    if read_ahead and isinstance(chunks, _ReaderChunks):
        # read in pieces (at most the step) cut back to the plain loop's feature blocks: the same sums
        chunks.step = min(step_size, READ_AHEAD_EVENTS)
        ahead = _ReadAhead(_recut(chunks, step_size) if chunks.step < step_size else chunks)
    it: Iterator[ShowerSet] = ahead if ahead is not None else iter(chunks)
    try:
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
                            f"{desc}: geometry {chunk.geometry.name!r} ({chunk.geometry.n_voxels} voxels) does not "
                            f"match the reference geometry {g.name!r} ({g.n_voxels} voxels)"
                        )
                        raise GeometryError(msg)
                    acc = FeatureAccumulator(g, threshold_mev, desc)
                acc.update(chunk, checked=checked)
                if res is not None:
                    res.update(chunk.incident_energy, chunk.showers)
                t_feat += time.perf_counter() - t1
                bar.advance(len(chunk))
    finally:
        if ahead is not None:
            ahead.close()
    if acc is None or acc.n_events == 0:
        msg = f"{desc}: no events (empty file or selection)"
        raise ShowerFileError(msg)
    t1 = time.perf_counter()
    table = acc.result()
    t_feat += time.perf_counter() - t1
    timings = {"read": t_read, "features": t_feat}
    if ahead is not None:
        timings["read_thread"] = ahead.read_seconds
    return Sample(name, desc, table, res.rows if res else None, res.einc if res else None, timings)
