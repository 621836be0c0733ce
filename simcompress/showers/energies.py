"""Incident-energy specifications: what energies to simulate or generate showers at.

A spec is a short string, parsed once by :func:`parse_energy_spec`:

* ``"ds1"``: the 15 CaloChallenge dataset-1 energies 2^8 ... 2^22 MeV, drawn uniformly;
* ``"log-uniform:LO,HI"``: log-uniform between LO and HI MeV (CaloChallenge ds2/ds3: ``log-uniform:1e3,1e6``);
* ``"uniform:LO,HI"``: uniform between LO and HI MeV;
* ``"fixed:E"``: every event at E MeV;
* ``"discrete:E1,E2,..."``: drawn uniformly from the listed energies (MeV);
* ``"file:PATH"``: resampled (with replacement) from the incident energies of a shower file
  (ROOT or CaloChallenge HDF5), so a generated sample follows a reference's energy spectrum.

Every spec has ``.sample(n, rng) -> float64 (n,)`` in MeV, deterministic for a given
``numpy.random.Generator`` state.

Example:
    >>> import numpy as np
    >>> spec = parse_energy_spec("log-uniform:1e3,1e6")
    >>> e = spec.sample(4, np.random.default_rng(0))
    >>> bool(((e >= 1e3) & (e <= 1e6)).all())
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

__all__ = ["DS1_ENERGIES_MEV", "EnergySpec", "format_energy_mev", "parse_energy_spec"]

#: The 15 incident energies of CaloChallenge dataset 1 (MeV): 2^8 ... 2^22.
DS1_ENERGIES_MEV: np.ndarray = 2.0 ** np.arange(8, 23, dtype=np.float64)

_KINDS = ("ds1", "log-uniform", "uniform", "fixed", "discrete", "file")


@dataclass(frozen=True)
class EnergySpec:
    """A parsed incident-energy specification (see module docstring).

    Attributes:
        kind: one of ``ds1``, ``log-uniform``, ``uniform``, ``fixed``, ``discrete``, ``file``.
        low_mev, high_mev: range for the continuous kinds (and the extremes of the others).
        values_mev: the discrete energies (``ds1``, ``fixed``, ``discrete``, ``file``).
        text: the original spec string (stored in provenance).
    """

    kind: str
    low_mev: float
    high_mev: float
    values_mev: np.ndarray | None = field(default=None, compare=False, repr=False)
    text: str = ""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` incident energies (float64, MeV) with ``rng``."""
        n = int(n)
        if n < 0:
            msg = f"energies {self.text!r}: number of events must be >= 0, got {n}"
            raise ConfigError(msg)
        if self.kind == "log-uniform":
            lo, hi = math.log(self.low_mev), math.log(self.high_mev)
            return np.exp(rng.uniform(lo, hi, size=n))
        if self.kind == "uniform":
            return rng.uniform(self.low_mev, self.high_mev, size=n)
        if self.kind == "fixed":
            return np.full(n, self.low_mev, dtype=np.float64)
        assert self.values_mev is not None  # internal invariant: discrete kinds carry values
        idx = rng.integers(0, len(self.values_mev), size=n)
        return self.values_mev[idx].astype(np.float64, copy=False)

    @property
    def is_discrete(self) -> bool:
        return self.kind in ("ds1", "fixed", "discrete")

    def to_dict(self) -> dict[str, object]:
        return {"spec": self.text, "kind": self.kind, "low_mev": self.low_mev, "high_mev": self.high_mev}

    def __str__(self) -> str:
        return self.text


def _floats(text: str, spec: str, n: int | None) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        msg = f"energies {spec!r}: {text!r} is not a comma-separated list of numbers (MeV)"
        raise ConfigError(msg) from None
    if n is not None and len(vals) != n:
        msg = f"energies {spec!r}: expected {n} number{'s' if n > 1 else ''} after ':', got {len(vals)}"
        raise ConfigError(msg)
    if not vals:
        msg = f"energies {spec!r}: expected at least one energy (MeV) after ':'"
        raise ConfigError(msg)
    for v in vals:
        if not math.isfinite(v) or v <= 0:
            msg = f"energies {spec!r}: energies must be finite and > 0 MeV, got {v!r}"
            raise ConfigError(msg)
    return vals


def format_energy_mev(e_mev: float, digits: int = 4) -> str:
    """``4194304.0`` -> ``"4.194 TeV"`` (``digits`` significant digits); below 1 MeV in keV."""
    e = float(e_mev)
    for unit, scale in (("TeV", 1e6), ("GeV", 1e3), ("MeV", 1.0)):
        if e >= scale:
            return f"{e / scale:.{digits}g} {unit}"
    return f"{e * 1e3:.{digits}g} keV"


def parse_energy_spec(spec: str | EnergySpec) -> EnergySpec:
    """Parse an energy spec string (see module docstring); an :class:`EnergySpec` passes through.

    Raises:
        ConfigError: one line naming the spec and the allowed forms.
    """
    if isinstance(spec, EnergySpec):
        return spec
    if not isinstance(spec, str):
        msg = f"energies: expected a spec string, got {type(spec).__name__}"
        raise ConfigError(msg)
    text = spec.strip()
    kind, _, arg = text.partition(":")
    kind = kind.strip().lower()
    if kind == "ds1":
        if arg:
            msg = f"energies {spec!r}: 'ds1' takes no argument"
            raise ConfigError(msg)
        return EnergySpec("ds1", float(DS1_ENERGIES_MEV[0]), float(DS1_ENERGIES_MEV[-1]), DS1_ENERGIES_MEV.copy(), text)
    if kind in ("log-uniform", "uniform"):
        lo, hi = _floats(arg, spec, 2)
        if not hi > lo:
            msg = f"energies {spec!r}: need LO < HI, got {lo:g} >= {hi:g}"
            raise ConfigError(msg)
        return EnergySpec(kind, lo, hi, None, text)
    if kind == "fixed":
        (e,) = _floats(arg, spec, 1)
        return EnergySpec("fixed", e, e, np.array([e]), text)
    if kind == "discrete":
        vals = np.array(sorted(set(_floats(arg, spec, None))), dtype=np.float64)
        return EnergySpec("discrete", float(vals[0]), float(vals[-1]), vals, text)
    if kind == "file":
        if not arg:
            msg = f"energies {spec!r}: 'file:' needs a shower file path"
            raise ConfigError(msg)
        from .io import open_showers  # local: io imports heavy readers

        values = np.asarray(open_showers(arg.strip()).incident_energy(), dtype=np.float64)  # file, folder or glob
        return EnergySpec("file", float(values.min()), float(values.max()), values, text)
    msg = (
        f"energies {spec!r}: unknown kind {kind!r}; allowed: ds1, log-uniform:LO,HI, uniform:LO,HI, fixed:E, "
        "discrete:E1,E2,..., file:PATH (MeV)"
    )
    raise ConfigError(msg)
