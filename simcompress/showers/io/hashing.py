"""The content hash of decoded shower arrays: the one definition used by files, batch manifests and caches.

Shower files are not byte-reproducible (ROOT writes timestamps and UUIDs into every
TFile), so showers are identified by the SHA-256 of their *decoded* arrays. Incident
energies and voxel energies feed two separate SHA-256 streams (float32, little-endian,
C order), combined with the event and voxel counts, so the hash does not depend on how
the data is chunked. It is the ``content_hash`` that
:func:`~simcompress.showers.io.write_showers` stores in every file's provenance and that
:mod:`simcompress.batch` records per shard in its manifest.

>>> import numpy as np
>>> e = np.full(4, 1000.0, np.float32)
>>> x = np.ones((4, 3), np.float32)
>>> whole, parts = ContentHasher(), ContentHasher()
>>> whole.update(e, x)
>>> parts.update(e[:1], x[:1]); parts.update(e[1:], x[1:])
>>> whole.hexdigest() == parts.hexdigest(), parts.n_events, parts.n_voxels
(True, 4, 3)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from ..data import ShowerSet

__all__ = ["ContentHasher", "content_hash"]


class ContentHasher:
    """Streaming SHA-256 of ``(incident_energy, showers)`` chunks, independent of the chunk size.

    Attributes:
        n_events: events hashed so far.
        n_voxels: voxels per event (None before the first chunk).
    """

    def __init__(self) -> None:
        self._inc = hashlib.sha256()
        self._vox = hashlib.sha256()
        self.n_events = 0
        self.n_voxels: int | None = None

    def update(self, incident_energy: np.ndarray, showers: np.ndarray) -> None:
        """Add one chunk: ``(N,)`` (or ``(N, 1)``) incident energies and ``(N, V)`` showers.

        Raises:
            ValueError: shapes that do not pair up, or a voxel count differing from earlier chunks.
        """
        inc = np.ascontiguousarray(incident_energy, dtype="<f4").reshape(-1)
        vox = np.ascontiguousarray(showers, dtype="<f4")
        if vox.ndim != 2 or vox.shape[0] != inc.shape[0]:
            msg = f"expected (N,) and (N, V) arrays, got {inc.shape} and {vox.shape}"
            raise ValueError(msg)
        if self.n_voxels is None:
            self.n_voxels = int(vox.shape[1])
        elif vox.shape[1] != self.n_voxels:
            msg = f"voxel count changed from {self.n_voxels} to {vox.shape[1]} between chunks"
            raise ValueError(msg)
        # the buffers of the contiguous arrays are hashed without a copy
        self._inc.update(inc.data)
        self._vox.update(vox.data)
        self.n_events += int(inc.shape[0])

    def hexdigest(self) -> str:
        """The hash of everything added so far (hex)."""
        blob = f"{self.n_events}:{self.n_voxels}:{self._inc.hexdigest()}:{self._vox.hexdigest()}"
        return hashlib.sha256(blob.encode()).hexdigest()


def content_hash(data: ShowerSet | Iterable[ShowerSet]) -> str:
    """SHA-256 of the decoded content (incident energies and voxels as float32), independent of chunking.

    This is the ``content_hash`` stored in every file's provenance; compare it to check that
    two files, or a file and an in-memory sample, hold identical showers.
    """
    h = ContentHasher()
    for chunk in [data] if isinstance(data, ShowerSet) else data:
        h.update(chunk.incident_energy, chunk.showers)
    return h.hexdigest()
