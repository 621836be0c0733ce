"""Bring your own generator: any ``nn.Module`` (or ONNX graph) as a :class:`ShowerGenerator`.

A user's network with ``forward(z, c) -> showers`` (``input="z,c"``) or ``forward(x)`` on the
concatenated input ``x = cat([z, c], 1)`` (``input="concat"``) becomes a generator of kind
``"external"``::

    showers = postprocess(network(z, condition(E)), E)

with

* ``latent``: size and distribution of ``z`` (``normal`` with ``std``, or ``uniform`` on
  ``[low, high]``);
* ``condition``: how the incident energy becomes ``c``: ``log10-energy`` (``log10(E / unit)``),
  ``log-energy`` (natural log), ``energy`` (``E / unit``), ``scaled-log-energy`` (simcompress's
  own ``2 (ln E - ln lo) / (ln hi - ln lo) - 1``), each then ``(value - offset) / scale``; or
  ``function: "pkg.module:fn"`` (``fn(E_mev (N,)) -> (N, n_cond)``);
* ``postprocess``: the network output is flattened to ``(N, n_voxels)`` (its size must equal the
  geometry's voxel count), passed through ``output`` (``identity``, ``relu``, ``exp``, ``abs``),
  multiplied by ``scale`` and, with ``multiply_by_energy``, by ``E / unit``; or
  ``function: "pkg.module:fn"`` (``fn(y, E_mev) -> showers MeV``).

The bundle stores no pickles: ``config.json`` names the architecture's **import path** (``"pkg.module:Class"``
or ``"/path/to/file.py:Class"``) and its JSON constructor ``kwargs`` (source ``"import"``), or holds the
network's graph converted from ONNX (source ``"onnx"``, :mod:`simcompress.interop.onnx`); the weights are in
``weights.safetensors``. Loading an ``import`` bundle imports that module, so it runs its code: load
bundles whose code you trust (as with any Python package).

Example (a network defined in the user's ``my_gan.py``)::

    from my_gan import DCGAN
    from simcompress.interop.external import wrap_generator
    from simcompress.generators import save_generator
    net = DCGAN(latent=64); net.load_state_dict(torch.load("dcgan.pt", weights_only=True))
    gen = wrap_generator(net, geometry="ds1-photons", latent_dim=64, model="my_gan:DCGAN", kwargs={"latent": 64},
                         condition={"kind": "log10-energy", "unit": "GeV"})
    save_generator(gen, "bundles/dcgan")
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from .._config import StrictModel, parse_config
from ..errors import BundleError, ConfigError
from ..generators.base import DEFAULT_ENERGY_RANGE_MEV, ShowerGenerator, energy_range_of, register_generator
from ..showers.geometry import Geometry

__all__ = [
    "DEFAULT_ENERGY_RANGE_MEV",
    "ConcatInput",
    "ConditionSpec",
    "ExternalGenerator",
    "ExternalSpec",
    "LatentSpec",
    "PostprocessSpec",
    "check_generator",
    "load_object",
    "load_state_file",
    "wrap_generator",
]

_UNITS = {"keV": 1e-3, "MeV": 1.0, "GeV": 1e3, "TeV": 1e6}


class LatentSpec(StrictModel):
    """The noise ``z``: ``dim`` features, standard normal times ``std`` or uniform on ``[low, high]``."""

    dim: int = Field(ge=1)
    distribution: Literal["normal", "uniform"] = "normal"
    std: float = Field(1.0, gt=0)
    low: float = -1.0
    high: float = 1.0

    @model_validator(mode="after")
    def _range(self) -> LatentSpec:
        if self.distribution == "uniform" and not self.low < self.high:
            msg = "uniform latent needs low < high"
            raise ValueError(msg)
        return self


class ConditionSpec(StrictModel):
    """How the incident energy (MeV) becomes the condition ``c`` (see the module docstring)."""

    kind: Literal["log10-energy", "log-energy", "energy", "scaled-log-energy"] = "log10-energy"
    unit: Literal["keV", "MeV", "GeV", "TeV"] = "MeV"
    scale: float = 1.0
    offset: float = 0.0
    function: str | None = None
    n_cond: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _nonzero(self) -> ConditionSpec:
        if self.scale == 0:
            msg = "scale must not be 0"
            raise ValueError(msg)
        if self.function is None and self.n_cond != 1:
            msg = "n_cond > 1 needs a condition function"
            raise ValueError(msg)
        return self


class PostprocessSpec(StrictModel):
    """Network output -> showers in MeV (see the module docstring)."""

    output: Literal["identity", "relu", "exp", "abs"] = "identity"
    scale: float = 1.0
    multiply_by_energy: bool = False
    unit: Literal["keV", "MeV", "GeV", "TeV"] = "MeV"
    function: str | None = None


class ExternalSpec(StrictModel):
    """``config.json`` ``architecture`` of an external generator."""

    source: Literal["import", "onnx"]
    model: str | None = None  # import path of the network class (source "import")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    graph: dict[str, Any] | None = None  # converted ONNX graph (source "onnx")
    input: Literal["z,c", "concat"] = "z,c"
    latent: LatentSpec
    condition: ConditionSpec = ConditionSpec()
    postprocess: PostprocessSpec = PostprocessSpec()

    @model_validator(mode="after")
    def _source(self) -> ExternalSpec:
        if self.source == "import" and not self.model:
            msg = "source 'import' needs model: 'package.module:Class'"
            raise ValueError(msg)
        if self.source == "onnx" and not self.graph:
            msg = "source 'onnx' needs the converted graph"
            raise ValueError(msg)
        return self


def load_object(path: str, what: str = "model") -> Any:
    """Resolve ``"package.module:attr"`` or ``"/path/to/file.py:attr"`` (dotted attributes allowed)."""
    if not isinstance(path, str) or ":" not in path:
        msg = f"{what}: expected an import path 'package.module:Name' or 'file.py:Name', got {path!r}"
        raise ConfigError(msg)
    mod_name, _, attr = path.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            file = Path(mod_name).expanduser().resolve()
            if not file.is_file():
                msg = f"{what}: {file} not found (the bundle names the architecture by this file path)"
                raise BundleError(msg)
            key = "simcompress_user_" + hashlib.sha256(str(file).encode()).hexdigest()[:16]
            module = sys.modules.get(key)
            if module is None:
                spec = importlib.util.spec_from_file_location(key, file)
                if spec is None or spec.loader is None:
                    msg = f"{what}: cannot import {file}"
                    raise BundleError(msg)
                module = importlib.util.module_from_spec(spec)
                sys.modules[key] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(key, None)
                    raise
        else:
            module = importlib.import_module(mod_name)
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, SyntaxError, OSError) as err:
        msg = f"{what}: cannot import {path!r} ({type(err).__name__}: {err})"
        raise BundleError(msg) from None
    return obj


class ConcatInput(nn.Module):
    """``forward(z, c) = inner(cat([z, c], 1))`` for networks that take one concatenated input."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        return self.inner(torch.cat([z, c], dim=1))


def _build_network(spec: ExternalSpec) -> nn.Module:
    if spec.source == "onnx":
        from .onnx import OnnxNetwork

        inner: nn.Module = OnnxNetwork(spec.graph or {})
    else:
        cls = load_object(spec.model or "", "architecture.model")
        if not callable(cls):
            msg = f"architecture.model: {spec.model!r} is not a class or factory"
            raise BundleError(msg)
        try:
            inner = cls(**spec.kwargs)
        except TypeError as err:
            msg = f"architecture.kwargs: {spec.model}(**{spec.kwargs}) failed ({err})"
            raise BundleError(msg) from None
        if not isinstance(inner, nn.Module):
            msg = f"architecture.model: {spec.model}(...) returned {type(inner).__name__}, not an nn.Module"
            raise BundleError(msg)
    return ConcatInput(inner) if spec.input == "concat" else inner


@register_generator
class ExternalGenerator(ShowerGenerator):
    """A user's network with declared latent, conditioning and postprocessing (kind ``"external"``)."""

    kind = "external"
    Architecture = ExternalSpec

    def __init__(self, geometry: Geometry, spec: ExternalSpec, energy_range_mev: tuple[float, float],
                 network: nn.Module | None = None) -> None:
        super().__init__(geometry, spec.latent.dim, energy_range_mev)
        self.spec = self.arch = self.make_architecture(spec, {})
        self.n_cond = spec.condition.n_cond  # type: ignore[misc]
        if network is not None and spec.input == "concat" and not isinstance(network, ConcatInput):
            network = ConcatInput(network)
        self.network = network if network is not None else _build_network(spec)
        self._cond_fn: Callable[..., Tensor] | None = (
            load_object(spec.condition.function, "architecture.condition.function") if spec.condition.function else None)
        self._post_fn: Callable[..., Tensor] | None = (
            load_object(spec.postprocess.function, "architecture.postprocess.function") if spec.postprocess.function else None)

    # -- the three parts ---------------------------------------------------------------
    def condition(self, incident_energies: Tensor) -> Tensor:
        e = incident_energies.to(torch.float32)
        c = self.spec.condition
        if self._cond_fn is not None:
            out = torch.as_tensor(self._cond_fn(e)).to(e.device, torch.float32)
            return out.reshape(e.shape[0], -1)
        if c.kind == "scaled-log-energy":
            v = self.conditioner(e)[:, 0]
        else:
            x = e / _UNITS[c.unit]
            v = torch.log10(x) if c.kind == "log10-energy" else torch.log(x) if c.kind == "log-energy" else x
        return ((v - c.offset) / c.scale).unsqueeze(-1)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        lat = self.spec.latent
        dev = generator.device if generator is not None else self.device
        if lat.distribution == "uniform":
            z = torch.rand(n, self.latent_dim, generator=generator, device=dev) * (lat.high - lat.low) + lat.low
        else:
            z = torch.randn(n, self.latent_dim, generator=generator, device=dev) * lat.std
        return z.to(self.device)

    def postprocess(self, y: Tensor, incident_energies: Tensor) -> Tensor:
        p = self.spec.postprocess
        if self._post_fn is not None:
            out = torch.as_tensor(self._post_fn(y, incident_energies))
            return out.reshape(y.shape[0], -1)
        flat = y.reshape(y.shape[0], -1)
        if flat.shape[1] != self.geometry.n_voxels:
            msg = (
                f"the network returns {flat.shape[1]} values per shower, geometry {self.geometry.name!r} "
                              f"has {self.geometry.n_voxels} voxels"
            )
            raise ConfigError(msg)
        if p.output == "relu":
            flat = torch.relu(flat)
        elif p.output == "exp":
            flat = torch.exp(flat)
        elif p.output == "abs":
            flat = flat.abs()
        flat = flat * p.scale
        if p.multiply_by_energy:
            flat = flat * (incident_energies.to(flat.dtype) / _UNITS[p.unit]).unsqueeze(-1)
        return flat

    # -- serialisation -----------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict[str, Any], geometry: Geometry, source: str = "config.json") -> ExternalGenerator:
        return cls(geometry, cls.parse_architecture(config, source), energy_range_of(config, source))

    def extra_repr(self) -> str:
        src = self.spec.model if self.spec.source == "import" else "onnx graph"
        return f"{super().extra_repr()}, source={src!r}, input={self.spec.input!r}"


def _as_spec(value: Any, cls: type[StrictModel], key: str) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        value = {"kind": value} if cls is ConditionSpec else {"output": value}
    return parse_config(cls, dict(value), source=key)


def _check_rebuild(net: nn.Module, spec: ExternalSpec) -> None:
    """The import path + kwargs must rebuild the same parameter names and shapes."""
    fresh = _build_network(spec)
    if isinstance(fresh, ConcatInput):
        fresh = fresh.inner
    a = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    if a != b:
        diff = sorted(set(a.items()) ^ set(b.items()))[:4]
        msg = (
            f"model={spec.model!r} with kwargs={spec.kwargs} does not rebuild the given network "
                          f"(state_dict names/shapes differ, e.g. {diff}); pass the constructor kwargs"
        )
        raise ConfigError(msg)


def wrap_generator(
    network: nn.Module,
    *,
    geometry: Geometry | str,
    latent_dim: int,
    model: str | None = None,
    kwargs: dict[str, Any] | None = None,
    input: Literal["z,c", "concat"] = "z,c",
    latent: Literal["normal", "uniform"] | dict[str, Any] = "normal",
    condition: str | dict[str, Any] | ConditionSpec | None = None,
    postprocess: str | dict[str, Any] | PostprocessSpec | None = None,
    energy_range_mev: tuple[float, float] = DEFAULT_ENERGY_RANGE_MEV,
    check: bool = True,
) -> ExternalGenerator:
    """Turn ``network`` (weights loaded) into an :class:`ExternalGenerator`.

    Args:
        network: ``forward(z, c)`` (``input="z,c"``) or ``forward(cat([z, c], 1))`` (``input="concat"``).
        geometry: geometry name or YAML path (or a :class:`Geometry`).
        latent_dim: width of ``z``.
        model: import path of the network's class (default: ``module:qualname`` of ``type(network)``;
            a class defined in ``__main__`` cannot be rebuilt: move it into a module).
        kwargs: JSON constructor arguments that rebuild the architecture (checked).
        latent: ``"normal"``/``"uniform"`` or a :class:`LatentSpec` mapping without ``dim``.
        condition: a condition kind (``"log10-energy"``, ...) or a :class:`ConditionSpec` mapping.
        postprocess: an output kind (``"relu"``, ...) or a :class:`PostprocessSpec` mapping.
        energy_range_mev: incident-energy range the model was trained on.
        check: rebuild the class from ``model``/``kwargs`` and run one batch (sizes checked).
    """
    geo = geometry if isinstance(geometry, Geometry) else Geometry.from_name(geometry)
    if model is None:
        cls = type(network)
        if cls.__module__ == "__main__":
            msg = f"{cls.__name__} is defined in __main__; put it in a module (or a file) and pass model='file.py:{cls.__name__}'"
            raise ConfigError(msg)
        model = f"{cls.__module__}:{cls.__qualname__}"
    lat = {"distribution": latent} if isinstance(latent, str) else dict(latent)
    spec = ExternalSpec(
        source="import", model=model, kwargs=dict(kwargs or {}), input=input,
        latent=parse_config(LatentSpec, {"dim": latent_dim, **lat}, source="latent"),
        condition=_as_spec(condition, ConditionSpec, "condition"),
        postprocess=_as_spec(postprocess, PostprocessSpec, "postprocess"),
    )
    if check:
        _check_rebuild(network, spec)
    gen = ExternalGenerator(geo, spec, energy_range_mev, network=network)
    gen.eval()
    if check:
        check_generator(gen)
    return gen


def load_state_file(network: nn.Module, path: str | Path) -> None:
    """Load a state dict from ``.safetensors`` or a ``.pt``/``.pth`` file (``torch.load(weights_only=True)``: tensors only)."""
    p = Path(path)
    if not p.is_file():
        msg = f"{p}: weights file not found"
        raise ConfigError(msg)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:
        msg = f"{p}: cannot read the state dict ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        raise ConfigError(msg) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        msg = f"{p}: expected a state dict (name -> tensor), got {type(state).__name__}"
        raise ConfigError(msg)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        msg = f"{p}: weights do not fit the architecture ({str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err})"
        raise ConfigError(msg) from None


def check_generator(gen: ExternalGenerator, n: int = 4) -> None:
    """Run ``n`` showers through the generator: the output must have the geometry's voxel count and be finite."""
    lo, hi = gen.energy_range_mev
    e = torch.exp(torch.linspace(math.log(lo), math.log(hi), n))
    try:
        out = gen.sample(e, torch.Generator().manual_seed(0))
    except (RuntimeError, TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        msg = (
            f"the wrapped network failed on a test batch (latent_dim={gen.latent_dim}, n_cond={gen.n_cond}, "
                          f"input={gen.spec.input!r}): {str(err).splitlines()[0]}"
        )
        raise ConfigError(msg) from None
    if out.shape != (n, gen.geometry.n_voxels):
        msg = f"generator output has shape {tuple(out.shape)}, expected ({n}, {gen.geometry.n_voxels})"
        raise ConfigError(msg)
    if not torch.isfinite(out).all():
        msg = "generator output holds NaN or infinite values on a test batch"
        raise ConfigError(msg)
