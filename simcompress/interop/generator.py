"""A shower generator whose network is a QKeras-equivalent fixed-point MLP (kind ``"qkeras-mlp"``).

``showers = postprocess(network(z, condition(E)), E)`` as for every
:class:`~simcompress.generators.base.ShowerGenerator`; the network is a
:class:`~simcompress.interop.qkeras.QKerasNetwork` that takes ``cat(z, c)`` as its
single input (the QKeras model's ``Input`` has ``latent_dim + 1`` features: noise
first, then the condition ``c = 2 (ln E - ln lo)/(ln hi - ln lo) - 1``).

Postprocessing (outside the firmware, like the GAN's):

* ``"factorised"``: the network outputs ``1 + n_layers + n_voxels`` logits, turned into
  showers exactly as :class:`~simcompress.generators.gan.GANGenerator` does (response
  ``r = response_scale * sigmoid(y0)``, layer fractions ``softmax``, voxel fractions
  ``softmax`` per layer, ``E * r * f * v``);
* ``"energy_fraction"``: ``n_voxels`` outputs, ``showers = relu(y) * E * output_scale``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, get_args

import h5py
import torch

from .._config import StrictModel
from ..errors import BundleError, ConfigError
from ..generators.base import (
    DEFAULT_ENERGY_RANGE_MEV,
    ShowerGenerator,
    energy_range_of,
    latent_dim_of,
    register_generator,
)
from ..showers.geometry import Geometry
from .qkeras import QKerasNetwork, export_qkeras, load_qkeras_network

__all__ = [
    "POSTPROCESS_MODES",
    "QKerasMLPArchitecture",
    "QKerasMLPGenerator",
    "export_qkeras_generator",
    "load_qkeras_generator",
]

Postprocess = Literal["factorised", "energy_fraction"]
POSTPROCESS_MODES: tuple[str, ...] = get_args(Postprocess)


class QKerasMLPArchitecture(StrictModel):
    """``architecture`` of a ``"qkeras-mlp"`` bundle: the network's layer spec and the postprocessing."""

    network: dict[str, Any]
    postprocess: Postprocess = "factorised"
    response_scale: float = 2.0
    output_scale: float = 1.0


@register_generator
class QKerasMLPGenerator(ShowerGenerator):
    """Generator built on a :class:`QKerasNetwork` (imported from or exportable to QKeras).

    Example:
        >>> from simcompress.showers import Geometry
        >>> from simcompress.interop.generator import QKerasMLPGenerator
        >>> g = QKerasMLPGenerator.random(Geometry.from_name("ds1-photons"), latent_dim=4, hidden=[8], seed=0)
        >>> g.sample(torch.tensor([1000.0, 65536.0]), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 368])
    """

    kind = "qkeras-mlp"
    Architecture = QKerasMLPArchitecture
    arch: QKerasMLPArchitecture
    network: QKerasNetwork
    source: str  # the .h5 it was imported from

    onehot: torch.Tensor

    def __init__(self, geometry: Geometry, latent_dim: int, energy_range_mev: tuple[float, float],
                 network: QKerasNetwork, *, arch: QKerasMLPArchitecture | None = None, **fields: Any) -> None:
        """``arch``, or its fields except ``network`` (taken from ``network``) as keywords."""
        super().__init__(geometry, latent_dim, energy_range_mev)
        a: QKerasMLPArchitecture = (
            self.make_architecture(arch, fields) if arch is not None
            else self.make_architecture(None, {"network": network.spec(), **fields})
        )
        postprocess = a.postprocess
        if network.n_in != self.latent_dim + self.n_cond:
            msg = f"the network takes {network.n_in} inputs, but latent_dim + n_cond = {self.latent_dim} + {self.n_cond}"
            raise ConfigError(
                msg
            )
        want = 1 + geometry.n_layers + geometry.n_voxels if postprocess == "factorised" else geometry.n_voxels
        if network.n_out != want:
            msg = f"postprocess {postprocess!r} on geometry {geometry.name!r} needs {want} network outputs, the network has {network.n_out}"
            raise ConfigError(
                msg
            )
        self.network = network
        self.arch = a
        self.postprocess_mode = postprocess
        self.response_scale = a.response_scale
        self.output_scale = a.output_scale
        idx = torch.as_tensor(geometry.voxel_layer, dtype=torch.long)
        self.register_buffer("onehot", torch.nn.functional.one_hot(idx, geometry.n_layers).to(torch.float32), persistent=False)

    def postprocess(self, y: torch.Tensor, incident_energies: torch.Tensor) -> torch.Tensor:
        e = incident_energies.to(y.dtype)
        if self.postprocess_mode == "energy_fraction":
            return torch.relu(y) * e.unsqueeze(1) * self.output_scale
        n_l = self.geometry.n_layers
        r = self.response_scale * torch.sigmoid(y[:, 0])
        f = torch.softmax(y[:, 1 : 1 + n_l], dim=1)
        vy = y[:, 1 + n_l :]
        v = torch.cat([torch.softmax(vy[:, s], dim=1) for s in self.geometry.layer_slices], dim=1)
        return (e * r).unsqueeze(1) * (f @ self.onehot.T) * v

    # -- serialisation ---------------------------------------------------------------
    def architecture(self) -> dict[str, Any]:
        # the network's spec as it is now (a compression step may have replaced layers' types)
        return {**self.arch.model_dump(mode="json"), "network": self.network.spec()}

    @classmethod
    def from_config(cls, config: dict[str, Any], geometry: Geometry, source: str = "<config>") -> QKerasMLPGenerator:
        arch: QKerasMLPArchitecture = cls.parse_architecture(config, source)
        net = QKerasNetwork.from_spec(arch.network)
        return cls(geometry, latent_dim_of(config, source), energy_range_of(config, source), net, arch=arch)

    def qkeras_metadata(self) -> dict[str, Any]:
        """What :func:`load_qkeras_generator` needs besides the network (stored in the ``.h5``)."""
        return {"kind": self.kind, "latent_dim": self.latent_dim, "energy_range_mev": list(self.energy_range_mev),
                "geometry": self.geometry.to_dict(), "postprocess": self.postprocess_mode,
                "response_scale": self.response_scale, "output_scale": self.output_scale,
                "input_order": "cat(z, c)"}

    @classmethod
    def random(cls, geometry: Geometry, latent_dim: int = 8, hidden: list[int] | None = None, *,
               energy_range_mev: tuple[float, float] = DEFAULT_ENERGY_RANGE_MEV, postprocess: str = "factorised",
               input_type: Any = None, weight_type: Any = None, activation_type: Any = None,
               seed: int = 0) -> QKerasMLPGenerator:
        """A generator with random on-grid weights (tests, demos, export examples).

        Defaults follow the QKeras reference setup: input ``quantized_bits(10,3)``
        (``ap_fixed<10,4,RND_CONV,SAT>``), weights/biases ``quantized_bits(8,0)``
        (``ap_fixed<8,1>``), activations ``quantized_relu(8,3)`` (``ap_ufixed<8,3,RND_CONV,SAT>``).
        """
        from ..compress.fixed_point.types import FixedType

        it = input_type or FixedType(10, 4, True, "RND_CONV", "SAT")
        wt = weight_type or FixedType(8, 1, True, "RND_CONV", "SAT")
        at = activation_type or FixedType(8, 3, False, "RND_CONV", "SAT")
        hidden = list(hidden if hidden is not None else [32, 64])
        n_out = 1 + geometry.n_layers + geometry.n_voxels if postprocess == "factorised" else geometry.n_voxels
        layers: list[dict[str, Any]] = [{"op": "quant", "name": "in_q", "type": it.to_dict(), "qkeras": "quantized_bits"}]
        width = latent_dim + cls.n_cond
        sizes = [*hidden, n_out]
        for k, h in enumerate(sizes):
            layers.append({"op": "dense", "name": f"fc{k + 1}", "in": width, "out": h, "bias": True,
                           "weight_type": wt.to_dict(), "bias_type": wt.to_dict()})
            if k < len(sizes) - 1:
                layers.append({"op": "quant", "name": f"relu{k + 1}", "type": at.to_dict(), "qkeras": "quantized_relu"})
            width = h
        net = QKerasNetwork(layers, latent_dim + cls.n_cond, "qkeras_generator")
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for m in net.body:
                if isinstance(m, torch.nn.Linear):
                    m.weight.copy_(wt.quantize(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5))
                    m.bias.copy_(wt.quantize(0.1 * torch.randn(m.bias.shape, generator=g)))
        return cls(geometry, latent_dim, energy_range_mev, net, postprocess=postprocess)


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("simcompress")
    except OSError:
        return {}
    if raw is None:
        return {}
    try:
        meta = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except json.JSONDecodeError as err:
        msg = f"{path}: attribute 'simcompress' is not valid JSON ({err})"
        raise BundleError(msg) from None
    return meta if isinstance(meta, dict) else {}


def load_qkeras_generator(
    path: str | os.PathLike[str],
    geometry: Geometry | str | None = None,
    *,
    latent_dim: int | None = None,
    energy_range_mev: tuple[float, float] | None = None,
    postprocess: str | None = None,
    response_scale: float | None = None,
    output_scale: float | None = None,
    strict: bool = True,
) -> QKerasMLPGenerator:
    """Import a QKeras generator network (``.h5``) as a simcompress generator.

    Files written by :func:`export_qkeras_generator` carry their generator metadata;
    for other QKeras models pass ``geometry``, ``latent_dim`` (the network input is
    ``latent_dim + 1`` wide: noise, then the condition) and ``energy_range_mev``.
    Explicit arguments override the stored metadata.

    Raises:
        UnsupportedLayerError: a layer or quantizer without an exact fixed-point mapping.
        ConfigError: missing or inconsistent generator metadata.
    """
    p = Path(path)
    net = load_qkeras_network(p, strict=strict)
    meta = _read_metadata(p)
    if geometry is None and "geometry" in meta:
        geom = Geometry.from_dict(meta["geometry"], source=f"{p}: simcompress.geometry")
    elif geometry is None:
        msg = (
            f"{p}: no simcompress metadata in the file; give the geometry, latent_dim and energy range "
            "(CLI: --geometry, --latent-dim, --energy-range)"
        )
        raise ConfigError(
            msg
        )
    else:
        geom = Geometry.from_name(geometry) if isinstance(geometry, str) else geometry
    ld = latent_dim if latent_dim is not None else meta.get("latent_dim", net.n_in - QKerasMLPGenerator.n_cond)
    er = energy_range_mev if energy_range_mev is not None else tuple(meta.get("energy_range_mev", DEFAULT_ENERGY_RANGE_MEV))
    gen = QKerasMLPGenerator(
        geom, int(ld), (float(er[0]), float(er[1])), net,
        postprocess=postprocess or meta.get("postprocess", "factorised"),
        response_scale=response_scale if response_scale is not None else float(meta.get("response_scale", 2.0)),
        output_scale=output_scale if output_scale is not None else float(meta.get("output_scale", 1.0)),
    )
    gen.source = str(p)
    return gen.eval()


def export_qkeras_generator(gen: QKerasMLPGenerator, path: str | os.PathLike[str]) -> Path:
    """Write ``gen`` as a QKeras ``.h5`` (network + generator metadata); see :func:`export_qkeras`."""
    return export_qkeras(gen, path)
