"""The provenance JSON of a shower file: what the writers store, and the geometry a reader recovers from it.

Every file carries one JSON object (ROOT: TObjString ``provenance``; HDF5: file attribute
``simcompress_provenance``): the caller's metadata plus the reserved keys set here (format,
layout, counts, full geometry, creation time, software versions, content hash, energy range).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..._provenance import software_versions, utc_now
from ...errors import GeometryError, ShowerFileError, UnknownNameError
from ..geometry import Geometry, builtin_geometries
from .hashing import ContentHasher

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "RESERVED_KEYS", "build_provenance", "dumps_provenance", "geometry_from_provenance"]

FORMAT_NAME = "simcompress-showers"
FORMAT_VERSION = 1
#: keys the writer sets itself; the caller's metadata cannot override them.
RESERVED_KEYS = (
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


def dumps_provenance(d: dict[str, Any], path: Path) -> str:
    """``d`` as sorted JSON (numpy values, paths and pydantic models converted); one-line error naming ``path``."""
    try:
        return json.dumps(d, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as err:
        msg = f"{path}: provenance metadata cannot be stored as JSON ({err})"
        raise ShowerFileError(msg) from None


@functools.lru_cache(maxsize=1)
def _software() -> tuple[tuple[str, str], ...]:
    return tuple(software_versions().items())


def build_provenance(
    base: dict[str, Any], geo: Geometry, layout: str, hasher: ContentHasher, e_range: list[float]
) -> dict[str, Any]:
    """The caller's metadata ``base`` (reserved keys dropped) plus the reserved keys for a finished file."""
    prov = {k: v for k, v in base.items() if k not in RESERVED_KEYS}
    prov.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "layout": layout,
            "n_events": hasher.n_events,
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


def geometry_from_provenance(prov: dict[str, Any], path: Path) -> Geometry | None:
    """The geometry a file's provenance records (the built-in object when it is one), or None."""
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
