"""The generator interface shared by every fast-simulation model.

A :class:`ShowerGenerator` maps incident energies (MeV) to voxel energies (MeV) of
one :class:`~simcompress.showers.geometry.Geometry`. Every generator is split into
three parts so that compression and firmware can work on the middle one only::

    showers = gen.postprocess(gen.network(z, gen.condition(E)), E)

* :meth:`ShowerGenerator.condition` maps ``E`` (MeV) to the conditioning vector ``c``
  (``log E`` scaled to ``[-1, 1]`` over :attr:`energy_range_mev`);
* :attr:`ShowerGenerator.network` is a deterministic ``nn.Module`` with
  ``forward(z, c)``: the GAN generator net (hls4ml-convertible), or a flow's
  MADE stack (the inverse pass);
* :meth:`ShowerGenerator.postprocess` turns the network output into showers in MeV
  (normalisations, thresholds; anything not convertible to firmware lives here).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from .._config import StrictModel, parse_config
from .._registry import Registry
from ..errors import BundleError, ConfigError, ExtrapolationError, ExtrapolationWarning
from ..showers.energies import format_energy_mev
from ..showers.geometry import Geometry

__all__ = [
    "DEFAULT_ENERGY_RANGE_MEV",
    "GENERATORS",
    "EnergyCondition",
    "ShowerGenerator",
    "build_generator",
    "energy_range_of",
    "knot_interp",
    "latent_dim_of",
    "register_generator",
]

#: CaloChallenge dataset 1 incident energies, 256 MeV .. 4.19 TeV (2^8 .. 2^22 MeV): the range a
#: generator is built for unless told otherwise.
DEFAULT_ENERGY_RANGE_MEV: tuple[float, float] = (256.0, 4194304.0)


def knot_interp(c: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of a table tabulated at ``len(table)`` equidistant knots of the
    condition ``c`` in [-1, 1] (clamped); ``table`` is (K,) or (K, D), the result (N,) or (N, D)."""
    n = table.shape[0]
    pos = (c.reshape(-1).clamp(-1, 1) + 1) / 2 * (n - 1)
    i0 = pos.floor().clamp(0, n - 2).long()
    w = pos - i0
    if table.dim() == 2:
        w = w.unsqueeze(1)
    return table[i0] * (1 - w) + table[i0 + 1] * w

#: Registry of generator kinds (``"gan"``, ``"flow"``, ...); entry points ``simcompress.generators``.
GENERATORS: Registry[type[ShowerGenerator]] = Registry("generator kind", "simcompress.generators")


def register_generator(cls: type[ShowerGenerator]) -> type[ShowerGenerator]:
    """Class decorator: register a generator class under its ``kind``."""
    GENERATORS.register(cls.kind, cls)
    return cls


class EnergyCondition(nn.Module):
    """``c = 2 (ln E - ln lo) / (ln hi - ln lo) - 1``: log incident energy scaled to [-1, 1].

    Energies outside ``(lo, hi)`` give ``|c| > 1`` (extrapolation; the models were not
    trained there).
    """

    def __init__(self, energy_range_mev: tuple[float, float]) -> None:
        super().__init__()
        lo, hi = float(energy_range_mev[0]), float(energy_range_mev[1])
        if not (0 < lo < hi and math.isfinite(hi)):
            msg = f"energy_range_mev: need 0 < low < high, got {energy_range_mev!r}"
            raise ConfigError(msg)
        self.log_lo = math.log(lo)
        self.log_span = math.log(hi) - math.log(lo)

    def forward(self, e_mev: torch.Tensor) -> torch.Tensor:
        return (2.0 * (torch.log(e_mev) - self.log_lo) / self.log_span - 1.0).unsqueeze(-1)


class ShowerGenerator(nn.Module):
    """Base class of every generator (see module docstring).

    Attributes:
        kind: registry name of the class (``"gan"``, ``"flow"``, ...).
        geometry: readout geometry of the produced showers.
        latent_dim: width of the noise ``z``.
        energy_range_mev: ``(low, high)`` incident-energy range the model was built for.
        network: the deterministic ``forward(z, c)`` part.
    """

    kind: ClassVar[str] = ""
    n_cond: ClassVar[int] = 1
    #: the kind's typed architecture (strict pydantic model): :meth:`architecture` dumps it,
    #: :meth:`from_config` parses it, the kind's ``__init__`` takes its fields as keywords.
    Architecture: ClassVar[type[StrictModel]] = StrictModel
    arch: StrictModel
    network: nn.Module
    conditioner: EnergyCondition
    # set by load_generator (and the GAN's training) on the loaded object
    bundle_path: str
    bundle_hash: str
    has_trained_critic: bool

    def __init__(self, geometry: Geometry, latent_dim: int, energy_range_mev: tuple[float, float]) -> None:
        super().__init__()
        if latent_dim < 1:
            msg = f"latent_dim must be >= 1, got {latent_dim}"
            raise ConfigError(msg)
        self.geometry = geometry
        self.latent_dim = int(latent_dim)
        self.energy_range_mev = (float(energy_range_mev[0]), float(energy_range_mev[1]))
        self.conditioner = EnergyCondition(self.energy_range_mev)

    # -- the three parts -------------------------------------------------------------
    def condition(self, incident_energies: torch.Tensor) -> torch.Tensor:
        """(N,) MeV -> (N, n_cond) conditioning vector."""
        return self.conditioner(incident_energies)

    def postprocess(self, y: torch.Tensor, incident_energies: torch.Tensor) -> torch.Tensor:
        """Network output -> (N, n_voxels) showers in MeV."""
        raise NotImplementedError

    def sample_extras(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Random inputs of :meth:`postprocess` besides the network output, drawn after the noise
        (keyword arguments; none by default, e.g. the GAN's azimuthal orientation)."""
        return {}

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard-normal noise (n, latent_dim), drawn on the generator's device, moved to the model's."""
        dev = generator.device if generator is not None else self.device
        return torch.randn(n, self.latent_dim, generator=generator, device=dev).to(self.device)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def check_energy_range(self, low_mev: float, high_mev: float, *, strict: bool = False, source: str = "") -> bool:
        """Warn (:class:`~simcompress.errors.ExtrapolationWarning`) or, with ``strict``, refuse
        (:class:`~simcompress.errors.ExtrapolationError`) energies outside :attr:`energy_range_mev`.

        Returns True when ``[low_mev, high_mev]`` lies inside the trained range. A relative
        tolerance of 1e-6 absorbs float32 rounding of the range's ends.
        """
        lo, hi = self.energy_range_mev
        tol = 1e-6
        if low_mev >= lo * (1 - tol) and high_mev <= hi * (1 + tol):
            return True
        where = f"{source}: " if source else ""
        msg = (
            f"{where}incident energies {format_energy_mev(low_mev, 3)} .. {format_energy_mev(high_mev, 3)} lie outside the "
            f"trained range {format_energy_mev(lo, 3)} .. {format_energy_mev(hi, 3)} of this {self.kind} generator: the model "
            "extrapolates there and its showers are not validated"
        )
        if strict:
            raise ExtrapolationError(msg + " (refused: strict)")
        warnings.warn(msg, ExtrapolationWarning, stacklevel=3)
        return False

    @torch.no_grad()
    def sample(
        self,
        incident_energies: torch.Tensor,
        generator: torch.Generator | None = None,
        batch_size: int = 10_000,
        *,
        strict: bool = False,
        check_range: bool = True,
        timings: dict[str, float] | None = None,
    ) -> torch.Tensor:
        """Showers (N, n_voxels) in MeV for incident energies (N,) in MeV.

        Deterministic for a given ``generator`` state; runs in eval mode on the module's device.
        Energies outside :attr:`energy_range_mev` give an
        :class:`~simcompress.errors.ExtrapolationWarning` (an
        :class:`~simcompress.errors.ExtrapolationError` with ``strict=True``); ``check_range=False``
        skips the check (for callers that checked the whole energy spec once). Per batch the noise
        is drawn first (:meth:`sample_latent`), then :meth:`sample_extras`, then the condition,
        network and postprocess run.

        ``timings``: a dict that receives the seconds of this call, summed over its batches:
        ``latent_condition`` (noise and condition), ``network``, ``postprocess`` and ``sample``
        (the whole call; :func:`simcompress.compress.accounting.sample_split` reads them).
        """
        clock = time.perf_counter
        t_call = clock()
        spent = dict.fromkeys(("latent_condition", "network", "postprocess"), 0.0)
        e = torch.as_tensor(incident_energies, dtype=torch.float32).reshape(-1).to(self.device)
        if e.numel() and (not torch.isfinite(e).all() or (e <= 0).any()):
            msg = "incident energies must be finite and > 0 MeV"
            raise ConfigError(msg)
        if check_range and e.numel():
            self.check_energy_range(float(e.min()), float(e.max()), strict=strict)
        if batch_size < 1:
            msg = f"batch_size must be >= 1, got {batch_size}"
            raise ConfigError(msg)
        was_training = self.training
        self.eval()
        try:
            out = []
            for start in range(0, e.shape[0], batch_size):
                eb = e[start : start + batch_size]
                t0 = clock()
                z = self.sample_latent(eb.shape[0], generator)
                extras = self.sample_extras(eb.shape[0], generator)
                c = self.condition(eb)
                t1 = clock()
                y = self.network(z, c)
                t2 = clock()
                out.append(self.postprocess(y, eb, **extras))
                t3 = clock()
                spent["latent_condition"] += t1 - t0
                spent["network"] += t2 - t1
                spent["postprocess"] += t3 - t2
            if not out:
                result = torch.zeros(0, self.geometry.n_voxels, device=self.device)
            else:
                result = out[0] if len(out) == 1 else torch.cat(out)
        finally:
            self.train(was_training)
        if timings is not None:
            timings.update(spent, sample=clock() - t_call)
        return result

    # -- serialisation ---------------------------------------------------------------
    @classmethod
    def make_architecture(cls, arch: StrictModel | None, fields: dict[str, Any], source: str = "") -> Any:
        """The typed architecture from a ready model ``arch`` or from keyword ``fields`` (not both).

        Unknown keys and bad values raise :class:`~simcompress.errors.ConfigError` naming the key.
        """
        where = source or f"{cls.__name__}()"
        if arch is None:
            return parse_config(cls.Architecture, fields, where)
        if fields:
            msg = f"{where}: pass either arch= or the architecture's keywords ({', '.join(sorted(fields))}), not both"
            raise ConfigError(msg)
        if not isinstance(arch, cls.Architecture):
            msg = f"{where}: arch must be a {cls.Architecture.__name__}, got {type(arch).__name__}"
            raise ConfigError(msg)
        return arch

    def architecture(self) -> dict[str, Any]:
        """Kind-specific architecture parameters (JSON): the dump of :attr:`arch`."""
        return self.arch.model_dump(mode="json")

    def config_dict(self) -> dict[str, Any]:
        """JSON config sufficient to rebuild this generator with random weights."""
        return {
            "kind": self.kind,
            "latent_dim": self.latent_dim,
            "energy_range_mev": list(self.energy_range_mev),
            "architecture": self.architecture(),
            "geometry": self.geometry.to_dict(),
            "geometry_fingerprint": self.geometry.fingerprint,
        }

    @classmethod
    def parse_architecture(cls, config: dict[str, Any], source: str = "<config>") -> Any:
        """``config["architecture"]`` validated against :attr:`Architecture` (one-line
        :class:`~simcompress.errors.ConfigError` naming ``source``, the key and the nearest allowed one)."""
        return parse_config(cls.Architecture, config.get("architecture"), f"{source}: architecture")

    @classmethod
    def from_config(cls, config: dict[str, Any], geometry: Geometry, source: str = "<config>") -> ShowerGenerator:
        """Rebuild (random weights) from :meth:`config_dict` output; ``source`` names the file in errors."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, geometry={self.geometry.name!r}, latent_dim={self.latent_dim}"


def build_generator(config: dict[str, Any], source: str = "<config>") -> ShowerGenerator:
    """Rebuild a generator (random weights) from :meth:`ShowerGenerator.config_dict` output."""
    from . import flow as _flow  # noqa: F401  (registers the built-in kinds)
    from . import gan as _gan  # noqa: F401

    if not isinstance(config, dict):
        msg = f"{source}: generator config must be a mapping, got {type(config).__name__}"
        raise BundleError(msg)
    missing = [k for k in ("kind", "geometry", "architecture", "energy_range_mev") if k not in config]
    if missing:
        msg = f"{source}: generator config lacks key(s) {', '.join(missing)}"
        raise BundleError(msg)
    cls = GENERATORS.get(str(config["kind"]))
    try:
        geometry = Geometry.from_dict(config["geometry"], source=f"{source}: geometry")
    except (ValueError, KeyError, TypeError) as err:
        msg = f"{source}: invalid geometry ({err})"
        raise BundleError(msg) from None
    fp = config.get("geometry_fingerprint")
    if fp is not None and fp != geometry.fingerprint:
        msg = f"{source}: geometry_fingerprint {fp!r} does not match the stored geometry's binning"
        raise BundleError(msg)
    return cls.from_config(config, geometry, source=source)


def latent_dim_of(config: dict[str, Any], source: str = "<config>") -> int:
    """``config["latent_dim"]`` as a positive int (:class:`~simcompress.errors.BundleError` otherwise)."""
    value = config.get("latent_dim")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{source}: latent_dim must be an integer >= 1, got {value!r}"
        raise BundleError(msg)
    return value


def energy_range_of(config: dict[str, Any], source: str = "<config>") -> tuple[float, float]:
    """``config["energy_range_mev"]`` as ``(low, high)`` (:class:`~simcompress.errors.BundleError` otherwise)."""
    value = config.get("energy_range_mev")
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        msg = f"{source}: energy_range_mev must be [low, high] in MeV, got {value!r}"
        raise BundleError(msg)
    return float(value[0]), float(value[1])
