"""Writing shower files: :func:`write_showers` streams chunks into a ROOT or HDF5 file, atomically."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._atomic import atomic_path
from ...errors import ConfigError, ShowerFileError
from ..data import ShowerSet, check_showers
from ..geometry import Geometry
from .formats import DENSE_MAX_VOXELS, file_format
from .hdf5 import write_hdf5
from .root import write_root

__all__ = ["Chunks", "write_showers"]

log = logging.getLogger("simcompress.showers.io")


def _choose_layout(layout: str, geometry: Geometry, fmt: str, path: Path) -> str:
    if layout not in ("auto", "dense", "sparse"):
        msg = f"{path}: layout {layout!r} is not allowed; allowed: auto, dense, sparse"
        raise ConfigError(msg)
    if fmt == "hdf5":
        if layout == "sparse":
            msg = f"{path}: HDF5 files are dense (CaloChallenge format); use layout='dense' or a .root file"
            raise ConfigError(msg)
        return "dense"
    if layout == "auto":
        return "dense" if geometry.n_voxels <= DENSE_MAX_VOXELS else "sparse"
    return layout


@dataclass
class Chunks:
    """Re-batches an iterable of ShowerSets into chunks of ``target`` events (bounded memory)."""

    source: Iterator[ShowerSet]
    geometry: Geometry | None
    path: Path
    first: ShowerSet | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def start(self) -> Geometry:
        try:
            self.first = next(self.source)
        except StopIteration:
            msg = f"{self.path}: nothing to write (no showers given)"
            raise ShowerFileError(msg) from None
        self._check_type(self.first)
        if self.geometry is None:
            self.geometry = self.first.geometry
        self.metadata = dict(self.first.metadata)
        return self.geometry

    def _check_type(self, s: object) -> None:
        if not isinstance(s, ShowerSet):
            msg = f"{self.path}: expected ShowerSet chunks to write, got {type(s).__name__}"
            raise ShowerFileError(msg)

    def rebatched(self, target: int) -> Iterator[ShowerSet]:
        assert self.geometry is not None and self.first is not None
        geo = self.geometry
        buf_e: list[np.ndarray] = []
        buf_s: list[np.ndarray] = []
        n = 0

        def chunks() -> Iterator[ShowerSet]:
            yield self.first  # type: ignore[misc]
            for s in self.source:
                self._check_type(s)
                yield s

        for s in chunks():
            if s.showers.ndim != 2 or s.showers.shape[1] != geo.n_voxels:
                msg = (
                    f"{self.path}: a chunk has {s.showers.shape[-1] if s.showers.ndim else 0} voxels per event "
                    f"but geometry {geo.name!r} has {geo.n_voxels}; nothing written"
                )
                raise ShowerFileError(msg)
            if s is self.first:
                if not s.geometry.same_binning(geo):
                    log.info("writing %s with geometry %r instead of the data's %r", self.path, geo.name, s.geometry.name)
            elif not s.geometry.same_binning(self.first.geometry):
                msg = (
                    f"{self.path}: chunks with different binnings ({self.first.geometry.name!r} and "
                    f"{s.geometry.name!r}) cannot go into one file; nothing written"
                )
                raise ShowerFileError(msg)
            check_showers(s.incident_energy, s.showers, geo, f"{self.path} (data to write)")
            if len(s) == 0:
                continue
            buf_e.append(s.incident_energy)
            buf_s.append(s.showers)
            n += len(s)
            while n >= target:
                e = np.concatenate(buf_e) if len(buf_e) > 1 else buf_e[0]
                sh = np.concatenate(buf_s) if len(buf_s) > 1 else buf_s[0]
                yield ShowerSet(e[:target], sh[:target], geo)
                buf_e, buf_s = [e[target:]], [sh[target:]]
                n -= target
        if n:
            e = np.concatenate(buf_e) if len(buf_e) > 1 else buf_e[0]
            sh = np.concatenate(buf_s) if len(buf_s) > 1 else buf_s[0]
            yield ShowerSet(e, sh, geo)


def write_showers(
    path: str | os.PathLike[str],
    data: ShowerSet | Iterable[ShowerSet],
    *,
    format: str | None = None,
    geometry: Geometry | str | None = None,
    metadata: dict[str, Any] | None = None,
    layout: str = "auto",
    compression: str = "zstd",
    compression_level: int | None = None,
) -> Path:
    """Write showers to a ROOT or CaloChallenge HDF5 file, atomically.

    Args:
        path: output file; the format comes from its suffix (``.root``, ``.h5``, ``.hdf5``)
            unless ``format`` is given. Missing parent folders are created.
        data: a :class:`ShowerSet` or an iterable of them (streamed chunk by chunk, so a
            generator of chunks is written with memory bounded by about one basket).
        format: ``"root"`` or ``"hdf5"``.
        geometry: geometry to record (default: the data's); its voxel count must match.
        metadata: provenance entries added to (and overriding) the data's ``metadata``.
        layout: ``"auto"`` (dense up to :data:`DENSE_MAX_VOXELS` voxels, else sparse),
            ``"dense"`` or ``"sparse"`` (ROOT only).
        compression: ROOT codec ``zstd`` (default), ``zlib``, ``lz4``, ``lzma`` or ``none``;
            HDF5 always uses gzip (readable by every HDF5 tool).
        compression_level: codec level (default 1 for ROOT, 4 for HDF5 gzip).

    Returns:
        The final path. Nothing exists under it if writing failed.

    Raises:
        ShowerFileError: invalid showers (NaN/inf, negative, voxel count), nothing to write.
        ConfigError: unknown format, layout or compression.
    """
    p = Path(path)
    fmt = (format or file_format(p)).lower()
    if fmt not in ("root", "hdf5"):
        msg = f"{p}: format {format!r} is not allowed; allowed: root, hdf5"
        raise ConfigError(msg)
    geo = Geometry.from_name(geometry) if isinstance(geometry, str) else geometry
    source = iter([data]) if isinstance(data, ShowerSet) else iter(data)
    chunks = Chunks(source, geo, p)
    geo = chunks.start()
    if chunks.first is not None and chunks.first.showers.ndim == 2 and chunks.first.showers.shape[1] != geo.n_voxels:
        msg = f"{p}: data has {chunks.first.showers.shape[1]} voxels per event but geometry {geo.name!r} has {geo.n_voxels}"
        raise ShowerFileError(msg)
    if metadata:
        chunks.metadata.update(metadata)
    lay = _choose_layout(layout, geo, fmt, p)
    if p.is_dir():
        msg = f"{p}: is a folder; give a file name ending in .root, .h5 or .hdf5"
        raise ShowerFileError(msg)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        msg = f"{p}: cannot create the output folder ({err.strerror or err})"
        raise ShowerFileError(msg) from None
    try:
        with atomic_path(p) as tmp:  # hidden temporary beside p (globs like *.root skip it)
            if fmt == "root":
                write_root(tmp, chunks, lay, compression, 1 if compression_level is None else compression_level)
            else:
                write_hdf5(tmp, chunks, 4 if compression_level is None else compression_level)
    except OSError as err:
        msg = f"{p}: cannot write ({type(err).__name__}: {err.strerror or err})"
        raise ShowerFileError(msg) from None
    log.info("wrote %s (%s, %s)", p, fmt, lay)
    return p
