"""Shower-file formats: names and constants, telling ROOT from HDF5 (by suffix or by bytes), geometry by voxel count."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ...errors import ShowerFileError
from ..geometry import Geometry, builtin_geometries

__all__ = [
    "BASKET_BYTES",
    "CALOCHALLENGE_VOXELS",
    "DENSE_MAX_VOXELS",
    "HDF5_PROVENANCE_ATTR",
    "HDF5_SUFFIXES",
    "PROVENANCE_KEY",
    "ROOT_SUFFIXES",
    "TREE_NAME",
    "file_format",
    "infer_geometry",
    "sniff",
]

TREE_NAME = "showers"
PROVENANCE_KEY = "provenance"
HDF5_PROVENANCE_ATTR = "simcompress_provenance"
#: geometries with at most this many voxels are written dense by ``layout="auto"``.
DENSE_MAX_VOXELS = 2048
#: target uncompressed bytes per ``extend`` (one basket per branch).
BASKET_BYTES = 16 * 1024 * 1024
ROOT_SUFFIXES = (".root",)
HDF5_SUFFIXES = (".h5", ".hdf5")
#: voxel counts of the CaloChallenge datasets, for files that carry no geometry.
CALOCHALLENGE_VOXELS = {368: "ds1-photons", 533: "ds1-pions", 6480: "ds2", 40500: "ds3"}

_ROOT_MAGIC = b"root"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


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
        raise ShowerFileError(msg)
    return Geometry.from_name(name)



def sniff(path: Path) -> str:
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
