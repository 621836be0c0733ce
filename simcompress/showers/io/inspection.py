"""What a shower file holds and where (:class:`FileInfo`), and which files a path, folder or glob names."""

from __future__ import annotations

import glob as _glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ShowerFileError
from ..geometry import Geometry
from ..layout import Column, ReadOptions, listing, split_source
from .formats import HDF5_SUFFIXES, ROOT_SUFFIXES, TREE_NAME

__all__ = ["FileInfo", "expand_paths"]


@dataclass
class FileInfo:
    """One shower file as inspected: format, counts, layout, provenance and where its columns are."""

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


def expand_paths(
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
