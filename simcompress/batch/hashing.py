"""Content hashes of decoded shower arrays.

Shower files are not byte-reproducible (uproot writes timestamps and UUIDs into
every TFile), so a shard is identified by the sha256 of its *decoded* arrays.
The hash is computed chunk by chunk and does not depend on the chunking: the
incident energies and the voxel energies are fed to two separate sha256 streams
(float32, little-endian, C order), which are combined with the array shapes.
It is the same definition as the ``content_hash`` that
:func:`simcompress.showers.io.write_showers` stores in every file's provenance,
so a shard's manifest entry, its file's provenance and a fresh decode all agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = ["ContentHasher", "content_hash"]


class ContentHasher:
    """Streaming sha256 of ``(incident_energy, showers)`` pairs, independent of the chunk size."""

    def __init__(self) -> None:
        self._inc = hashlib.sha256()
        self._vox = hashlib.sha256()
        self.n_events = 0
        self.n_voxels: int | None = None

    def update(self, incident_energy: np.ndarray, showers: np.ndarray) -> None:
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
        self._inc.update(inc.tobytes())
        self._vox.update(vox.tobytes())
        self.n_events += int(inc.shape[0])

    def hexdigest(self) -> str:
        blob = f"{self.n_events}:{self.n_voxels}:{self._inc.hexdigest()}:{self._vox.hexdigest()}"
        return hashlib.sha256(blob.encode()).hexdigest()


def content_hash(chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[str, int]:
    """Return ``(sha256 hex, n_events)`` of an iterable of ``(incident_energy, showers)`` chunks."""
    h = ContentHasher()
    for inc, vox in chunks:
        h.update(inc, vox)
    return h.hexdigest(), h.n_events
