"""Reading shower files: :func:`open_showers` and :class:`ShowerReader` (dense chunks from ROOT and HDF5 files)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ...errors import ConfigError, ShowerFileError, SimcompressError
from ..data import ShowerSet, check_showers
from ..geometry import Geometry
from ..layout import ReadOptions, to_float32_mev
from .formats import infer_geometry, sniff
from .hashing import ContentHasher
from .hdf5 import inspect_hdf5, iter_hdf5, open_h5
from .inspection import FileInfo, expand_paths
from .root import inspect_root, iter_root

__all__ = ["ShowerReader", "open_showers"]

log = logging.getLogger("simcompress.showers.io")


class ShowerReader:
    """Reads showers from one or several ROOT / HDF5 files as dense :class:`ShowerSet` chunks.

    Use :func:`open_showers` to make one. All files must share one voxel binning. Files
    are opened lazily when reading; memory is bounded by ``step_size`` events.

    Attributes:
        files: the shower files, in reading order.
        geometry: the geometry (from the files' provenance, the voxel count, or the caller).
        metadata: the provenance dict of the first file (empty for plain CaloChallenge files).
        n_events: total number of events.
        layout: ``"dense"`` or ``"sparse"`` (of the first file).
    """

    def __init__(self, infos: list[FileInfo], geometry: Geometry) -> None:
        self._infos = infos
        self.geometry = geometry
        self.files = [i.path for i in infos]
        self.metadata: dict[str, Any] = dict(infos[0].provenance)
        self.n_events = sum(i.n_events for i in infos)
        self.layout = infos[0].layout
        self.formats = sorted({i.format for i in infos})
        self.options = infos[0].options

    @property
    def source_layout(self) -> dict[str, Any]:
        """Where the showers were found in the first file: tree, energy branch, voxel branches, units."""
        return self._infos[0].describe()

    def __len__(self) -> int:
        return self.n_events

    def __repr__(self) -> str:
        return f"ShowerReader({len(self.files)} file(s), {self.n_events} events, {self.geometry.name!r}, {self.layout})"

    @property
    def file_metadata(self) -> list[dict[str, Any]]:
        """Provenance dict of every file."""
        return [dict(i.provenance) for i in self._infos]

    # ------------------------------------------------------------------ raw per-file readers
    def _iter_file(self, info: FileInfo, step: int, stop: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        try:
            if info.format == "root":
                yield from iter_root(info, self.geometry, step, stop)
            else:
                yield from iter_hdf5(info, step, stop)
        except SimcompressError:
            raise
        except Exception as err:  # decompression/IO errors inside a corrupt or truncated file
            first = str(err).splitlines()[0] if str(err) else ""
            msg = f"{info.path}: corrupt or truncated data ({type(err).__name__}: {first})"
            raise ShowerFileError(msg) from None

    # ------------------------------------------------------------------ public API
    def events_per_step(self, step_size: int | str | None) -> int:
        """Events per chunk for ``step_size``: an event count, or a memory size such as ``"200 MB"``
        (of dense float32 voxels, as ``uproot.iterate`` accepts)."""
        if step_size is None:
            return max(1, min(100_000, (256 << 20) // (4 * (self.geometry.n_voxels + 1))))
        if isinstance(step_size, str):
            text = step_size.strip().upper().replace(" ", "")
            units = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 1024.0, "MIB": 1024.0**2, "GIB": 1024.0**3, "B": 1.0}
            for unit in sorted(units, key=len, reverse=True):
                if text.endswith(unit):
                    try:
                        nbytes = float(text[: -len(unit)]) * units[unit]
                    except ValueError:
                        break
                    return max(1, int(nbytes // (4 * (self.geometry.n_voxels + 1))))
            msg = f"step_size {step_size!r}: expected a number of events or a size such as '200 MB'"
            raise ConfigError(msg)
        step = int(step_size)
        if step < 1:
            msg = f"step_size must be >= 1, got {step_size}"
            raise ConfigError(msg)
        return step

    def __iter__(self) -> Iterator[ShowerSet]:
        return self.iterate()

    def iterate(
        self, step_size: int | str | None = None, stop: int | None = None, validate: bool = True
    ) -> Iterator[ShowerSet]:
        """Yield dense :class:`ShowerSet` chunks of exactly ``step_size`` events (the last may be shorter).

        Chunks span file boundaries. Each chunk is checked (NaN/inf, negative beyond the
        tolerance) and a bad one raises :class:`ShowerFileError` naming its file.

        Args:
            step_size: events per chunk (memory bound), or a size such as ``"200 MB"``; default
                100 000 events or 256 MB of dense voxels, whichever is fewer (ds3: 1 657 events).
            stop: read at most this many events in total.
            validate: check values (on by default).
        """
        step = self.events_per_step(step_size)
        remaining = self.n_events if stop is None else max(0, min(int(stop), self.n_events))
        buf_e: list[np.ndarray] = []
        buf_s: list[np.ndarray] = []
        buffered = 0
        for info in self._infos:
            if remaining <= 0:
                break
            take = min(remaining, info.n_events)
            for inc, sh in self._iter_file(info, step, take):
                if validate:
                    check_showers(inc, sh, self.geometry, str(info.path))
                buf_e.append(inc)
                buf_s.append(sh)
                buffered += len(inc)
                while buffered >= step:
                    e = np.concatenate(buf_e) if len(buf_e) > 1 else buf_e[0]
                    s = np.concatenate(buf_s) if len(buf_s) > 1 else buf_s[0]
                    yield ShowerSet(e[:step], s[:step], self.geometry, dict(self.metadata))
                    buf_e, buf_s = [e[step:]], [s[step:]]
                    buffered -= step
            remaining -= take
        if buffered:
            e = np.concatenate(buf_e) if len(buf_e) > 1 else buf_e[0]
            s = np.concatenate(buf_s) if len(buf_s) > 1 else buf_s[0]
            yield ShowerSet(e, s, self.geometry, dict(self.metadata))

    def read(self, stop: int | None = None) -> ShowerSet:
        """All events (or the first ``stop``) as one :class:`ShowerSet`."""
        n = self.n_events if stop is None else max(0, min(int(stop), self.n_events))
        chunks = list(self.iterate(step_size=max(n, 1), stop=n))
        if not chunks:
            return ShowerSet(np.zeros(0, np.float32), np.zeros((0, self.geometry.n_voxels), np.float32), self.geometry, dict(self.metadata))
        return chunks[0] if len(chunks) == 1 else ShowerSet.concatenate(chunks)

    def incident_energy(self) -> np.ndarray:
        """Incident energies (float32 MeV) of all events; reads only that branch/dataset."""
        out = []
        for info in self._infos:
            try:
                if info.format == "root":
                    import uproot

                    with uproot.open(info.path) as f:
                        raw = f[info.tree][info.energy].array(library="np")
                else:
                    with open_h5(info.path) as f:
                        raw = np.asarray(f[info.energy][:])
                out.append(to_float32_mev(np.asarray(raw).reshape(-1), info.options.energy_factor))
            except SimcompressError:
                raise
            except Exception as err:
                msg = f"{info.path}: corrupt or truncated data ({type(err).__name__}: {err})"
                raise ShowerFileError(msg) from None
            e = out[-1]
            if not np.all(np.isfinite(e)) or np.any(e <= 0):
                msg = f"{info.path}: incident energies must be finite and > 0 MeV"
                raise ShowerFileError(msg)
        return np.concatenate(out)

    def iterate_branches(self, branches: Sequence[str], step_size: int = 100_000) -> Iterator[dict[str, np.ndarray]]:
        """Raw branch selection: yield dicts of the named ROOT branches / HDF5 datasets, file by file.

        Only the named columns are read. Jagged ROOT branches come back as flat arrays with
        the ``nhit`` counts under ``"nhit"`` (add it to ``branches``).
        """
        for info in self._infos:
            try:
                if info.format == "root":
                    import awkward as ak
                    import uproot

                    with uproot.open(info.path) as f:
                        tree = f[info.tree]
                        missing = [b for b in branches if b not in tree]
                        if missing:
                            msg = f"{info.path}: missing branch {missing[0]!r} (has: {', '.join(tree.keys())})"
                            raise ShowerFileError(msg)
                        for b in tree.iterate(list(branches), step_size=int(step_size), library="ak"):
                            yield {k: ak.to_numpy(ak.flatten(b[k], axis=None)) for k in branches}
                else:
                    with open_h5(info.path) as f:
                        missing = [b for b in branches if b not in f]
                        if missing:
                            msg = f"{info.path}: missing dataset {missing[0]!r} (has: {', '.join(f.keys())})"
                            raise ShowerFileError(msg)
                        for a in range(0, info.n_events, int(step_size)):
                            yield {k: np.asarray(f[k][a : a + int(step_size)]) for k in branches}
            except SimcompressError:
                raise
            except Exception as err:
                msg = f"{info.path}: corrupt or truncated data ({type(err).__name__}: {err})"
                raise ShowerFileError(msg) from None

    def verify(self, step_size: int = 100_000) -> bool:
        """Recompute each file's content hash and compare with its provenance (files without one: skipped).

        Raises:
            ShowerFileError: a file's content does not match its recorded hash.
        """
        for info in self._infos:
            want = info.provenance.get("content_hash")
            if not want:
                continue
            h = ContentHasher()
            for inc, sh in self._iter_file(info, int(step_size), None):
                h.update(inc, sh)
            if h.n_events == 0:
                h.n_voxels = self.geometry.n_voxels
            if h.hexdigest() != want:
                msg = f"{info.path}: content hash mismatch (file modified or corrupt)"
                raise ShowerFileError(msg)
        return True


def open_showers(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    geometry: Geometry | str | None = None,
    *,
    options: ReadOptions | dict[str, Any] | None = None,
    tree: str | None = None,
    energy_branch: str | None = None,
    voxels: str | None = None,
    energy_unit: str | None = None,
    voxel_unit: str | None = None,
) -> ShowerReader:
    """Open shower files for reading.

    Args:
        paths: a file, a folder (all ``*.root``/``*.h5``/``*.hdf5`` in it, e.g. a batch shard
            folder), a glob pattern, or a list of these. ROOT and HDF5 may be mixed. Each may
            carry its own read options as ``"PATH;key=value;..."`` (e.g.
            ``"calogan.root;energy_unit=GeV"``), which override the keywords below.
        geometry: override/declare the geometry (a :class:`Geometry` or name). Needed for
            plain files whose voxel count is not one of the built-in geometries'.
        options: a :class:`~simcompress.showers.layout.ReadOptions` (or dict); the keywords
            below override its fields.
        tree: TTree/RNTuple name (default ``showers`` or the file's only tree).
        energy_branch: incident-energy branch / HDF5 dataset (default ``incident_energy``,
            ``TotalEnergy``, ... see :data:`~simcompress.showers.layout.ENERGY_BRANCHES`).
        voxels: voxel branches / datasets: comma-separated names or glob patterns
            (``"cells"``, ``"cell_*"``, ``"layer_0,layer_1,layer_2"``).
        energy_unit: unit of the incident energy, ``eV``/``keV``/``MeV`` (default)/``GeV``/``TeV``.
        voxel_unit: unit of the voxel energies (default ``MeV``).

    Raises:
        ShowerFileError: missing, empty, truncated or foreign files, missing tree/branch/dataset
            (the message lists what the file holds and which option to pass), voxel count not
            matching the geometry, files with different binnings, no events.
    """
    opts = ReadOptions.make(options, tree=tree, energy_branch=energy_branch, voxels=voxels,
                            energy_unit=energy_unit, voxel_unit=voxel_unit)
    geo_arg = Geometry.from_name(geometry) if isinstance(geometry, str) else geometry
    files = expand_paths(paths, opts)
    infos: list[FileInfo] = []
    for p, o in files:
        fmt = sniff(p)
        info = inspect_root(p, o) if fmt == "root" else inspect_hdf5(p, o)
        if info.n_events == 0:
            msg = f"{p}: file holds no events"
            raise ShowerFileError(msg)
        infos.append(info)
    geo = geo_arg
    for info in infos:
        if geo is None:
            geo = info.geometry
        if geo is None and info.n_voxels is not None:
            geo = infer_geometry(info.n_voxels, str(info.path))
        if geo is None:
            msg = f"{info.path}: sparse file without geometry provenance; pass geometry="
            raise ShowerFileError(msg)
    assert geo is not None
    for info in infos:
        if info.n_voxels is not None and info.n_voxels != geo.n_voxels:
            extra = info.n_voxels - geo.n_voxels
            if info.layout != "sparse" and extra > 0 and extra == geo.overflow_values:
                # CaloGAN's Geant4 files: one overflow cell per layer after the voxels
                info.overflow = extra
                log.info("%s: dropping the last %d values per event (overflow cells of %r)", info.path, extra, geo.name)
            else:
                raise ShowerFileError(
                    f"{info.path}: {info.n_voxels} voxels per event but geometry {geo.name!r} has {geo.n_voxels}"
                    + ("" if opts.voxels else "; name the voxel branches with voxels= (--voxels) if others were picked")
                )
        if info.geometry is not None and not info.geometry.same_binning(geo):
            if geo_arg is None:
                msg = (
                    f"{info.path}: binning of geometry {info.geometry.name!r} differs from {geo.name!r} of "
                    f"{infos[0].path}; files opened together must share one binning"
                )
                raise ShowerFileError(msg)
            log.warning("%s: declared geometry %r overrides the file's %r", info.path, geo.name, info.geometry.name)
    return ShowerReader(infos, geo)

