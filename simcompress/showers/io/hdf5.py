"""CaloChallenge HDF5 shower files: the writer, inspection of any file's datasets, and chunked reading.

``incident_energies`` (N, 1) and ``showers`` (N, n_voxels), float32 MeV, gzip-compressed;
our provenance JSON goes in the file attribute ``simcompress_provenance``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ShowerFileError
from ..layout import ENERGY_BRANCHES, Column, ReadOptions, auto_voxel_names, listing, select_names, to_float32_mev
from .formats import BASKET_BYTES, HDF5_PROVENANCE_ATTR
from .hashing import ContentHasher
from .inspection import FileInfo
from .provenance import build_provenance, dumps_provenance, geometry_from_provenance

if TYPE_CHECKING:
    from .writer import Chunks

__all__ = ["inspect_hdf5", "iter_hdf5", "open_h5", "write_hdf5"]


def write_hdf5(tmp: Path, chunks: Chunks, level: int) -> dict[str, Any]:
    """Write ``chunks`` to a CaloChallenge HDF5 file at ``tmp``; return the provenance stored in it."""
    import h5py

    geo = chunks.geometry
    assert geo is not None
    v = geo.n_voxels
    hasher = ContentHasher()
    e_lo, e_hi = np.inf, -np.inf
    target = int(np.clip(BASKET_BYTES // (4 * (v + 1)), 256, 100_000))
    row_chunk = int(max(1, min(1024, (1 << 20) // (4 * v))))
    with h5py.File(tmp, "w") as f:
        opts = {"compression": "gzip", "compression_opts": level, "shuffle": True}
        d_inc = f.create_dataset("incident_energies", (0, 1), maxshape=(None, 1), dtype="<f4", chunks=(65536, 1), **opts)
        d_sh = f.create_dataset("showers", (0, v), maxshape=(None, v), dtype="<f4", chunks=(row_chunk, v), **opts)
        for s in chunks.rebatched(target):
            n0, n1 = hasher.n_events, hasher.n_events + len(s)
            d_inc.resize((n1, 1))
            d_sh.resize((n1, v))
            d_inc[n0:n1, 0] = s.incident_energy
            d_sh[n0:n1] = s.showers
            hasher.update(s.incident_energy, s.showers)
            e_lo = min(e_lo, float(s.incident_energy.min()))
            e_hi = max(e_hi, float(s.incident_energy.max()))
        if hasher.n_events == 0:
            msg = f"{chunks.path}: nothing to write (0 events)"
            raise ShowerFileError(msg)
        prov = build_provenance(chunks.metadata, geo, "dense", hasher, [e_lo, e_hi])
        f.attrs[HDF5_PROVENANCE_ATTR] = dumps_provenance(prov, chunks.path)
    return prov


def open_h5(path: Path) -> Any:
    """``h5py.File(path, "r")``, with a one-line :class:`ShowerFileError` for unreadable files."""
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


def inspect_hdf5(path: Path, opts: ReadOptions | None = None) -> FileInfo:
    """Inspect one HDF5 file: energy and voxel datasets, provenance."""
    opts = opts or ReadOptions()
    with open_h5(path) as f:
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
                raise ShowerFileError(msg)
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
                raise ShowerFileError(msg)
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
    geo = geometry_from_provenance(prov, path) if prov else None
    layout = "dense" if sel == ["showers"] else ("arrays" if len(sel) > 1 else "dense")
    return FileInfo(path, "hdf5", n, v, layout, prov, geo, "", e_key, tuple(columns), opts)


def iter_hdf5(info: FileInfo, step: int, stop: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Raw ``(incident, showers)`` chunks of one HDF5 file, dense float32 MeV (values not checked)."""
    ef, vf = info.options.energy_factor, info.options.voxel_factor
    with open_h5(info.path) as f:
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
