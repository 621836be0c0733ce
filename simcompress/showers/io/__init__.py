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

Modules: :mod:`.writer` (:func:`write_showers`), :mod:`.reader` (:func:`open_showers`,
:class:`ShowerReader`), :mod:`.root` and :mod:`.hdf5` (per-format writing, inspection and
reading), :mod:`.inspection` (what a file holds, path expansion), :mod:`.provenance`,
:mod:`.hashing` (the one content hash, also used by :mod:`simcompress.batch`) and
:mod:`.formats` (constants, format detection, geometry by voxel count).

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

from ..layout import ReadOptions
from .formats import (
    BASKET_BYTES,
    CALOCHALLENGE_VOXELS,
    DENSE_MAX_VOXELS,
    HDF5_PROVENANCE_ATTR,
    HDF5_SUFFIXES,
    PROVENANCE_KEY,
    ROOT_SUFFIXES,
    TREE_NAME,
    file_format,
    infer_geometry,
)
from .hashing import ContentHasher, content_hash
from .provenance import FORMAT_NAME, FORMAT_VERSION
from .reader import ShowerReader, open_showers
from .writer import write_showers

__all__ = [
    "BASKET_BYTES",
    "CALOCHALLENGE_VOXELS",
    "DENSE_MAX_VOXELS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HDF5_PROVENANCE_ATTR",
    "HDF5_SUFFIXES",
    "PROVENANCE_KEY",
    "ROOT_SUFFIXES",
    "TREE_NAME",
    "ContentHasher",
    "ReadOptions",
    "ShowerReader",
    "content_hash",
    "file_format",
    "infer_geometry",
    "open_showers",
    "write_showers",
]
