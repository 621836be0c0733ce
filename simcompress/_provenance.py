"""Provenance helpers shared by every writer: software versions, hashes, timestamps."""

from __future__ import annotations

import hashlib
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

__all__ = ["sha256_arrays", "sha256_file", "software_versions", "utc_now"]

_PACKAGES = ("simcompress", "torch", "numpy", "scipy", "uproot", "awkward", "h5py", "hls4ml")


def software_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_arrays(*arrays: object) -> str:
    """Content hash of numpy arrays (dtype, shape and bytes): reproducibility is identical decoded arrays."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(a)
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
