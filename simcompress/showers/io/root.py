"""ROOT shower files: the TTree writer, inspection of any file's trees and branches, and chunked reading.

Layout of the files we write: see :mod:`simcompress.showers.io`. Files from other tools
(TTrees or RNTuples, fixed-size arrays, scalar ``cell_<i>`` branches or jagged vectors)
are inspected by :func:`inspect_root` into a :class:`~.inspection.FileInfo` saying where
their showers are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ConfigError, ShowerFileError, SimcompressError
from ..geometry import Geometry
from ..layout import ENERGY_BRANCHES, Column, ReadOptions, auto_voxel_names, listing, select_names, to_float32_mev
from .formats import BASKET_BYTES, PROVENANCE_KEY, TREE_NAME
from .hashing import ContentHasher
from .inspection import FileInfo
from .provenance import build_provenance, dumps_provenance, geometry_from_provenance

if TYPE_CHECKING:
    from .writer import Chunks

__all__ = ["inspect_root", "iter_root", "write_root"]


def _sparse(showers: np.ndarray, idx_dtype: type) -> tuple[np.ndarray, Any, Any]:
    import awkward as ak

    rows, cols = np.nonzero(showers)
    counts = np.bincount(rows, minlength=showers.shape[0]).astype(np.int64)
    values = showers[rows, cols]
    return counts, ak.unflatten(cols.astype(idx_dtype), counts), ak.unflatten(values, counts)


def write_root(tmp: Path, chunks: Chunks, layout: str, compression: str, level: int) -> dict[str, Any]:
    """Write ``chunks`` to a ROOT file at ``tmp``; return the provenance stored in it."""
    import uproot

    geo = chunks.geometry
    assert geo is not None
    codecs = {"zstd": uproot.ZSTD, "zlib": uproot.ZLIB, "lz4": uproot.LZ4, "lzma": uproot.LZMA}
    if compression not in codecs and compression != "none":
        msg = f"compression {compression!r} is not allowed; allowed: zstd, zlib, lz4, lzma, none"
        raise ConfigError(msg)
    comp = None if compression == "none" else codecs[compression](level)
    hasher = ContentHasher()
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
        if hasher.n_events == 0:
            msg = f"{chunks.path}: nothing to write (0 events)"
            raise ShowerFileError(msg)
        prov = build_provenance(chunks.metadata, geo, layout, hasher, [e_lo, e_hi])
        f[PROVENANCE_KEY] = dumps_provenance(prov, chunks.path)
    return prov


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
        raise ShowerFileError(msg)
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
    raise ShowerFileError(msg)


def inspect_root(path: Path, opts: ReadOptions | None = None) -> FileInfo:
    """Inspect one ROOT file: tree, energy branch, voxel columns, layout, provenance."""
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
                raise ShowerFileError(msg)
        else:
            found = [b for b in ENERGY_BRANCHES if b in branches]
            if not found:
                msg = (
                    f"{path}: {where} has no branch 'incident_energy' (nor {', '.join(ENERGY_BRANCHES[1:])}; "
                    f"has: {listing(names)}); pass the incident-energy branch as energy_branch= (--energy-branch)"
                )
                raise ShowerFileError(msg)
            energy = found[0]
        ecol = _root_column(tree, energy, is_rntuple, path)
        if ecol.width != 1:
            msg = f"{path}: energy branch {energy!r} holds {ecol.width} values per event; it must hold one (--energy-branch)"
            raise ShowerFileError(msg)
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
                raise ShowerFileError(msg)
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
    geo = geometry_from_provenance(prov, path)
    return FileInfo(path, "root", n, n_vox, layout, prov, geo, tname, energy, columns, opts)


def iter_root(info: FileInfo, geometry: Geometry, step: int, stop: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Raw ``(incident, showers)`` chunks of one ROOT file, dense float32 MeV (values not checked)."""
    import awkward as ak
    import uproot

    v = geometry.n_voxels
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
                        f"{geometry.name!r} with {v} voxels"
                    )
                    raise ShowerFileError(msg)
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
