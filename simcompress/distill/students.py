"""Student generators produced by distillation; each is an ordinary :class:`ShowerGenerator`
kind, so it saves and loads as a plain bundle.

* ``"iaf"`` (:class:`IAFGenerator`): a :class:`~simcompress.generators.flow.FlowGenerator` whose
  network is an inverse autoregressive flow with the teacher's permutations and
  preprocessing: sampling is **one pass** per block instead of one per group.
* ``"mlp"`` (:class:`MLPGenerator`): ``network(z, c) = MLP(cat(z, c))`` of Linear / ReLU /
  LeakyReLU / BatchNorm1d only (hls4ml-convertible), predicting standardised log voxel
  fractions; the normalisation lives in :meth:`MLPGenerator.postprocess`.

The kinds reach ``load_generator`` in a fresh process through the ``simcompress.generators``
entry-point group (``generators`` never imports ``distill``).
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError, UnsupportedLayerError
from ..generators.base import (
    DEFAULT_ENERGY_RANGE_MEV,
    ShowerGenerator,
    energy_range_of,
    latent_dim_of,
    register_generator,
)
from ..generators.flow import (
    MADE,
    FlowArchitecture,
    FlowGenerator,
    MAFBlock,
    MAFNetwork,
    affine_forward,
    affine_inverse,
    rqs_spline,
    spline_settings,
)
from ..showers.geometry import Geometry
from .config import MLPArchitecture

__all__ = [
    "FIRMWARE_SAFE_MODULES",
    "IAFBlock",
    "IAFGenerator",
    "IAFNetwork",
    "IAFRQSBlock",
    "MLPGenerator",
    "MLPGeneratorArchitecture",
    "MLPNetwork",
    "check_firmware_layers",
]

#: module types a firmware student may contain (hls4ml PyTorch frontend converts them exactly).
FIRMWARE_SAFE_MODULES: tuple[type[nn.Module], ...] = (nn.Sequential, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.LeakyReLU)

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
}


def check_firmware_layers(network: nn.Module, where: str = "student") -> None:
    """Raise :class:`UnsupportedLayerError` naming the first layer hls4ml cannot convert exactly."""
    allowed = ", ".join(t.__name__ for t in FIRMWARE_SAFE_MODULES)
    for name, mod in network.named_modules():
        if name == "" or isinstance(mod, FIRMWARE_SAFE_MODULES):
            continue
        msg = (
            f"{where}: layer {name!r} is {type(mod).__name__}, not convertible by hls4ml for a firmware recipe; "
            f"allowed: {allowed}"
        )
        raise UnsupportedLayerError(
            msg
        )


# --------------------------------------------------------------------------------------
# IAF student
# --------------------------------------------------------------------------------------
class IAFBlock(nn.Module):
    """Inverse of a :class:`~simcompress.generators.flow.MAFBlock`: the MADE reads the *noise* side.

    Sampling (noise -> data, one pass): ``x_p = z exp(s(z)) + m(z)``, ``x = x_p[:, inverse_permutation]``.
    Density (data -> noise) needs one pass per group.
    """

    permutation: torch.Tensor
    inverse_permutation: torch.Tensor

    def __init__(self, made: MADE, permutation: torch.Tensor) -> None:
        super().__init__()
        self.made = made
        self.register_buffer("permutation", permutation.clone())
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def sample(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise -> data of this block; returns ``(x, log|det dx/dz|)``."""
        shift, log_scale = self.made(z, c)
        return affine_inverse(z, shift, log_scale)[:, self.inverse_permutation], log_scale.sum(dim=1)

    def sample_x(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Noise -> data of this block, without the log-determinant."""
        return self.sample(z, c)[0]

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> noise (sequential over groups); returns ``(z, log|det dz/dx|)``."""
        xp = x[:, self.permutation]
        z = torch.zeros_like(xp)
        deg = self.made.degrees
        log_scale = torch.zeros_like(xp)
        for g in range(self.made.n_groups):
            shift, log_scale = self.made(z, c)
            z = torch.where(deg == g, affine_forward(xp, shift, log_scale)[0], z)
        return z, -log_scale.sum(dim=1)


class IAFRQSBlock(IAFBlock):
    """Inverse of a :class:`~simcompress.generators.flow.RQSBlock`: per coordinate a monotonic
    rational-quadratic spline on ``[-bound, bound]`` (identity outside, as the teacher's) whose
    parameters the MADE computes from the *noise* side.

    A MAF block's inverse is exactly of this form (``x_d = f^-1(z_d; theta(x_<d))`` and ``x_<d``
    is a function of ``z_<d``), so an IAF of spline blocks can follow a spline teacher coordinate
    by coordinate, which an affine IAF cannot (the two-peaked voxel marginals). Sampling is one
    MADE pass and one spline evaluation per block; the density needs one pass per group.
    """

    def __init__(self, made: MADE, permutation: torch.Tensor, n_bins: int, bound: float) -> None:
        super().__init__(made, permutation)
        self.n_bins, self.bound = spline_settings(type(self).__name__, made, n_bins, bound)

    def sample(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xp, ladj = rqs_spline(self.made.params(z, c), self.n_bins, self.bound).call_and_ladj(z)
        return xp[:, self.inverse_permutation], ladj.sum(dim=1)

    def sample_x(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return rqs_spline(self.made.params(z, c), self.n_bins, self.bound)(z)[:, self.inverse_permutation]

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xp = x[:, self.permutation]
        z = torch.zeros_like(xp)
        deg = self.made.degrees
        for g in range(self.made.n_groups):
            sel = deg == g
            t = rqs_spline(self.made.params(z, c)[:, :, sel], self.n_bins, self.bound)
            z = z.clone()
            z[:, sel] = t.inv(xp[:, sel])
        _, ladj = rqs_spline(self.made.params(z, c), self.n_bins, self.bound).call_and_ladj(z)
        return z, -ladj.sum(dim=1)


class IAFNetwork(nn.Module):
    """Stack of :class:`IAFBlock`: ``forward(z, c)`` samples in one pass per block.

    :meth:`sample_states` returns every intermediate state ``[h_0 = x, ..., h_K = z]`` in the
    teacher's indexing (``h_{k+1}`` = output of the teacher's block ``k`` in the density direction).
    """

    def __init__(self, blocks: list[IAFBlock], n_features: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.n_features = n_features

    def sample_states(self, z: torch.Tensor, c: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        states = [z]
        logdet = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for block in cast("list[IAFBlock]", reversed(self.blocks)):
            z, ld = block.sample(z, c)
            logdet = logdet + ld
            states.append(z)
        states.reverse()
        return states, logdet

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        for block in cast("list[IAFBlock]", reversed(self.blocks)):
            z = block.sample_x(z, c)
        return z

    def transform(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for block in self.blocks:
            x, ld = block(x, c)
            logdet = logdet + ld
        return x, logdet

    def log_prob(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        z, logdet = self.transform(x, c)
        return -0.5 * (z.pow(2).sum(dim=1) + self.n_features * torch.log(torch.tensor(2 * torch.pi))) + logdet


@register_generator
class IAFGenerator(FlowGenerator):
    """Flow student with one-pass sampling (CaloFlow II's IAF), same preprocessing as its MAF teacher.

    The architecture keys are those of :class:`FlowGenerator` (``hidden`` is the student's MADE
    width, ``permutation_seed`` reproduces the teacher's permutations), so ``log_prob`` and
    ``inverse`` still work (sequentially), and the bundle is an ordinary one of kind ``"iaf"``.
    """

    kind = "iaf"

    def __init__(
        self,
        geometry: Geometry,
        energy_range_mev: tuple[float, float] = DEFAULT_ENERGY_RANGE_MEV,
        *,
        arch: FlowArchitecture | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(geometry, energy_range_mev, arch=arch, **fields)
        teacher_like: MAFNetwork = self.network
        n = self.latent_dim
        blocks: list[IAFBlock] = []
        for blk in cast("list[MAFBlock]", teacher_like.blocks):
            lead = int(getattr(blk.made, "n_leading", 0))
            if self.arch.transform == "affine":
                blocks.append(IAFBlock(MADE(n, self.n_cond, self.hidden, self.n_groups, n_leading=lead), blk.permutation))
            else:
                k = self.arch.n_bins
                made = MADE(n, self.n_cond, self.hidden, self.n_groups, n_leading=lead, n_params=3 * k - 1)
                blocks.append(IAFRQSBlock(made, blk.permutation, k, self.arch.tail_bound))
        self.network = IAFNetwork(blocks, n)

    @classmethod
    def like(
        cls,
        teacher: FlowGenerator,
        hidden: list[int] | None = None,
        n_blocks: int | None = None,
        transform: Literal["affine", "rqs"] = "affine",
        n_bins: int | None = None,
    ) -> IAFGenerator:
        """A student with the teacher's preprocessing, permutations and standardisation buffers.

        ``transform`` is the student's own block transform (``rqs`` keeps the teacher's
        ``tail_bound``; ``n_bins`` None: the teacher's).
        """
        a = teacher.architecture()
        a["transform"] = transform
        if n_bins is not None:
            a["n_bins"] = int(n_bins)
        if hidden is not None:
            a["hidden"] = list(hidden)
        if n_blocks is not None:
            a["n_blocks"] = int(n_blocks)
        student = cls(teacher.geometry, energy_range_mev=teacher.energy_range_mev, **a)
        student.feat_mean.copy_(teacher.feat_mean)
        student.feat_std.copy_(teacher.feat_std)
        return student.to(teacher.device)


# --------------------------------------------------------------------------------------
# MLP student
# --------------------------------------------------------------------------------------
class MLPGeneratorArchitecture(MLPArchitecture):
    """``architecture`` of an ``"mlp"`` bundle: the recipe's student network plus the output map."""

    log_offset: float = Field(1e-6, gt=0, description="u = log(E_voxel / E_inc + log_offset)")
    threshold_mev: float = Field(0.0, ge=0, description="voxels below are set to 0 when sampling")


class MLPNetwork(nn.Module):
    """``forward(z, c) = body(cat(z, c))`` with ``depth`` hidden layers of ``width`` units."""

    def __init__(
        self,
        latent_dim: int,
        n_cond: int,
        n_out: int,
        width: int,
        depth: int,
        activation: str = "leaky_relu",
        negative_slope: float = 0.2,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            msg = f"activation {activation!r} unknown; allowed: {', '.join(sorted(_ACTIVATIONS))}"
            raise ConfigError(msg)
        layers: list[nn.Module] = []
        w_in = latent_dim + n_cond
        for _ in range(depth):
            layers.append(nn.Linear(w_in, width))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            act = _ACTIVATIONS[activation]
            layers.append(act(negative_slope) if act is nn.LeakyReLU else act())
            w_in = width
        layers.append(nn.Linear(w_in, n_out))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([z, c], dim=1))


@register_generator
class MLPGenerator(ShowerGenerator):
    """Feed-forward student: ``showers = postprocess(MLP(cat(z, c)), E)``.

    The network predicts ``y = (u - u_mean) / u_std`` with ``u = log(e_voxel / E_inc + log_offset)``;
    :meth:`postprocess` inverts it, ``e = E_inc * max(exp(u) - log_offset, 0)``, and zeroes voxels
    below ``threshold_mev``. ``u_mean``/``u_std`` are buffers fitted to the teacher's samples.

    Example:
        >>> from simcompress.showers import Geometry
        >>> g = MLPGenerator(Geometry.from_name("ds1-photons"), latent_dim=8, width=16, depth=2)
        >>> g.sample(torch.tensor([1000.0, 65536.0]), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 368])
    """

    kind = "mlp"
    Architecture = MLPGeneratorArchitecture

    u_mean: torch.Tensor
    u_std: torch.Tensor
    onehot: torch.Tensor

    def __init__(
        self,
        geometry: Geometry,
        latent_dim: int,
        energy_range_mev: tuple[float, float] = DEFAULT_ENERGY_RANGE_MEV,
        *,
        arch: MLPGeneratorArchitecture | None = None,
        **fields: Any,
    ) -> None:
        """``arch``, or its fields as keywords (``width=16``): :class:`MLPGeneratorArchitecture`."""
        super().__init__(geometry, latent_dim, energy_range_mev)
        a: MLPGeneratorArchitecture = self.make_architecture(arch, fields)
        self.arch = a
        self.width, self.depth = a.width, a.depth
        self.activation = a.activation
        self.negative_slope = a.negative_slope
        self.batchnorm = a.batchnorm
        self.log_offset = a.log_offset
        self.threshold_mev = a.threshold_mev
        n_v = geometry.n_voxels
        self.network = MLPNetwork(
            self.latent_dim, self.n_cond, n_v, self.width, self.depth, self.activation, self.negative_slope, self.batchnorm
        )
        self.register_buffer("u_mean", torch.zeros(n_v))
        self.register_buffer("u_std", torch.ones(n_v))
        idx = torch.as_tensor(geometry.voxel_layer, dtype=torch.long)
        self.register_buffer("onehot", F.one_hot(idx, geometry.n_layers).to(torch.float32), persistent=False)

    def target(self, showers: torch.Tensor, incident_energies: torch.Tensor) -> torch.Tensor:
        """Showers (MeV) -> the standardised network-output space (regression target)."""
        u = torch.log(showers.clamp_min(0.0) / incident_energies.unsqueeze(1) + self.log_offset)
        return (u - self.u_mean) / self.u_std

    def set_standardisation(self, showers: torch.Tensor, incident_energies: torch.Tensor) -> None:
        u = torch.log(showers.clamp_min(0.0) / incident_energies.unsqueeze(1) + self.log_offset)
        self.u_mean.copy_(u.mean(0))
        self.u_std.copy_(u.std(0).clamp_min(1e-3))

    def postprocess(self, y: torch.Tensor, incident_energies: torch.Tensor, threshold: bool = True) -> torch.Tensor:
        frac = (torch.exp(y * self.u_std + self.u_mean) - self.log_offset).clamp_min(0.0)
        showers = frac * incident_energies.unsqueeze(1)
        if threshold and self.threshold_mev > 0:
            showers = torch.where(showers < self.threshold_mev, torch.zeros_like(showers), showers)
        return showers

    @classmethod
    def from_config(cls, config: dict[str, Any], geometry: Geometry, source: str = "<config>") -> MLPGenerator:
        arch = cls.parse_architecture(config, source)
        return cls(geometry, latent_dim_of(config, source), energy_range_of(config, source), arch=arch)
