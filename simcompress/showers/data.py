"""In-memory shower data: :class:`ShowerSet`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ShowerFileError
from .geometry import Geometry

__all__ = ["ShowerSet", "check_showers"]

#: negative voxel energies down to -NEGATIVE_TOLERANCE_MEV are accepted (float noise).
NEGATIVE_TOLERANCE_MEV = 1e-3


def check_showers(incident: np.ndarray, showers: np.ndarray, geometry: Geometry, source: str) -> None:
    """Raise :class:`ShowerFileError` naming ``source`` if the arrays are not valid showers."""
    if showers.ndim != 2:
        msg = f"{source}: showers must be 2-D (events, voxels), got shape {showers.shape}"
        raise ShowerFileError(msg)
    if showers.shape[1] != geometry.n_voxels:
        msg = f"{source}: {showers.shape[1]} voxels per event but geometry {geometry.name!r} has {geometry.n_voxels}"
        raise ShowerFileError(msg)
    if incident.shape != (showers.shape[0],):
        msg = f"{source}: {incident.shape[0] if incident.ndim else 0} incident energies for {showers.shape[0]} showers"
        raise ShowerFileError(msg)
    if not np.all(np.isfinite(incident)):
        msg = f"{source}: NaN or infinite incident energies (event {int(np.argmin(np.isfinite(incident)))})"
        raise ShowerFileError(msg)
    if np.any(incident <= 0):
        msg = f"{source}: incident energies must be > 0 MeV (event {int(np.argmax(incident <= 0))})"
        raise ShowerFileError(msg)
    if not showers.size:
        return
    # min/max propagate NaN and show +-inf: two fast reductions, no (N, V) temporaries on valid data
    lo, hi = showers.min(), showers.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        finite = np.isfinite(showers)
        ev = int(np.argmin(finite.all(axis=1)))
        msg = f"{source}: NaN or infinite voxel energies (first in event {ev})"
        raise ShowerFileError(msg)
    if lo < -NEGATIVE_TOLERANCE_MEV:
        ev = int(np.argmin(showers.min(axis=1)))
        msg = (
            f"{source}: negative voxel energy {float(showers.min()):.4g} MeV in event {ev} "
            f"(allowed down to -{NEGATIVE_TOLERANCE_MEV} MeV)"
        )
        raise ShowerFileError(msg)


@dataclass
class ShowerSet:
    """Showers with their incident energies, geometry and provenance.

    Attributes:
        incident_energy: (N,) float32, MeV.
        showers: (N, n_voxels) float32 voxel energies, MeV, CaloChallenge voxel order.
        geometry: the readout geometry.
        metadata: provenance (generator, seed, software versions, config, ...), JSON-serialisable.
    """

    incident_energy: np.ndarray
    showers: np.ndarray
    geometry: Geometry
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.incident_energy = np.ascontiguousarray(np.asarray(self.incident_energy, dtype=np.float32).reshape(-1))
        self.showers = np.ascontiguousarray(np.asarray(self.showers, dtype=np.float32))

    def validate(self, source: str = "<showers>") -> ShowerSet:
        check_showers(self.incident_energy, self.showers, self.geometry, source)
        return self

    def __len__(self) -> int:
        return int(self.showers.shape[0])

    @property
    def n_events(self) -> int:
        return len(self)

    def __getitem__(self, idx: Any) -> ShowerSet:
        return ShowerSet(self.incident_energy[idx], self.showers[idx], self.geometry, dict(self.metadata))

    def iter_chunks(self, step: int = 100_000) -> Iterator[ShowerSet]:
        for start in range(0, len(self), step):
            yield self[start : start + step]

    @staticmethod
    def concatenate(sets: list[ShowerSet]) -> ShowerSet:
        if not sets:
            msg = "nothing to concatenate"
            raise ShowerFileError(msg)
        g = sets[0].geometry
        for s in sets[1:]:
            if not s.geometry.same_binning(g):
                msg = f"cannot concatenate geometries {g.name!r} and {s.geometry.name!r}"
                raise ShowerFileError(msg)
        return ShowerSet(
            np.concatenate([s.incident_energy for s in sets]),
            np.concatenate([s.showers for s in sets]),
            g,
            dict(sets[0].metadata),
        )

    @property
    def total_energy(self) -> np.ndarray:
        return self.showers.sum(axis=1, dtype=np.float64)

    def layer_energies(self) -> np.ndarray:
        """(N, n_layers) energy per layer, MeV."""
        return np.add.reduceat(self.showers.astype(np.float64), self.geometry.layer_offsets[:-1], axis=1)

    def __repr__(self) -> str:
        e = f", E_inc {self.incident_energy.min():.4g}-{self.incident_energy.max():.4g} MeV" if len(self) else ""
        return f"ShowerSet({len(self)} events, {self.geometry.name!r}{e})"
