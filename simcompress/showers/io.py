"""Shower files: ROOT TTrees (uproot) and CaloChallenge HDF5 (h5py), written atomically.

**ROOT layout.** One TTree ``showers`` made with ``mktree`` and filled with ``extend`` in
chunks (each ``extend`` is one basket per branch), ZSTD(1)-compressed by default:

* ``incident_energy``: float32, MeV;
* dense layout (small geometries, at most :data:`DENSE_MAX_VOXELS` voxels): ``voxels``,
  a fixed-size ``float[n_voxels]`` branch (zero-copy ``(n, n_voxels)`` arrays on reading);
* sparse layout (high-granularity geometries such as CaloChallenge ds2/ds3): ``nhit``
  (int32 counter), ``hit_idx`` (``uint16[]``, or ``uint32[]`` above 65535 voxels) and
  ``hit_e`` (``float[]``): only the non-zero voxels; it writes and reads several times
  faster than dense at equal file size for low-occupancy showers.

plus a ``provenance`` TObjString holding JSON: the full geometry description, generator,
seed, software versions, config, layout, event count, energy range and a content hash of
the decoded arrays (reproducibility is "identical decoded arrays"; ROOT files carry
timestamps, so identical bytes are not expected). Readers always return dense arrays.

**HDF5 layout** (CaloChallenge): ``incident_energies`` (N, 1) and ``showers`` (N, n_voxels),
float32 MeV, gzip-compressed; our provenance JSON goes in the file attribute
``simcompress_provenance``. Plain CaloChallenge files without it are read too, the
geometry inferred from the voxel count (368, 533, 6480, 40500) or passed explicitly.

Every write goes to a hidden temporary name in the target folder and is renamed with
``os.replace`` only when complete: an interrupted write never leaves a file that looks
complete. Every problem with an input file raises a one-line
:class:`~simcompress.errors.ShowerFileError` naming the file.

Example:
    >>> from simcompress.showers.reference import simulate
    >>> from simcompress.showers.io import write_showers, open_showers
    >>> s = simulate("ds1-photons", 100, energies="fixed:4096", seed=3, progress=False)
    >>> import tempfile, os
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = write_showers(os.path.join(tmp.name, "ref.root"), s)
    >>> r = open_showers(path)
    >>> r.n_events, r.geometry.name, r.layout
    (100, 'ds1-photons', 'dense')
    >>> bool((r.read().showers == s.showers).all())
    True
    >>> tmp.cleanup()
"""

from __future__ import annotations

import functools
import glob as _glob
import hashlib
import json
import logging
import os
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._provenance import software_versions, utc_now
from ..errors import ConfigError, GeometryError, ShowerFileError, SimcompressError, UnknownNameError
from .data import ShowerSet, check_showers
from .geometry import Geometry, builtin_geometries
from .layout import (
    ENERGY_BRANCHES,
    Column,
    ReadOptions,
    auto_voxel_names,
    listing,
    select_names,
    split_source,
    to_float32_mev,
)

__all__ = [
    "DENSE_MAX_VOXELS",
    "TREE_NAME",
    "ReadOptions",
    "ShowerReader",
    "content_hash",
    "file_format",
    "infer_geometry",
    "open_showers",
    "write_showers",
]

log = logging.getLogger(__name__)

TREE_NAME = "showers"
PROVENANCE_KEY = "provenance"
HDF5_PROVENANCE_ATTR = "simcompress_provenance"
FORMAT_NAME = "simcompress-showers"
FORMAT_VERSION = 1
#: geometries with at most this many voxels are written dense by ``layout="auto"``.
DENSE_MAX_VOXELS = 2048
#: target uncompressed bytes per ``extend`` (one basket per branch).
BASKET_BYTES = 16 * 1024 * 1024
ROOT_SUFFIXES = (".root",)
HDF5_SUFFIXES = (".h5", ".hdf5")
#: voxel counts of the CaloChallenge datasets, for files that carry no geometry.
CALOCHALLENGE_VOXELS = {368: "ds1-photons", 533: "ds1-pions", 6480: "ds2", 40500: "ds3"}
_RESERVED = (
    "format",
    "format_version",
    "layout",
    "n_events",
    "n_voxels",
    "geometry",
    "geometry_name",
    "geometry_fingerprint",
    "created",
    "software",
    "content_hash",
    "incident_energy_range_mev",
)


# ============================================================================ helpers
class _ContentHasher:
    """Chunk-independent content hash of (incident energies, showers): float32 little-endian bytes."""

    def __init__(self) -> None:
        self.h_inc = hashlib.sha256()
        self.h_sh = hashlib.sha256()
        self.n = 0
        self.v: int | None = None

    def update(self, incident: np.ndarray, showers: np.ndarray) -> None:
        # memoryview of a contiguous little-endian float32 array: hashed without a copy
        self.h_inc.update(memoryview(np.ascontiguousarray(incident, dtype="<f4")).cast("B"))
        self.h_sh.update(memoryview(np.ascontiguousarray(showers, dtype="<f4")).cast("B"))
        self.n += len(incident)
        self.v = int(showers.shape[1])

    def hexdigest(self) -> str:
        blob = f"{self.n}:{self.v}:{self.h_inc.hexdigest()}:{self.h_sh.hexdigest()}".encode()
        return hashlib.sha256(blob).hexdigest()


def content_hash(data: ShowerSet | Iterable[ShowerSet]) -> str:
    """SHA-256 of the decoded content (incident energies and voxels as float32), independent of chunking.

    This is the ``content_hash`` stored in every file's provenance; compare it to check that
    two files, or a file and an in-memory sample, hold identical showers.
    """
    h = _ContentHasher()
    for chunk in [data] if isinstance(data, ShowerSet) else data:
        h.update(chunk.incident_energy, chunk.showers)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    msg = f"metadata value of type {type(obj).__name__} is not JSON-serialisable"
    raise TypeError(msg)


def _dumps(d: dict[str, Any], path: Path) -> str:
    try:
        return json.dumps(d, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as err:
        msg = f"{path}: provenance metadata cannot be stored as JSON ({err})"
        raise ShowerFileError(msg) from None


def file_format(path: str | os.PathLike[str]) -> str:
    """``"root"`` or ``"hdf5"`` from a file name's suffix; :class:`ShowerFileError` otherwise."""
    p = Path(path)
    suf = p.suffix.lower()
    if suf in ROOT_SUFFIXES:
        return "root"
    if suf in HDF5_SUFFIXES:
        return "hdf5"
    msg = f"{p}: cannot tell the file format from suffix {suf or '(none)'!r}; use .root, .h5 or .hdf5"
    raise ShowerFileError(msg)


def _known_voxel_counts() -> dict[int, str]:
    """Voxel counts of the built-in geometries (CaloChallenge first), plus each Cartesian one's count with
    its overflow cells (CaloGAN's Geant4 files carry one per layer)."""
    out = dict(CALOCHALLENGE_VOXELS)
    for name in builtin_geometries():
        if name in out.values():
            continue
        g = Geometry.from_name(name)
        out.setdefault(g.n_voxels, name)
        if g.overflow_values:
            out.setdefault(g.n_voxels + g.overflow_values, name)
    return out


def infer_geometry(n_voxels: int, source: str = "<file>") -> Geometry:
    """The built-in geometry with ``n_voxels`` voxels (CaloChallenge 368, 533, 6480, 40500; others by count)."""
    known = _known_voxel_counts()
    name = known.get(int(n_voxels))
    if name is None:
        listing_ = ", ".join(f"{v} ({n})" for v, n in sorted(known.items()))
        msg = (
            f"{source}: cannot infer the geometry from {n_voxels} voxels per event (known: {listing_}); "
            "pass geometry= (--geometry), or voxels= (--voxels) if the wrong branches were picked"
        )
        raise ShowerFileError(
            msg
        )
    return Geometry.from_name(name)


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


def _tmp_path(path: Path) -> Path:
    # hidden (globs like *.root skip it), unique per process and call, in the target folder (same filesystem)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")


# ============================================================================ writing
@dataclass
class _Chunks:
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
                raise ShowerFileError(
                    msg
                )
            if s is self.first:
                if not s.geometry.same_binning(geo):
                    log.info("writing %s with geometry %r instead of the data's %r", self.path, geo.name, s.geometry.name)
            elif not s.geometry.same_binning(self.first.geometry):  # type: ignore[union-attr]
                msg = (
                    f"{self.path}: chunks with different binnings ({self.first.geometry.name!r} and "  # type: ignore[union-attr]
                    f"{s.geometry.name!r}) cannot go into one file; nothing written"
                )
                raise ShowerFileError(
                    msg
                )
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


@functools.lru_cache(maxsize=1)
def _software() -> tuple[tuple[str, str], ...]:
    return tuple(software_versions().items())


def _provenance(
    base: dict[str, Any], geo: Geometry, layout: str, hasher: _ContentHasher, e_range: list[float]
) -> dict[str, Any]:
    prov = {k: v for k, v in base.items() if k not in _RESERVED}
    prov.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "layout": layout,
            "n_events": hasher.n,
            "n_voxels": geo.n_voxels,
            "geometry": geo.to_dict(),
            "geometry_name": geo.name,
            "geometry_fingerprint": geo.fingerprint,
            "created": utc_now(),
            "software": dict(_software()),
            "content_hash": hasher.hexdigest(),
            "incident_energy_range_mev": e_range,
        }
    )
    return prov


def _sparse(showers: np.ndarray, idx_dtype: type) -> tuple[np.ndarray, Any, Any]:
    import awkward as ak

    rows, cols = np.nonzero(showers)
    counts = np.bincount(rows, minlength=showers.shape[0]).astype(np.int64)
    values = showers[rows, cols]
    return counts, ak.unflatten(cols.astype(idx_dtype), counts), ak.unflatten(values, counts)


def _write_root(tmp: Path, chunks: _Chunks, layout: str, compression: str, level: int) -> dict[str, Any]:
    import uproot

    geo = chunks.geometry
    assert geo is not None
    codecs = {"zstd": uproot.ZSTD, "zlib": uproot.ZLIB, "lz4": uproot.LZ4, "lzma": uproot.LZMA}
    if compression not in codecs and compression != "none":
        msg = f"compression {compression!r} is not allowed; allowed: zstd, zlib, lz4, lzma, none"
        raise ConfigError(msg)
    comp = None if compression == "none" else codecs[compression](level)
    hasher = _ContentHasher()
    e_lo, e_hi = np.inf, -np.inf
    idx_dtype = np.uint16 if geo.n_voxels <= 65536 else np.uint32
    if layout == "dense":
        types: dict[str, Any] = {"incident_energy": np.float32, "voxels": ("float32", (geo.n_voxels,))}
        per_event = 4 * (geo.n_voxels + 1)
    else:
        types = {"incident_energy": np.float32, "hit_idx": f"var * {np.dtype(idx_dtype).name}", "hit_e": "var * float32"}
        per_event = 4 + 6 * max(1, geo.n_voxels // 8)  # ~12 % occupancy
    target = int(np.clip(BASKET_BYTES // per_event, 1000, 200_000))
    with uproot.recreate(tmp, compression=comp) as f:
        tree = f.mktree(
            TREE_NAME,
            types,
            counter_name=lambda counted: "nhit",
            title="simcompress showers (MeV)",
            initial_basket_capacity=64,
        )
        for s in chunks.rebatched(target):
            hasher.update(s.incident_energy, s.showers)
            e_lo = min(e_lo, float(s.incident_energy.min()))
            e_hi = max(e_hi, float(s.incident_energy.max()))
            if layout == "dense":
                tree.extend({"incident_energy": s.incident_energy, "voxels": s.showers})
            else:
                _, idx, e = _sparse(s.showers, idx_dtype)
                tree.extend({"incident_energy": s.incident_energy, "hit_idx": idx, "hit_e": e})
        if hasher.n == 0:
            msg = f"{chunks.path}: nothing to write (0 events)"
            raise ShowerFileError(msg)
        prov = _provenance(chunks.metadata, geo, layout, hasher, [e_lo, e_hi])
        f[PROVENANCE_KEY] = _dumps(prov, chunks.path)
    return prov


def _write_hdf5(tmp: Path, chunks: _Chunks, level: int) -> dict[str, Any]:
    import h5py

    geo = chunks.geometry
    assert geo is not None
    v = geo.n_voxels
    hasher = _ContentHasher()
    e_lo, e_hi = np.inf, -np.inf
    target = int(np.clip(BASKET_BYTES // (4 * (v + 1)), 256, 100_000))
    row_chunk = int(max(1, min(1024, (1 << 20) // (4 * v))))
    with h5py.File(tmp, "w") as f:
        opts = {"compression": "gzip", "compression_opts": level, "shuffle": True}
        d_inc = f.create_dataset("incident_energies", (0, 1), maxshape=(None, 1), dtype="<f4", chunks=(65536, 1), **opts)
        d_sh = f.create_dataset("showers", (0, v), maxshape=(None, v), dtype="<f4", chunks=(row_chunk, v), **opts)
        for s in chunks.rebatched(target):
            n0, n1 = hasher.n, hasher.n + len(s)
            d_inc.resize((n1, 1))
            d_sh.resize((n1, v))
            d_inc[n0:n1, 0] = s.incident_energy
            d_sh[n0:n1] = s.showers
            hasher.update(s.incident_energy, s.showers)
            e_lo = min(e_lo, float(s.incident_energy.min()))
            e_hi = max(e_hi, float(s.incident_energy.max()))
        if hasher.n == 0:
            msg = f"{chunks.path}: nothing to write (0 events)"
            raise ShowerFileError(msg)
        prov = _provenance(chunks.metadata, geo, "dense", hasher, [e_lo, e_hi])
        f.attrs[HDF5_PROVENANCE_ATTR] = _dumps(prov, chunks.path)
    return prov


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
    chunks = _Chunks(source, geo, p)
    geo = chunks.start()
    if chunks.first is not None and chunks.first.showers.ndim == 2 and chunks.first.showers.shape[1] != geo.n_voxels:
        msg = f"{p}: data has {chunks.first.showers.shape[1]} voxels per event but geometry {geo.name!r} has {geo.n_voxels}"
        raise ShowerFileError(
            msg
        )
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
    tmp = _tmp_path(p)
    try:
        if fmt == "root":
            _write_root(tmp, chunks, lay, compression, 1 if compression_level is None else compression_level)
        else:
            _write_hdf5(tmp, chunks, 4 if compression_level is None else compression_level)
        os.replace(tmp, p)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        msg = f"{p}: cannot write ({type(err).__name__}: {err.strerror or err})"
        raise ShowerFileError(msg) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s (%s, %s)", p, fmt, lay)
    return p


# ============================================================================ reading
_ROOT_MAGIC = b"root"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _sniff(path: Path) -> str:
    """Format from the file's bytes; errors for missing, empty, unknown and truncated files."""
    if not path.exists():
        msg = f"{path}: file not found"
        raise ShowerFileError(msg)
    if not path.is_file():
        msg = f"{path}: not a regular file"
        raise ShowerFileError(msg)
    size = path.stat().st_size
    if size == 0:
        msg = f"{path}: empty file (0 bytes)"
        raise ShowerFileError(msg)
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(_ROOT_MAGIC):
        if len(head) < 20:
            msg = f"{path}: truncated ROOT file ({size} bytes, header incomplete)"
            raise ShowerFileError(msg)
        version = struct.unpack(">i", head[4:8])[0]
        end = struct.unpack(">q", head[12:20])[0] if version >= 1_000_000 else struct.unpack(">i", head[12:16])[0]
        if end > size:
            msg = f"{path}: truncated ROOT file ({size} of {end} bytes present)"
            raise ShowerFileError(msg)
        return "root"
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    import h5py

    try:  # HDF5 with a user block has its signature at 512, 1024, ...
        if h5py.is_hdf5(str(path)):
            return "hdf5"
    except OSError:
        pass
    msg = f"{path}: not a ROOT or HDF5 file (starts with {head[:8]!r})"
    raise ShowerFileError(msg)


@dataclass
class _FileInfo:
    path: Path
    format: str
    n_events: int
    n_voxels: int | None
    layout: str
    provenance: dict[str, Any]
    geometry: Geometry | None
    #: where the showers are: tree (ROOT), energy branch/dataset, voxel columns, units
    tree: str = TREE_NAME
    energy: str = "incident_energy"
    columns: tuple[Column, ...] = ()
    options: ReadOptions = field(default_factory=ReadOptions)
    #: trailing per-event values dropped as overflow (CaloGAN: one per layer)
    overflow: int = 0

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"energy": self.energy, "energy_unit": self.options.energy_unit}
        if self.format == "root":
            d["tree"] = self.tree
        if self.layout == "sparse":
            d["voxels"] = "nhit, hit_idx, hit_e (sparse)"
        else:
            names = [c.name for c in self.columns]
            kinds = "vector" if any(c.jagged for c in self.columns) else "array"
            d["voxels"] = (names[0] if len(names) == 1 else f"{listing(names, 6)}") + f" ({kinds}, {sum(c.width for c in self.columns)} values)"
        d["voxel_unit"] = self.options.voxel_unit
        if self.overflow:
            d["overflow_values_dropped"] = self.overflow
        return d


def _geometry_from_provenance(prov: dict[str, Any], path: Path) -> Geometry | None:
    gd = prov.get("geometry")
    if isinstance(gd, dict):
        try:
            geo = Geometry.from_dict(gd, source=f"{path}:provenance.geometry")
        except GeometryError as err:
            msg = f"{path}: invalid geometry in provenance ({err})"
            raise ShowerFileError(msg) from None
        name = gd.get("name")
        if name in builtin_geometries():
            builtin = Geometry.from_name(name)
            if builtin == geo:  # same binning, depths and material: share the cached built-in
                return builtin
        return geo
    name = prov.get("geometry_name") or (gd if isinstance(gd, str) else None)
    if name:
        try:
            return Geometry.from_name(str(name))
        except (UnknownNameError, GeometryError) as err:
            msg = f"{path}: {err}"
            raise ShowerFileError(msg) from None
    return None


def _root_column(tree: Any, name: str, is_rntuple: bool, path: Path) -> Column:
    """Width and kind (fixed array / scalar / jagged vector) of one voxel branch."""
    try:
        if is_rntuple:
            import awkward as ak

            first = tree.arrays([name], entry_stop=1, library="ak")[name]
            if first.ndim == 1:
                return Column(name, 1)
            jag = "var" in str(first.type).split("*", 1)[1]
            return Column(name, int(ak.count(first[0], axis=None)), jagged=jag)
        br = tree[name]
        interp = br.interpretation
        kind = type(interp).__name__
        if kind == "AsJagged":
            first = br.array(entry_stop=1, library="ak")
            import awkward as ak

            return Column(name, int(ak.count(first[0], axis=None)) if len(first) else 0, jagged=True)
        if kind in ("AsDtype", "AsArray"):
            shape = getattr(interp, "inner_shape", None) or ()
            if np.dtype(interp.to_dtype).kind not in "fiub" and not shape:
                msg = f"{path}: branch {name!r} ({br.typename}) is not numeric"
                raise ShowerFileError(msg)
            return Column(name, int(np.prod(shape)) if shape else 1)
        msg = (
            f"{path}: branch {name!r} has type {br.typename!r}, which is not a number, a fixed-size array or a "
            "vector of numbers; pass voxels= (--voxels) with the shower branches"
        )
        raise ShowerFileError(
            msg
        )
    except SimcompressError:
        raise
    except Exception as err:
        msg = f"{path}: unreadable branch {name!r} ({type(err).__name__}: {err})"
        raise ShowerFileError(msg) from None


def _pick_tree(trees: dict[str, str], opts: ReadOptions, path: Path) -> str:
    has = ", ".join(f"{k} ({'RNTuple' if v == 'ROOT::RNTuple' else v})" for k, v in sorted(trees.items())) or "none"
    if opts.tree is not None:
        if opts.tree not in trees:
            msg = f"{path}: no TTree {opts.tree!r} (TTrees/RNTuples in file: {has}); fix tree= (--tree)"
            raise ShowerFileError(msg)
        return opts.tree
    if TREE_NAME in trees:
        return TREE_NAME
    if len(trees) == 1:
        return next(iter(trees))
    if not trees:
        msg = f"{path}: no TTree {TREE_NAME!r} (TTrees/RNTuples in file: none)"
        raise ShowerFileError(msg)
    msg = f"{path}: no TTree {TREE_NAME!r} (TTrees/RNTuples in file: {has}); pass the tree's name as tree= (--tree)"
    raise ShowerFileError(
        msg
    )


def _inspect_root(path: Path, opts: ReadOptions | None = None) -> _FileInfo:
    import uproot

    opts = opts or ReadOptions()
    try:
        f = uproot.open(path)
    except Exception as err:  # uproot raises many kinds on corrupt headers
        msg = f"{path}: cannot open as ROOT file ({type(err).__name__}: {str(err).splitlines()[0]})"
        raise ShowerFileError(msg) from None
    with f:
        try:
            classes = f.classnames()
        except Exception as err:
            msg = f"{path}: corrupt ROOT directory ({type(err).__name__}: {err})"
            raise ShowerFileError(msg) from None
        # our writer makes TTrees; RNTuples (uproot >= 5.7 `f[name] = data`, ROOT 6.34+) are read too
        trees = {k.rsplit(";", 1)[0]: c for k, c in classes.items() if c in ("TTree", "ROOT::RNTuple")}
        tname = _pick_tree(trees, opts, path)
        is_rntuple = trees[tname] == "ROOT::RNTuple"
        prov: dict[str, Any] = {}
        if any(k.split(";")[0] == PROVENANCE_KEY for k in classes):
            try:
                prov = json.loads(str(f[PROVENANCE_KEY]))
            except Exception as err:
                msg = f"{path}: unreadable provenance JSON ({type(err).__name__}: {err})"
                raise ShowerFileError(msg) from None
            if not isinstance(prov, dict):
                msg = f"{path}: provenance must be a JSON object"
                raise ShowerFileError(msg)
        try:
            tree = f[tname]
            names = list(tree.keys(recursive=False)) if not is_rntuple else list(tree.keys())
            n = int(tree.num_entries)
        except Exception as err:
            msg = f"{path}: corrupt TTree {tname!r} ({type(err).__name__}: {err})"
            raise ShowerFileError(msg) from None
        branches = set(names)
        where = f"TTree {tname!r}"
        # ---- incident energy
        if opts.energy_branch is not None:
            energy = opts.energy_branch
            if energy not in branches:
                msg = f"{path}: {where} has no branch {energy!r} for energy_branch= (has: {listing(names)})"
                raise ShowerFileError(
                    msg
                )
        else:
            found = [b for b in ENERGY_BRANCHES if b in branches]
            if not found:
                msg = (
                    f"{path}: {where} has no branch 'incident_energy' (nor {', '.join(ENERGY_BRANCHES[1:])}; "
                    f"has: {listing(names)}); pass the incident-energy branch as energy_branch= (--energy-branch)"
                )
                raise ShowerFileError(
                    msg
                )
            energy = found[0]
        ecol = _root_column(tree, energy, is_rntuple, path)
        if ecol.width != 1:
            msg = f"{path}: energy branch {energy!r} holds {ecol.width} values per event; it must hold one (--energy-branch)"
            raise ShowerFileError(
                msg
            )
        # ---- voxels
        columns: tuple[Column, ...] = ()
        n_vox: int | None
        if opts.voxels is not None:
            sel = select_names(opts.voxels, names, f"{path}: {where}", exclude=(energy,))
            layout = "custom"
        elif "voxels" in branches:
            sel, layout = ["voxels"], "dense"
        elif {"hit_idx", "hit_e"} <= branches:
            sel, layout = [], "sparse"
        else:
            auto = auto_voxel_names(names, energy)
            if auto is None:
                msg = (
                    f"{path}: {where} has no shower branches; need 'voxels' (dense) or 'hit_idx' and 'hit_e' (sparse), "
                    f"'cell_<i>' or 'layer_<i>' branches (has: {listing(names)}); name them with voxels= (--voxels), "
                    "e.g. 'cells' or 'cell_*'"
                )
                raise ShowerFileError(
                    msg
                )
            sel, layout = auto, "custom"
        if layout == "sparse":
            n_vox = int(prov["n_voxels"]) if "n_voxels" in prov else None
        else:
            columns = tuple(_root_column(tree, b, is_rntuple, path) for b in sel)
            n_vox = sum(c.width for c in columns)
            if layout == "dense" and (columns[0].jagged or energy != "incident_energy"):
                layout = "custom"
            if layout == "custom":
                layout = "vector" if any(c.jagged for c in columns) else ("cells" if all(c.width == 1 for c in columns) else "arrays")
                if len(columns) == 1 and not columns[0].jagged:
                    layout = "dense"
    geo = _geometry_from_provenance(prov, path)
    return _FileInfo(path, "root", n, n_vox, layout, prov, geo, tname, energy, columns, opts)


def _open_h5(path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        msg = str(err)
        if "truncated" in msg:
            msg_0 = f"{path}: truncated HDF5 file"
            raise ShowerFileError(msg_0) from None
        msg_0 = f"{path}: cannot open as HDF5 file ({msg.splitlines()[0]})"
        raise ShowerFileError(msg_0) from None


def _inspect_hdf5(path: Path, opts: ReadOptions | None = None) -> _FileInfo:
    opts = opts or ReadOptions()
    with _open_h5(path) as f:
        keys = sorted(k for k in f if hasattr(f[k], "shape"))
        # ---- incident energy
        if opts.energy_branch is not None:
            e_key = opts.energy_branch
            if e_key not in keys:
                msg = f"{path}: no dataset {e_key!r} for energy_branch= (has: {listing(keys)})"
                raise ShowerFileError(msg)
        else:
            found = [k for k in ("incident_energies", *ENERGY_BRANCHES) if k in keys]
            if not found:
                msg = (
                    f"{path}: missing dataset 'incident_energies' (CaloChallenge files need 'incident_energies' and "
                    f"'showers'; has: {listing(keys)}); name the incident-energy dataset with energy_branch= (--energy-branch)"
                )
                raise ShowerFileError(
                    msg
                )
            e_key = found[0]
        # ---- voxels
        if opts.voxels is not None:
            sel = select_names(opts.voxels, keys, str(path), what="dataset", exclude=(e_key,))
        elif "showers" in keys:
            sel = ["showers"]
        else:
            sel = auto_voxel_names(keys, e_key) or []
            if not sel:
                msg = (
                    f"{path}: missing dataset 'showers' (CaloChallenge files need 'incident_energies' and 'showers'; "
                    f"has: {listing(keys)}); name the voxel datasets with voxels= (--voxels), e.g. 'layer_*'"
                )
                raise ShowerFileError(
                    msg
                )
        inc = f[e_key]
        if inc.ndim not in (1, 2) or (inc.ndim == 2 and inc.shape[1] != 1):
            msg = f"{path}: dataset {e_key!r} must have shape (N, 1) or (N,), got {inc.shape}"
            raise ShowerFileError(msg)
        columns = []
        for k in sel:
            d = f[k]
            if d.ndim < 1 or d.dtype.kind not in "fiub":
                msg = f"{path}: dataset {k!r} (shape {d.shape}, {d.dtype}) does not hold numbers per event"
                raise ShowerFileError(msg)
            if d.shape[0] != inc.shape[0]:
                msg = f"{path}: {inc.shape[0]} incident energies but {d.shape[0]} showers in dataset {k!r}"
                raise ShowerFileError(msg)
            if sel == ["showers"] and d.ndim != 2:
                msg = f"{path}: dataset 'showers' must be 2-D (events, voxels), got shape {d.shape}"
                raise ShowerFileError(msg)
            columns.append(Column(k, int(np.prod(d.shape[1:])) if d.ndim > 1 else 1))
        prov: dict[str, Any] = {}
        raw = f.attrs.get(HDF5_PROVENANCE_ATTR)
        if raw is not None:
            try:
                prov = json.loads(raw if isinstance(raw, str) else bytes(raw).decode())
            except Exception as err:
                msg = f"{path}: unreadable provenance attribute ({type(err).__name__}: {err})"
                raise ShowerFileError(msg) from None
        n, v = int(inc.shape[0]), sum(c.width for c in columns)
    geo = _geometry_from_provenance(prov, path) if prov else None
    layout = "dense" if sel == ["showers"] else ("arrays" if len(sel) > 1 else "dense")
    return _FileInfo(path, "hdf5", n, v, layout, prov, geo, "", e_key, tuple(columns), opts)


def _expand(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], opts: ReadOptions | None = None
) -> list[tuple[Path, ReadOptions]]:
    """Files (folders and globs expanded) with their read options (``PATH;key=value`` overrides ``opts``)."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        msg = "no shower files given"
        raise ShowerFileError(msg)
    base = opts or ReadOptions()
    out: list[tuple[Path, ReadOptions]] = []
    for item in items:
        s, extra = split_source(os.fspath(item))
        o = ReadOptions.make(base, **extra) if extra else base
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in ROOT_SUFFIXES + HDF5_SUFFIXES
                           and not q.name.startswith("."))
            if not found:
                msg = f"{p}: folder holds no shower files (*.root, *.h5, *.hdf5)"
                raise ShowerFileError(msg)
            out.extend((q, o) for q in found)
        elif _glob.has_magic(s) and not p.exists():
            found = sorted(Path(x) for x in _glob.glob(s) if Path(x).is_file())  # noqa: PTH207 - absolute patterns
            if not found:
                msg = f"{s}: no files match this pattern"
                raise ShowerFileError(msg)
            out.extend((q, o) for q in found)
        else:
            out.append((p, o))
    return out


class ShowerReader:
    """Reads showers from one or several ROOT / HDF5 files as dense :class:`ShowerSet` chunks.

    Use :func:`open_showers` to make one. All files must share one voxel binning. Files
    are opened lazily when reading; memory is bounded by ``step_size`` events.

    Attributes:
        files: the shower files, in reading order.
        geometry: the geometry (from the files' provenance, the voxel count, or the caller).
        metadata: the provenance dict of the first file (empty for plain CaloChallenge files).
        n_events: total number of events.
        layout: ``"dense"`` or ``"sparse"`` (of the first file).
    """

    def __init__(self, infos: list[_FileInfo], geometry: Geometry) -> None:
        self._infos = infos
        self.geometry = geometry
        self.files = [i.path for i in infos]
        self.metadata: dict[str, Any] = dict(infos[0].provenance)
        self.n_events = sum(i.n_events for i in infos)
        self.layout = infos[0].layout
        self.formats = sorted({i.format for i in infos})
        self.options = infos[0].options

    @property
    def source_layout(self) -> dict[str, Any]:
        """Where the showers were found in the first file: tree, energy branch, voxel branches, units."""
        return self._infos[0].describe()

    def __len__(self) -> int:
        return self.n_events

    def __repr__(self) -> str:
        return f"ShowerReader({len(self.files)} file(s), {self.n_events} events, {self.geometry.name!r}, {self.layout})"

    @property
    def file_metadata(self) -> list[dict[str, Any]]:
        """Provenance dict of every file."""
        return [dict(i.provenance) for i in self._infos]

    # ------------------------------------------------------------------ raw per-file readers
    def _iter_file(self, info: _FileInfo, step: int, stop: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        try:
            if info.format == "root":
                yield from self._iter_root(info, step, stop)
            else:
                yield from self._iter_hdf5(info, step, stop)
        except SimcompressError:
            raise
        except Exception as err:  # decompression/IO errors inside a corrupt or truncated file
            first = str(err).splitlines()[0] if str(err) else ""
            msg = f"{info.path}: corrupt or truncated data ({type(err).__name__}: {first})"
            raise ShowerFileError(msg) from None

    def _iter_root(self, info: _FileInfo, step: int, stop: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import awkward as ak
        import uproot

        v = self.geometry.n_voxels
        ef, vf = info.options.energy_factor, info.options.voxel_factor
        with uproot.open(info.path) as f:
            tree = f[info.tree]
            if info.layout == "sparse":
                for b in tree.iterate([info.energy, "hit_idx", "hit_e"], step_size=step, entry_stop=stop, library="ak"):
                    inc = to_float32_mev(ak.to_numpy(b[info.energy]), ef)
                    counts = ak.to_numpy(ak.num(b["hit_idx"], axis=1)).astype(np.int64)
                    idx = ak.to_numpy(ak.flatten(b["hit_idx"])).astype(np.int64)
                    e = to_float32_mev(ak.to_numpy(ak.flatten(b["hit_e"])), vf)
                    if idx.size and (idx.max() >= v):
                        msg = (
                            f"{info.path}: hit index {int(idx.max())} out of range for geometry "
                            f"{self.geometry.name!r} with {v} voxels"
                        )
                        raise ShowerFileError(
                            msg
                        )
                    out = np.zeros((len(inc), v), dtype=np.float32)
                    out[np.repeat(np.arange(len(inc)), counts), idx] = e
                    yield inc, out
                return
            cols = info.columns
            names = [info.energy] + [c.name for c in cols]
            jagged = any(c.jagged for c in cols)
            lib = "ak" if jagged else "np"
            for b in tree.iterate(names, step_size=step, entry_stop=stop, library=lib):
                raw_e = ak.to_numpy(b[info.energy]) if lib == "ak" else b[info.energy]
                inc = to_float32_mev(np.asarray(raw_e).reshape(-1), ef)
                n = len(inc)
                parts = [c.to_2d(b[c.name], n, f"{info.path}: TTree {info.tree!r}") for c in cols]
                sh = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
                if info.overflow:
                    sh = sh[:, : sh.shape[1] - info.overflow]
                yield inc, to_float32_mev(sh, vf)

    def _iter_hdf5(self, info: _FileInfo, step: int, stop: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        ef, vf = info.options.energy_factor, info.options.voxel_factor
        with _open_h5(info.path) as f:
            d_inc = f[info.energy]
            ds = [(c, f[c.name]) for c in info.columns]
            n = info.n_events if stop is None else min(stop, info.n_events)
            for a in range(0, n, step):
                b = min(n, a + step)
                inc = to_float32_mev(np.asarray(d_inc[a:b]).reshape(-1), ef)
                parts = [np.asarray(d[a:b]).reshape(b - a, c.width) for c, d in ds]
                sh = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
                if info.overflow:
                    sh = sh[:, : sh.shape[1] - info.overflow]
                yield inc, to_float32_mev(sh, vf)

    # ------------------------------------------------------------------ public API
    def events_per_step(self, step_size: int | str | None) -> int:
        """Events per chunk for ``step_size``: an event count, or a memory size such as ``"200 MB"``
        (of dense float32 voxels, as ``uproot.iterate`` accepts)."""
        if step_size is None:
            return max(1, min(100_000, (256 << 20) // (4 * (self.geometry.n_voxels + 1))))
        if isinstance(step_size, str):
            text = step_size.strip().upper().replace(" ", "")
            units = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 1024.0, "MIB": 1024.0**2, "GIB": 1024.0**3, "B": 1.0}
            for unit in sorted(units, key=len, reverse=True):
                if text.endswith(unit):
                    try:
                        nbytes = float(text[: -len(unit)]) * units[unit]
                    except ValueError:
                        break
                    return max(1, int(nbytes // (4 * (self.geometry.n_voxels + 1))))
            msg = f"step_size {step_size!r}: expected a number of events or a size such as '200 MB'"
            raise ConfigError(msg)
        step = int(step_size)
        if step < 1:
            msg = f"step_size must be >= 1, got {step_size}"
            raise ConfigError(msg)
        return step

    def __iter__(self) -> Iterator[ShowerSet]:
        return self.iterate()

    def iterate(
        self, step_size: int | str | None = None, stop: int | None = None, validate: bool = True
    ) -> Iterator[ShowerSet]:
        """Yield dense :class:`ShowerSet` chunks of exactly ``step_size`` events (the last may be shorter).

        Chunks span file boundaries. Each chunk is checked (NaN/inf, negative beyond the
        tolerance) and a bad one raises :class:`ShowerFileError` naming its file.

        Args:
            step_size: events per chunk (memory bound), or a size such as ``"200 MB"``; default
                100 000 events or 256 MB of dense voxels, whichever is fewer (ds3: 1 657 events).
            stop: read at most this many events in total.
            validate: check values (on by default).
        """
        step = self.events_per_step(step_size)
        remaining = self.n_events if stop is None else max(0, min(int(stop), self.n_events))
        buf_e: list[np.ndarray] = []
        buf_s: list[np.ndarray] = []
        buffered = 0
        for info in self._infos:
            if remaining <= 0:
                break
            take = min(remaining, info.n_events)
            for inc, sh in self._iter_file(info, step, take):
                if validate:
                    check_showers(inc, sh, self.geometry, str(info.path))
                buf_e.append(inc)
                buf_s.append(sh)
                buffered += len(inc)
                while buffered >= step:
                    e = np.concatenate(buf_e) if len(buf_e) > 1 else buf_e[0]
                    s = np.concatenate(buf_s) if len(buf_s) > 1 else buf_s[0]
                    yield ShowerSet(e[:step], s[:step], self.geometry, dict(self.metadata))
                    buf_e, buf_s = [e[step:]], [s[step:]]
                    buffered -= step
            remaining -= take
        if buffered:
            e = np.concatenate(buf_e) if len(buf_e) > 1 else buf_e[0]
            s = np.concatenate(buf_s) if len(buf_s) > 1 else buf_s[0]
            yield ShowerSet(e, s, self.geometry, dict(self.metadata))

    def read(self, stop: int | None = None) -> ShowerSet:
        """All events (or the first ``stop``) as one :class:`ShowerSet`."""
        n = self.n_events if stop is None else max(0, min(int(stop), self.n_events))
        chunks = list(self.iterate(step_size=max(n, 1), stop=n))
        if not chunks:
            return ShowerSet(np.zeros(0, np.float32), np.zeros((0, self.geometry.n_voxels), np.float32), self.geometry, dict(self.metadata))
        return chunks[0] if len(chunks) == 1 else ShowerSet.concatenate(chunks)

    def incident_energy(self) -> np.ndarray:
        """Incident energies (float32 MeV) of all events; reads only that branch/dataset."""
        out = []
        for info in self._infos:
            try:
                if info.format == "root":
                    import uproot

                    with uproot.open(info.path) as f:
                        raw = f[info.tree][info.energy].array(library="np")
                else:
                    with _open_h5(info.path) as f:
                        raw = np.asarray(f[info.energy][:])
                out.append(to_float32_mev(np.asarray(raw).reshape(-1), info.options.energy_factor))
            except SimcompressError:
                raise
            except Exception as err:
                msg = f"{info.path}: corrupt or truncated data ({type(err).__name__}: {err})"
                raise ShowerFileError(msg) from None
            e = out[-1]
            if not np.all(np.isfinite(e)) or np.any(e <= 0):
                msg = f"{info.path}: incident energies must be finite and > 0 MeV"
                raise ShowerFileError(msg)
        return np.concatenate(out)

    def iterate_branches(self, branches: Sequence[str], step_size: int = 100_000) -> Iterator[dict[str, np.ndarray]]:
        """Raw branch selection: yield dicts of the named ROOT branches / HDF5 datasets, file by file.

        Only the named columns are read. Jagged ROOT branches come back as flat arrays with
        the ``nhit`` counts under ``"nhit"`` (add it to ``branches``).
        """
        for info in self._infos:
            try:
                if info.format == "root":
                    import awkward as ak
                    import uproot

                    with uproot.open(info.path) as f:
                        tree = f[info.tree]
                        missing = [b for b in branches if b not in tree]
                        if missing:
                            msg = f"{info.path}: missing branch {missing[0]!r} (has: {', '.join(tree.keys())})"
                            raise ShowerFileError(
                                msg
                            )
                        for b in tree.iterate(list(branches), step_size=int(step_size), library="ak"):
                            yield {k: ak.to_numpy(ak.flatten(b[k], axis=None)) for k in branches}
                else:
                    with _open_h5(info.path) as f:
                        missing = [b for b in branches if b not in f]
                        if missing:
                            msg = f"{info.path}: missing dataset {missing[0]!r} (has: {', '.join(f.keys())})"
                            raise ShowerFileError(
                                msg
                            )
                        for a in range(0, info.n_events, int(step_size)):
                            yield {k: np.asarray(f[k][a : a + int(step_size)]) for k in branches}
            except SimcompressError:
                raise
            except Exception as err:
                msg = f"{info.path}: corrupt or truncated data ({type(err).__name__}: {err})"
                raise ShowerFileError(msg) from None

    def verify(self, step_size: int = 100_000) -> bool:
        """Recompute each file's content hash and compare with its provenance (files without one: skipped).

        Raises:
            ShowerFileError: a file's content does not match its recorded hash.
        """
        for info in self._infos:
            want = info.provenance.get("content_hash")
            if not want:
                continue
            h = _ContentHasher()
            for inc, sh in self._iter_file(info, int(step_size), None):
                h.update(inc, sh)
            if h.n == 0:
                h.v = self.geometry.n_voxels
            if h.hexdigest() != want:
                msg = f"{info.path}: content hash mismatch (file modified or corrupt)"
                raise ShowerFileError(msg)
        return True


def open_showers(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    geometry: Geometry | str | None = None,
    *,
    options: ReadOptions | dict[str, Any] | None = None,
    tree: str | None = None,
    energy_branch: str | None = None,
    voxels: str | None = None,
    energy_unit: str | None = None,
    voxel_unit: str | None = None,
) -> ShowerReader:
    """Open shower files for reading.

    Args:
        paths: a file, a folder (all ``*.root``/``*.h5``/``*.hdf5`` in it, e.g. a batch shard
            folder), a glob pattern, or a list of these. ROOT and HDF5 may be mixed. Each may
            carry its own read options as ``"PATH;key=value;..."`` (e.g.
            ``"calogan.root;energy_unit=GeV"``), which override the keywords below.
        geometry: override/declare the geometry (a :class:`Geometry` or name). Needed for
            plain files whose voxel count is not one of the built-in geometries'.
        options: a :class:`~simcompress.showers.layout.ReadOptions` (or dict); the keywords
            below override its fields.
        tree: TTree/RNTuple name (default ``showers`` or the file's only tree).
        energy_branch: incident-energy branch / HDF5 dataset (default ``incident_energy``,
            ``TotalEnergy``, ... see :data:`~simcompress.showers.layout.ENERGY_BRANCHES`).
        voxels: voxel branches / datasets: comma-separated names or glob patterns
            (``"cells"``, ``"cell_*"``, ``"layer_0,layer_1,layer_2"``).
        energy_unit: unit of the incident energy, ``eV``/``keV``/``MeV`` (default)/``GeV``/``TeV``.
        voxel_unit: unit of the voxel energies (default ``MeV``).

    Raises:
        ShowerFileError: missing, empty, truncated or foreign files, missing tree/branch/dataset
            (the message lists what the file holds and which option to pass), voxel count not
            matching the geometry, files with different binnings, no events.
    """
    opts = ReadOptions.make(options, tree=tree, energy_branch=energy_branch, voxels=voxels,
                            energy_unit=energy_unit, voxel_unit=voxel_unit)
    geo_arg = Geometry.from_name(geometry) if isinstance(geometry, str) else geometry
    files = _expand(paths, opts)
    infos: list[_FileInfo] = []
    for p, o in files:
        fmt = _sniff(p)
        info = _inspect_root(p, o) if fmt == "root" else _inspect_hdf5(p, o)
        if info.n_events == 0:
            msg = f"{p}: file holds no events"
            raise ShowerFileError(msg)
        infos.append(info)
    geo = geo_arg
    for info in infos:
        if geo is None:
            geo = info.geometry
        if geo is None and info.n_voxels is not None:
            geo = infer_geometry(info.n_voxels, str(info.path))
        if geo is None:
            msg = f"{info.path}: sparse file without geometry provenance; pass geometry="
            raise ShowerFileError(msg)
    assert geo is not None
    for info in infos:
        if info.n_voxels is not None and info.n_voxels != geo.n_voxels:
            extra = info.n_voxels - geo.n_voxels
            if info.layout != "sparse" and extra > 0 and extra == geo.overflow_values:
                # CaloGAN's Geant4 files: one overflow cell per layer after the voxels
                info.overflow = extra
                log.info("%s: dropping the last %d values per event (overflow cells of %r)", info.path, extra, geo.name)
            else:
                raise ShowerFileError(
                    f"{info.path}: {info.n_voxels} voxels per event but geometry {geo.name!r} has {geo.n_voxels}"
                    + ("" if opts.voxels else "; name the voxel branches with voxels= (--voxels) if others were picked")
                )
        if info.geometry is not None and not info.geometry.same_binning(geo):
            if geo_arg is None:
                msg = (
                    f"{info.path}: binning of geometry {info.geometry.name!r} differs from {geo.name!r} of "
                    f"{infos[0].path}; files opened together must share one binning"
                )
                raise ShowerFileError(
                    msg
                )
            log.warning("%s: declared geometry %r overrides the file's %r", info.path, geo.name, info.geometry.name)
    return ShowerReader(infos, geo)
