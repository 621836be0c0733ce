"""How showers are laid out in files that simcompress did not write: :class:`ReadOptions`.

ROOT users store showers in many ways. The reader maps all of them onto dense
``(N, n_voxels)`` float32 MeV arrays:

* one **fixed-size array** branch (``float voxels[368]``, ``float layer[12][12]``; our own layout);
* one **variable-size vector** branch (``std::vector<float>``, ``ROOT::VecOps::RVec<float>`` as
  ``RDataFrame.Snapshot`` writes it, ``float v[n]`` C arrays with a counter): every event must
  hold the same number of values;
* **flat per-cell** scalar branches (``cell_0 .. cell_N``, CaloGAN's Geant4 ``fancy_tree``),
  taken in natural order (``cell_2`` before ``cell_10``);
* **one branch per layer** (``layer_0``, ``layer_1``, ...; arrays or vectors), concatenated;
* our sparse layout (``nhit``, ``hit_idx``, ``hit_e``).

:class:`ReadOptions` names the tree, the incident-energy branch, the voxel branches
(comma-separated names or glob patterns) and the units. Without options the reader
looks for tree ``showers`` or the file's only tree, an energy branch among
:data:`ENERGY_BRANCHES` and voxel branches ``voxels``, ``hit_idx``/``hit_e``, ``cell_<i>`` or
``layer_<i>``; when it cannot decide it raises one line that lists the trees and branches
found and the option to pass.

The same options apply to HDF5 files (dataset names instead of branch names), e.g. the
CaloGAN HDF5 files (``energy`` in GeV, ``layer_0``/``layer_1``/``layer_2``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._config import StrictModel
from ..errors import ConfigError, ShowerFileError

__all__ = [
    "ENERGY_BRANCHES",
    "UNITS_MEV",
    "Column",
    "ReadOptions",
    "natural_key",
    "select_names",
    "split_source",
]

#: incident-energy branch names recognised without ``energy_branch=``, in order of preference.
ENERGY_BRANCHES = ("incident_energy", "incident_energies", "TotalEnergy", "energy", "E_inc", "Einc", "E0")
#: factor from each accepted unit to MeV.
UNITS_MEV = {"eV": 1e-6, "keV": 1e-3, "MeV": 1.0, "GeV": 1e3, "TeV": 1e6}
Unit = Literal["eV", "keV", "MeV", "GeV", "TeV"]

_CELL_RE = re.compile(r"^(cell|Cell|cells|voxel|vox)_?\d+$")
_LAYER_RE = re.compile(r"^(layer|Layer|layer_e)_?\d+$")


class ReadOptions(StrictModel):
    """Where the showers are in a file (all optional; see the module docstring).

    Attributes:
        tree: TTree / RNTuple name (default ``showers``, or the file's only tree).
        energy_branch: incident-energy branch or HDF5 dataset (default: one of
            :data:`ENERGY_BRANCHES`).
        voxels: voxel branches / datasets, comma-separated names or glob patterns
            (``cells``, ``cell_*``, ``layer_0,layer_1,layer_2``); a pattern's matches are
            taken in natural order.
        energy_unit: unit of the incident energy (converted to MeV).
        voxel_unit: unit of the voxel energies (converted to MeV).
    """

    tree: str | None = None
    energy_branch: str | None = None
    voxels: str | None = None
    energy_unit: Unit = "MeV"
    voxel_unit: Unit = "MeV"

    @classmethod
    def make(cls, options: ReadOptions | dict[str, Any] | None = None, **kwargs: Any) -> ReadOptions:
        """Options from a :class:`ReadOptions`, a dict and/or keywords (``None`` values ignored)."""
        base = options.model_dump() if isinstance(options, ReadOptions) else dict(options or {})
        base.update({k: v for k, v in kwargs.items() if v is not None})
        from .._config import parse_config

        for key in ("energy_unit", "voxel_unit"):
            if key in base and base[key] not in UNITS_MEV:
                msg = f"{key} {base[key]!r} is not allowed; allowed: {', '.join(UNITS_MEV)}"
                raise ConfigError(msg)
        return parse_config(cls, base, source="read options")

    @property
    def is_default(self) -> bool:
        return self == ReadOptions()

    @property
    def energy_factor(self) -> float:
        return UNITS_MEV[self.energy_unit]

    @property
    def voxel_factor(self) -> float:
        return UNITS_MEV[self.voxel_unit]

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.model_dump().items() if v is not None and v != "MeV"]
        return ", ".join(parts) or "defaults"


def split_source(spec: str) -> tuple[str, dict[str, str]]:
    """``"PATH;key=value;..."`` -> (``PATH``, options): read options attached to one path.

    Every command that takes a shower file accepts this form, e.g.
    ``"calogan.root;energy_unit=GeV"`` or ``"user.root;tree=events;voxels=cell_*"``; keys are the
    :class:`ReadOptions` fields (``-`` may replace ``_``). A path that exists as written, or
    has no ``;``, is returned unchanged.
    """
    from pathlib import Path

    if ";" not in spec or Path(spec).exists():
        return spec, {}
    path, *parts = spec.split(";")
    allowed = list(ReadOptions.model_fields)
    out: dict[str, str] = {}
    for part in parts:
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in allowed:
            msg = f"{spec}: {part!r} is not a read option; expected PATH;key=value;... with keys {', '.join(allowed)}"
            raise ConfigError(msg)
        out[key] = value.strip()
    return path, out


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key putting ``cell_2`` before ``cell_10``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def select_names(spec: str, available: list[str], source: str, what: str = "branch", exclude: tuple[str, ...] = ()) -> list[str]:
    """Resolve a comma-separated list of names / glob patterns against ``available`` names."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        msg = f"{source}: voxels={spec!r} names no {what}"
        raise ConfigError(msg)
    pool = [n for n in available if n not in exclude]
    out: list[str] = []
    for item in items:
        if any(c in item for c in "*?["):
            hits = sorted((n for n in pool if fnmatch.fnmatchcase(n, item)), key=natural_key)
            if not hits:
                msg = f"{source}: no {what} matches voxels pattern {item!r} (has: {_listing(available)})"
                raise ShowerFileError(msg)
            out.extend(h for h in hits if h not in out)
        else:
            if item not in available:
                msg = f"{source}: no {what} {item!r} for voxels= (has: {_listing(available)})"
                raise ShowerFileError(msg)
            if item not in out:
                out.append(item)
    return out


def auto_voxel_names(available: list[str], energy: str | None) -> list[str] | None:
    """Voxel branches found without ``voxels=``: ``voxels``, else ``cell_<i>``, else ``layer_<i>`` (natural order)."""
    if "voxels" in available:
        return ["voxels"]
    for rx in (_CELL_RE, _LAYER_RE):
        hits = [n for n in available if rx.match(n) and n != energy]
        if hits:
            return sorted(hits, key=natural_key)
    return None


def _listing(names: list[str], limit: int = 12) -> str:
    """``a, b, c`` or ``a, b, ..., z (507 in all)`` for long lists (CaloGAN's 508 branches)."""
    names = sorted(names, key=natural_key)
    if not names:
        return "none"
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[: limit - 2]) + f", ..., {names[-1]} ({len(names)} in all)"


listing = _listing


@dataclass(frozen=True)
class Column:
    """One voxel branch / dataset: ``width`` values per event; ``jagged`` for vector branches."""

    name: str
    width: int
    jagged: bool = False

    def to_2d(self, arr: Any, n: int, source: str) -> np.ndarray:
        """``(n, width)`` float array from what uproot/h5py returned for this column."""
        if self.jagged:
            import awkward as ak

            counts = ak.to_numpy(ak.num(arr, axis=1))
            bad = np.nonzero(counts != self.width)[0]
            if bad.size:
                i = int(bad[0])
                msg = (
                    f"{source}: branch {self.name!r} holds {int(counts[i])} values in an event where the first event "
                    f"has {self.width}; a shower vector needs the same length in every event"
                )
                raise ShowerFileError(msg)
            flat = ak.to_numpy(ak.flatten(arr, axis=None))
            return flat.reshape(n, self.width)
        a = np.asarray(arr)
        if a.dtype == object:
            msg = f"{source}: branch {self.name!r} does not hold plain numbers"
            raise ShowerFileError(msg)
        return a.reshape(n, self.width)


def to_float32_mev(a: np.ndarray, factor: float) -> np.ndarray:
    """float32 MeV: float32 MeV data is returned bit for bit; other types/units are converted once."""
    if factor == 1.0:
        return np.ascontiguousarray(a, dtype=np.float32)
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64) * factor, dtype=np.float32)
