"""Conditional masked autoregressive flow for calorimeter showers (CaloFlow tradition).

Preprocessing (:meth:`FlowGenerator.preprocess`, after CaloFlow, Krause & Shih 2021):

* layer energies ``E_l`` become ``L`` numbers in [0, 1]: ``u_0 = sum E_l / (s E_inc)``
  (``s = response_scale``) and ``u_i = E_{i-1} / sum_{j >= i-1} E_j`` for ``i = 1..L-1``;
* voxels are normalised by their layer energy, ``v = e_voxel / E_layer``;
* during training uniform noise in ``[0, noise_mev)`` is added to every voxel (dequantisation
  of the many exact zeros);
* every number ``x`` in [0, 1] is mapped to ``logit(alpha + (1 - 2 alpha) x)`` and standardised
  with the training-set mean and width (stored buffers).

One flow models the joint density of ``[u (L), v (V)]`` given ``log E_inc``. It is CaloFlow's
two-flow design folded into one autoregressive order: the ``L`` layer-energy coordinates lead
the order of every block (one group each, permuted among themselves), so their density given
``E_inc`` is a textbook MAF that never depends on the voxels, and the voxel coordinates are
modelled conditionally on them. Sampling outliers in the voxel part therefore cannot disturb
the total or per-layer energies (the voxel fractions are renormalised in each layer).

Flow: a stack of :class:`MADE` blocks (Germain et al. 2015) with a fixed random permutation in
front of each block and, per coordinate, either an affine transform (``transform: affine``, MAF,
Papamakarios et al. 2017) or a monotonic rational-quadratic spline (``transform: rqs``, Durkan et
al. 2019, the transform CaloFlow uses: zuko's :class:`~zuko.transforms.MonotonicRQSTransform`,
identity outside ``[-tail_bound, tail_bound]``). Affine coordinates cannot model the two-peaked
voxel marginals (empty voxels in the dequantisation band, hit voxels orders of magnitude above);
splines can. Degrees are
assigned in ``n_groups`` groups: one per leading coordinate, then ``n_groups - n_leading``
contiguous groups of voxel coordinates, transformed together given all earlier groups, so
sampling takes ``n_groups`` network passes per block instead of ``D`` (one group per
coordinate is the textbook MAF). The density is exact for every choice.

Reuse (e.g. an IAF student built from the same blocks): :class:`MaskedLinear` is an
``nn.Linear`` subclass whose ``forward`` multiplies the weight by the ``mask`` buffer;
:meth:`MADE.forward` returns ``(shift, log_scale)`` for inputs ``x`` and context ``c``
(build a student's MADE with the teacher's ``n_groups`` and ``n_leading`` to keep its order);
:func:`affine_forward` / :func:`affine_inverse` are the two directions of the transform.
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import numpy as np
import torch
from pydantic import Field, PositiveInt
from torch import nn
from torch.nn import functional as F
from zuko.transforms import MonotonicRQSTransform

from .._config import StrictModel
from ..showers.geometry import Geometry
from .base import DEFAULT_ENERGY_RANGE_MEV, ShowerGenerator, energy_range_of, knot_interp, register_generator

__all__ = [
    "MADE",
    "FlowArchitecture",
    "FlowGenerator",
    "MAFBlock",
    "MAFNetwork",
    "MaskedLinear",
    "RQSBlock",
    "affine_forward",
    "affine_inverse",
    "rqs_spline",
    "spline_settings",
]

_LOG_2PI = math.log(2.0 * math.pi)


class FlowArchitecture(StrictModel):
    """``architecture`` of a ``"flow"`` (and ``"iaf"``) bundle; see the module docstring."""

    n_blocks: int = Field(4, ge=1, description="MADE blocks")
    hidden: list[PositiveInt] = Field(default_factory=lambda: [256], min_length=1, description="MADE hidden widths")
    n_groups: int = Field(21, ge=2, description="autoregressive groups (network passes per block when sampling)")
    alpha: float = Field(1e-6, gt=0, lt=0.5, description="logit squeeze")
    noise_mev: float = Field(1e-3, ge=0, description="dequantisation noise width")
    response_scale: float = Field(2.0, gt=0)
    permutation_seed: int = 0
    standardise: Literal["global", "energy"] = "global"
    n_calib: int = Field(15, ge=2, description="knots of the energy standardisation tables")
    range_scale: float | None = Field(
        None, gt=0, description="widen each standardisation width to max|y - mean| / range_scale (keeps rare hits inside a spline's bound)"
    )
    transform: Literal["affine", "rqs"] = Field("affine", description="per-coordinate transform of each block")
    n_bins: int = Field(8, ge=2, le=64, description="spline bins (transform: rqs)")
    tail_bound: float = Field(5.0, gt=0, description="spline interval [-B, B] (transform: rqs); identity outside")


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 ``mask`` buffer (out, in)."""

    mask: torch.Tensor

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if tuple(mask.shape) != (out_features, in_features):
            msg = f"mask shape {tuple(mask.shape)} != ({out_features}, {in_features})"
            raise ValueError(msg)
        # not persistent: masks follow from the config, so bundles store only the weights
        self.register_buffer("mask", mask.to(torch.float32).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def group_degrees(n_features: int, n_groups: int, n_leading: int = 0) -> torch.Tensor:
    """Degree (group index 0..n_groups-1) of each of ``n_features`` coordinates.

    The first ``n_leading`` coordinates get one group each (textbook MAF order), the remaining
    ``n_features - n_leading`` are split into ``n_groups - n_leading`` contiguous groups.
    """
    if not 0 <= n_leading < n_groups:
        msg = f"n_leading must be in [0, n_groups={n_groups}), got {n_leading}"
        raise ValueError(msg)
    n_rest, g_rest = n_features - n_leading, n_groups - n_leading
    if g_rest > n_rest:
        msg = f"{n_rest} trailing features cannot be split into {g_rest} groups"
        raise ValueError(msg)
    rest = n_leading + torch.div(torch.arange(n_rest) * g_rest, n_rest, rounding_mode="floor")
    return torch.cat([torch.arange(n_leading), rest])


class MADE(nn.Module):
    """Masked autoencoder with context: ``forward(x, c) -> (shift, log_scale)``, each (N, D).

    Output ``d`` depends only on inputs of a lower degree (group) and on ``c``. Hidden units get
    degrees ``-1 .. n_groups-2`` (degree -1 units see only the context, so the first group is
    conditioned on ``c`` too). ``log_scale`` is soft-clamped to ``(-scale_bound, scale_bound)``.
    """

    degrees: torch.Tensor

    def __init__(
        self, n_features: int, n_context: int, hidden: list[int], n_groups: int, scale_bound: float = 3.0, n_leading: int = 0,
        n_params: int = 2,
    ) -> None:
        super().__init__()
        self.n_params = int(n_params)
        if not 2 <= n_groups <= n_features:
            msg = f"n_groups must be in [2, {n_features}], got {n_groups}"
            raise ValueError(msg)
        self.n_features = n_features
        self.n_groups = n_groups
        self.n_leading = int(n_leading)
        self.scale_bound = float(scale_bound)
        d_in = group_degrees(n_features, n_groups, self.n_leading)
        self.register_buffer("degrees", d_in, persistent=False)
        layers: list[nn.Module] = []
        prev = d_in
        width = n_features
        self.context = nn.Linear(n_context, hidden[0])
        for i, h in enumerate(hidden):
            deg = torch.arange(h) % n_groups - 1  # -1 .. n_groups-2
            mask = (deg.unsqueeze(1) >= prev.unsqueeze(0)).float()
            layers.append(MaskedLinear(width, h, mask))
            prev, width = deg, h
            del i
        self.hidden_layers = nn.ModuleList(layers)
        out_deg = d_in.repeat(self.n_params)  # parameter-major: output j*D + d belongs to coordinate d
        self.out = MaskedLinear(width, self.n_params * n_features, (out_deg.unsqueeze(1) > prev.unsqueeze(0)).float())
        nn.init.zeros_(self.out.weight)  # start as the identity transform
        nn.init.zeros_(self.out.bias)
        self.act = nn.ELU()

    def hidden(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations (N, hidden[-1])."""
        h = self.act(self.hidden_layers[0](x) + self.context(c))
        for layer in self.hidden_layers[1:]:
            h = self.act(layer(h))
        return h

    def params(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Raw transform parameters ``(N, n_params, D)``; entry ``[:, j, d]`` sees only lower groups than ``d``."""
        return self.out(self.hidden(x, c)).view(x.shape[0], self.n_params, self.n_features)

    def group_heads(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] | None:
        """Per group ``g``: (coordinate indices, output weight rows, bias rows) of that group alone.

        Sampling inverts one group per pass and needs only that group's parameters, a
        ``1 / n_groups`` share of the output layer (the largest layer: ``n_params * D`` rows);
        :meth:`group_params` computes them from these rows. None where the output layer is not
        a plain (possibly parametrised: pruned, fake-quantised) :class:`MaskedLinear` or has
        forward hooks (activation quantisers): then only the full layer is faithful.
        """
        out = self.out
        if not isinstance(out, MaskedLinear) or out._forward_hooks or out._forward_pre_hooks:
            return None
        w = (out.weight * out.mask).view(self.n_params, self.n_features, -1)
        b = None if out.bias is None else out.bias.view(self.n_params, self.n_features)
        heads: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        for g in range(self.n_groups):
            idx = (self.degrees == g).nonzero().squeeze(1)
            heads.append((idx, w[:, idx].reshape(-1, w.shape[-1]), None if b is None else b[:, idx].reshape(-1)))
        return heads

    def group_params(
        self, x: torch.Tensor, c: torch.Tensor, g: int, heads: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(coordinate indices of group ``g``, their raw parameters ``(N, n_params, n_g)``), equal to
        ``params(x, c)[:, :, idx]`` up to float rounding (from :meth:`group_heads` where given)."""
        if heads is None:
            idx = (self.degrees == g).nonzero().squeeze(1)
            return idx, self.params(x, c)[:, :, idx]
        idx, w, b = heads[g]
        return idx, F.linear(self.hidden(x, c), w, b).view(x.shape[0], self.n_params, idx.numel())

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Affine parameters ``(shift, log_scale)`` (a MADE built with ``n_params=2``)."""
        if self.n_params != 2:
            msg = f"MADE.forward gives affine parameters; this MADE has {self.n_params} per coordinate (use params())"
            raise ValueError(msg)
        shift, raw = self.params(x, c).unbind(1)
        log_scale = self.scale_bound * torch.tanh(raw / self.scale_bound)
        return shift, log_scale


def affine_forward(x: torch.Tensor, shift: torch.Tensor, log_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Data -> noise direction: ``z = (x - shift) exp(-log_scale)``; returns ``(z, log|det dz/dx|)``."""
    return (x - shift) * torch.exp(-log_scale), -log_scale.sum(dim=1)


def affine_inverse(z: torch.Tensor, shift: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Noise -> data direction: ``x = z exp(log_scale) + shift``."""
    return z * torch.exp(log_scale) + shift


class MAFBlock(nn.Module):
    """Permutation then one MADE affine transform."""

    permutation: torch.Tensor
    inverse_permutation: torch.Tensor

    def __init__(self, made: MADE, permutation: torch.Tensor) -> None:
        super().__init__()
        self.made = made
        self.register_buffer("permutation", permutation.clone())
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> noise (one block): returns ``(z, logdet)``."""
        xp = x[:, self.permutation]
        shift, log_scale = self.made(xp, c)
        return affine_forward(xp, shift, log_scale)

    def inverse(self, z: torch.Tensor, c: torch.Tensor, groups: int | None = None) -> torch.Tensor:
        """Noise -> data, one pass of the MADE per group of coordinates.

        ``groups``: only the first ``groups`` groups are inverted (the others stay 0): the
        leading coordinates alone (``groups = n_leading``) need only their own passes.
        """
        xp = torch.zeros_like(z)
        made = self.made
        heads = made.group_heads()
        for g in range(made.n_groups if groups is None else groups):
            idx, p = made.group_params(xp, c, g, heads)
            shift, raw = p.unbind(1)
            log_scale = made.scale_bound * torch.tanh(raw / made.scale_bound)
            xp = xp.clone()
            xp[:, idx] = affine_inverse(z[:, idx], shift, log_scale)
        return xp[:, self.inverse_permutation]


class _ParamMajorRQS(MonotonicRQSTransform):
    """zuko's :class:`~zuko.transforms.MonotonicRQSTransform`, built from parameters laid out
    ``(N, 3 K - 1, D)`` (the MADE's parameter-major output).

    zuko's constructor normalises the bins with a softmax, a pad and a cumsum over the last
    dimension, of size ``K`` (4-8): torch's CPU kernels are 7x slower on such a short last
    dimension than over dimension 1 of the same numbers, and these three took most of a
    spline evaluation (0.35 of 0.45 s per 1,000 ds1 showers). This subclass does the same
    arithmetic (zuko 1.6's ``__init__``, ``slope = 1e-3``) over dimension 1 and hands zuko the
    knot tables ``horizontal``, ``vertical``, ``derivatives`` in its layout ``(N, D, K + 1)``;
    evaluation, inverse and log-determinant are zuko's own. A test compares it with zuko's
    constructor, so a change of zuko's internals is caught.
    """

    def __init__(self, params: torch.Tensor, n_bins: int, bound: float, slope: float = 1e-3) -> None:
        torch.distributions.Transform.__init__(self)
        k = int(n_bins)
        w, h, d = params[:, :k], params[:, k : 2 * k], params[:, 2 * k :]
        ls = math.log(slope)
        w = w / (1 + abs(2 * w / ls))
        h = h / (1 + abs(2 * h / ls))
        d = d / (1 + abs(d / ls))
        w = F.pad(F.softmax(w, dim=1), (0, 0, 1, 0), value=0)
        h = F.pad(F.softmax(h, dim=1), (0, 0, 1, 0), value=0)
        d = F.pad(d, (0, 0, 1, 1), value=0)
        self.horizontal = (bound * (2 * torch.cumsum(w, dim=1) - 1)).transpose(1, 2).contiguous()
        self.vertical = (bound * (2 * torch.cumsum(h, dim=1) - 1)).transpose(1, 2).contiguous()
        self.derivatives = torch.exp(d).transpose(1, 2).contiguous()


def rqs_spline(params: torch.Tensor, n_bins: int, bound: float) -> MonotonicRQSTransform:
    """zuko's monotonic RQS from MADE parameters ``(N, 3 K - 1, D)``: widths, heights, derivatives."""
    return _ParamMajorRQS(params, n_bins, bound)


def spline_settings(block: str, made: MADE, n_bins: int, bound: float) -> tuple[int, float]:
    """``(n_bins, bound)`` of a spline block after checking that ``made`` has ``3 K - 1`` parameters per coordinate."""
    if made.n_params != 3 * n_bins - 1:
        msg = f"{block} with {n_bins} bins needs a MADE with {3 * n_bins - 1} parameters per coordinate, got {made.n_params}"
        raise ValueError(msg)
    return int(n_bins), float(bound)


class RQSBlock(MAFBlock):
    """Permutation then one MADE whose ``3 K - 1`` outputs per coordinate parametrise a monotonic
    rational-quadratic spline on ``[-bound, bound]`` (zuko's, identity outside; a zero network
    output is the identity)."""

    def __init__(self, made: MADE, permutation: torch.Tensor, n_bins: int, bound: float) -> None:
        super().__init__(made, permutation)
        self.n_bins, self.bound = spline_settings(type(self).__name__, made, n_bins, bound)

    def spline(self, params: torch.Tensor) -> MonotonicRQSTransform:
        return rqs_spline(params, self.n_bins, self.bound)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xp = x[:, self.permutation]
        z, ladj = self.spline(self.made.params(xp, c)).call_and_ladj(xp)
        return z, ladj.sum(dim=1)

    def inverse(self, z: torch.Tensor, c: torch.Tensor, groups: int | None = None) -> torch.Tensor:
        xp = torch.zeros_like(z)
        made = self.made
        heads = made.group_heads()
        for g in range(made.n_groups if groups is None else groups):
            # only this group's coordinates are inverted: neither the spline nor the output rows
            # of the others are needed
            idx, p = made.group_params(xp, c, g, heads)
            xp = xp.clone()
            xp[:, idx] = self.spline(p).inv(z[:, idx])
        return xp[:, self.inverse_permutation]


class MAFNetwork(nn.Module):
    """The flow's conditioner stack. ``forward(z, c)`` samples (noise -> preprocessed data);
    :meth:`transform` is the density direction (data -> noise, with log-determinant)."""

    def __init__(
        self,
        n_features: int,
        n_context: int,
        n_blocks: int,
        hidden: list[int],
        n_groups: int,
        permutation_seed: int = 0,
        n_leading: int = 0,
        transform: Literal["affine", "rqs"] = "affine",
        n_bins: int = 8,
        tail_bound: float = 5.0,
    ) -> None:
        super().__init__()
        rng = np.random.default_rng(permutation_seed)
        perms = []
        for _ in range(n_blocks):
            # the leading coordinates stay in front (permuted among themselves): they never
            # depend on the trailing ones, in any block
            lead = rng.permutation(n_leading)
            rest = n_leading + rng.permutation(n_features - n_leading)
            perms.append(torch.as_tensor(np.concatenate([lead, rest]).astype(np.int64)))
        if transform == "affine":
            blocks = [MAFBlock(MADE(n_features, n_context, hidden, n_groups, n_leading=n_leading), p) for p in perms]
        else:
            n_par = 3 * n_bins - 1
            blocks = [
                RQSBlock(MADE(n_features, n_context, hidden, n_groups, n_leading=n_leading, n_params=n_par), p, n_bins, tail_bound)
                for p in perms
            ]
        self.blocks = nn.ModuleList(blocks)
        self.n_features = n_features
        self.n_leading = n_leading

    def transform(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for block in self.blocks:
            x, ld = block(x, c)
            logdet = logdet + ld
        return x, logdet

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        for block in cast("list[MAFBlock]", reversed(self.blocks)):
            z = block.inverse(z, c)
        return z

    def sample_leading(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The leading ``n_leading`` coordinates of ``forward(z, c)`` (N, n_leading), equal to its
        first columns: they depend on nothing else in any block, so each block runs only their
        ``n_leading`` passes instead of ``n_groups``."""
        if self.n_leading == 0:
            msg = "sample_leading: this network has no leading coordinates"
            raise ValueError(msg)
        for block in cast("list[MAFBlock]", reversed(self.blocks)):
            z = block.inverse(z, c, groups=self.n_leading)
        return z[:, : self.n_leading]

    def log_prob(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        z, logdet = self.transform(x, c)
        return -0.5 * (z.pow(2).sum(dim=1) + self.n_features * _LOG_2PI) + logdet


@register_generator
class FlowGenerator(ShowerGenerator):
    """CaloFlow-style conditional MAF shower generator (see module docstring).

    ``latent_dim = n_layers + n_voxels``; :meth:`log_prob` is the exact log-density of the
    preprocessed representation (standardised logit space) given the incident energy.

    Example:
        >>> from simcompress.showers import Geometry
        >>> g = FlowGenerator(Geometry.from_name("ds1-photons"), n_blocks=1, hidden=[32], n_groups=8)
        >>> g.sample(torch.tensor([1000.0]), torch.Generator().manual_seed(0)).shape
        torch.Size([1, 368])
    """

    kind = "flow"
    Architecture = FlowArchitecture
    arch: FlowArchitecture
    #: a :class:`MAFNetwork`, or a student's network with the same ``transform``/``log_prob``
    network: Any

    feat_mean: torch.Tensor
    feat_std: torch.Tensor
    onehot: torch.Tensor

    def __init__(
        self,
        geometry: Geometry,
        energy_range_mev: tuple[float, float] = DEFAULT_ENERGY_RANGE_MEV,
        *,
        arch: FlowArchitecture | None = None,
        **fields: Any,
    ) -> None:
        """``arch``, or its fields as keywords (``n_blocks=1``): :class:`FlowArchitecture`."""
        n_l, n_v = geometry.n_layers, geometry.n_voxels
        super().__init__(geometry, n_l + n_v, energy_range_mev)
        a: FlowArchitecture = self.make_architecture(arch, fields)
        self.arch = a
        self.n_blocks = a.n_blocks
        self.hidden = list(a.hidden)
        self.n_groups = a.n_groups
        self.alpha = a.alpha
        self.noise_mev = a.noise_mev
        self.response_scale = a.response_scale
        self.permutation_seed = a.permutation_seed
        self.standardise = a.standardise
        self.n_calib = a.n_calib
        #: the layer-energy coordinates lead every block's autoregressive order (one group each)
        self.n_leading = n_l
        self.transform = a.transform
        self.network = MAFNetwork(
            n_l + n_v, self.n_cond, self.n_blocks, self.hidden, self.n_groups, self.permutation_seed, n_leading=n_l,
            transform=a.transform, n_bins=a.n_bins, tail_bound=a.tail_bound,
        )
        # "global": one mean/width per coordinate; "energy": a table of them at ``n_calib`` knots
        # in the condition, interpolated linearly (each voxel's typical fraction moves by orders
        # of magnitude over the ds1 energies; the flow then only models the rest)
        shape = (n_l + n_v,) if a.standardise == "global" else (self.n_calib, n_l + n_v)
        self.register_buffer("feat_mean", torch.zeros(shape))
        self.register_buffer("feat_std", torch.ones(shape))
        idx = torch.as_tensor(geometry.voxel_layer, dtype=torch.long)
        self.register_buffer("onehot", F.one_hot(idx, n_l).to(torch.float32), persistent=False)

    # -- preprocessing -----------------------------------------------------------------
    def _logit(self, u: torch.Tensor) -> torch.Tensor:
        u = self.alpha + (1 - 2 * self.alpha) * u.clamp(0.0, 1.0)
        return torch.log(u) - torch.log1p(-u)

    def _unit(self, y: torch.Tensor) -> torch.Tensor:
        return ((torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)).clamp(0.0, 1.0)

    def preprocess(
        self, showers: torch.Tensor, incident_energies: torch.Tensor, generator: torch.Generator | None = None,
        dequantise: bool = False, standardise: bool = True,
    ) -> torch.Tensor:
        """Showers (N, V) MeV -> flow coordinates (N, L + V) (see module docstring)."""
        x = showers.clamp_min(0.0)
        if dequantise and self.noise_mev > 0:
            dev = generator.device if generator is not None else x.device
            x = x + self.noise_mev * torch.rand(x.shape, generator=generator, device=dev).to(x.device)
        elif self.noise_mev > 0:
            x = x + 0.5 * self.noise_mev  # the mean of the dequantisation noise
        layer_e = x @ self.onehot  # (N, L)
        total = layer_e.sum(dim=1)
        u0 = total / (self.response_scale * incident_energies)
        tail = torch.flip(torch.cumsum(torch.flip(layer_e, [1]), 1), [1])  # sum_{j>=i} E_j
        ratios = torch.where(tail[:, :-1] > 0, layer_e[:, :-1] / tail[:, :-1].clamp_min(1e-30), torch.zeros_like(tail[:, :-1]))
        le = layer_e @ self.onehot.T
        v = torch.where(le > 0, x / le.clamp_min(1e-30), torch.zeros_like(x))
        y = self._logit(torch.cat([u0.unsqueeze(1), ratios, v], dim=1))
        if standardise:
            mean, std = self._standardisation(incident_energies)
            y = (y - mean) / std
        return y

    def _standardisation(self, incident_energies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, width) of the logit coordinates: global (D,) or per event (N, D) from the knot table."""
        if self.standardise == "global":
            return self.feat_mean, self.feat_std
        c = self.condition(incident_energies)
        return knot_interp(c, self.feat_mean), knot_interp(c, self.feat_std)

    def set_standardisation(self, showers: torch.Tensor, incident_energies: torch.Tensor, generator: torch.Generator) -> None:
        y = self.preprocess(showers, incident_energies, generator, dequantise=True, standardise=False)
        rs = self.arch.range_scale
        if self.standardise == "global":
            mean = y.mean(0)
            std = y.std(0).clamp_min(1e-3)
            if rs is not None:
                std = torch.maximum(std, (y - mean).abs().amax(0) / rs)
            self.feat_mean.copy_(mean)
            self.feat_std.copy_(std)
            return
        c = self.condition(incident_energies).reshape(-1)
        k = torch.round((c.clamp(-1, 1) + 1) / 2 * (self.n_calib - 1)).long()
        y64 = y.double()
        n = torch.bincount(k, minlength=self.n_calib).double()
        s1 = torch.zeros(self.n_calib, y.shape[1], dtype=torch.float64).index_add_(0, k, y64)
        s2 = torch.zeros(self.n_calib, y.shape[1], dtype=torch.float64).index_add_(0, k, y64 * y64)
        ok = n > 1
        if not ok.any():
            msg = "set_standardisation: need at least 2 showers in one energy bin"
            raise ValueError(msg)
        mean = s1 / n.clamp_min(1)[:, None]
        std = (s2 / n.clamp_min(1)[:, None] - mean**2).clamp_min(0).sqrt().clamp_min(1e-3)
        if rs is not None:
            # rare hits of mostly-empty voxels lie 10-25 widths out; a spline is the identity
            # beyond its bound, so without this the flow could never put them there
            dev = (y64 - mean[k]).abs()
            amax = torch.zeros_like(mean).scatter_reduce_(0, k[:, None].expand_as(dev), dev, "amax")
            std = torch.maximum(std, amax / rs)
        knots = np.arange(self.n_calib, dtype=np.float64)
        kx = knots[ok.numpy()]
        # knots without data: linear interpolation between the filled ones (constant outside)
        m = np.stack([np.interp(knots, kx, col) for col in mean[ok].numpy().T], axis=1)
        sd = np.stack([np.interp(knots, kx, col) for col in std[ok].numpy().T], axis=1)
        self.feat_mean.copy_(torch.from_numpy(m))
        self.feat_std.copy_(torch.from_numpy(sd))

    @torch.no_grad()
    def recalibrate_response(
        self,
        showers: torch.Tensor,
        incident_energies: torch.Tensor,
        generator: torch.Generator | None = None,
        batch_size: int = 10_000,
    ) -> dict[str, Any]:
        """After training: make the generated total energy match the reference's per energy knot.

        The response coordinate ``u_0 = E_dep / (s E_inc)`` leads the autoregressive order and is
        modelled given ``E_inc`` alone, so this touches nothing else: per knot of the
        standardisation table (``standardise: energy``; showers assigned to their nearest knot), the
        generated logit ``t = logit(u_0)`` is mapped affinely, ``t -> a + b t``, with ``a, b``
        fitted (from the logit moments, then a few Newton steps) so that the mean and width of the
        response ``s u_0`` equal those of ``showers``; the map is written into that knot's entries
        of ``feat_mean`` / ``feat_std`` for coordinate 0. Layer fractions, voxel fractions and the
        network are unchanged; knots without reference showers keep their entries. A trained flow
        leaves per-energy errors of about 1 % in the mean response and 10-20 % in the resolution
        (the spread of ``E_dep / E_inc``), which this removes up to the statistics of ``showers``.
        The generated side is one draw of :meth:`sample_latent` at the reference's energies, run
        through the network's leading coordinates only (:meth:`MAFNetwork.sample_leading`, a
        quarter of a full pass for ds1; ``generator`` makes it reproducible).

        Returns, per knot (None where no reference showers), the deviations of the generated mean
        response and resolution from the reference's in per cent, before and after, from the same
        generated showers; and the knot energies.
        """
        if self.standardise != "energy":
            msg = "recalibrate_response: needs standardise='energy' (a per-energy table to correct)"
            raise ValueError(msg)
        e = torch.as_tensor(incident_energies, dtype=torch.float32).reshape(-1).to(self.device)
        x = torch.as_tensor(showers, dtype=torch.float32).to(self.device)
        k = torch.round((self.condition(e).reshape(-1).clamp(-1, 1) + 1) / 2 * (self.n_calib - 1)).long().cpu()
        t_ref = self.preprocess(x, e, generator, dequantise=True, standardise=False)[:, 0].double().cpu()
        leading = getattr(self.network, "sample_leading", None)  # a student's network may not have it
        parts = []
        for i in range(0, e.shape[0], batch_size):
            eb = e[i : i + batch_size]
            z, cb = self.sample_latent(eb.shape[0], generator), self.condition(eb)
            y = leading(z, cb) if leading is not None else self.network(z, cb)
            mean, std = self._standardisation(eb)
            parts.append((y[:, 0] * std[:, 0] + mean[:, 0]).double().cpu())
        t_gen = torch.cat(parts)
        old_mean, old_std = self.feat_mean[:, 0].double().cpu().clone(), self.feat_std[:, 0].double().cpu().clone()
        new_mean, new_std = old_mean.clone(), old_std.clone()
        mapped = t_gen.clone()
        ok = torch.zeros(self.n_calib, dtype=torch.bool)
        converged: list[bool | None] = [None] * self.n_calib

        def response(t: torch.Tensor) -> torch.Tensor:
            return self.response_scale * ((torch.sigmoid(t) - self.alpha) / (1 - 2 * self.alpha)).clamp(0.0, 1.0)

        for j in range(self.n_calib):
            m = k == j
            if int(m.sum()) < 2:
                continue
            tg, tr = t_gen[m], t_ref[m]
            if not (tg.std() > 0 and tr.std() > 0):
                continue
            ok[j] = True
            # start: the logit moments matched; then a, b refined so that the mean and width of the
            # response itself match (at 256 MeV, resolution 22 %, the logit is visibly nonlinear)
            b = tr.std() / tg.std()
            a = tr.mean() - tg.mean() * b
            r_ref_u = response(tr)  # the reference in the same coordinate (its dequantisation noise included)
            mr, sr = r_ref_u.mean(), r_ref_u.std()
            converged[j] = False
            for _ in range(50):
                b = b * sr / response(a + b * tg).std()
                tm = a + b * tg
                sig = torch.sigmoid(tm)
                slope = (self.response_scale * sig * (1 - sig) / (1 - 2 * self.alpha)).mean()
                a = a + (mr - response(tm).mean()) / slope
                r = response(a + b * tg)
                if abs(float(r.mean() / mr - 1)) < 1e-7 and abs(float(r.std() / sr - 1)) < 1e-6:
                    converged[j] = True
                    break
            new_std[j] = old_std[j] * b
            new_mean[j] = a + old_mean[j] * b
            mapped[m] = a + b * tg
        self.feat_mean[:, 0] = new_mean.to(self.feat_mean)
        self.feat_std[:, 0] = new_std.to(self.feat_std)

        r_ref = (x.double().sum(1).cpu() / e.double().cpu())

        def devs(r_gen: torch.Tensor) -> tuple[list[float | None], list[float | None]]:
            mean_dev: list[float | None] = []
            res_dev: list[float | None] = []
            for j in range(self.n_calib):
                m = k == j
                if not ok[j]:
                    mean_dev.append(None)
                    res_dev.append(None)
                    continue
                a, g = r_ref[m], r_gen[m]
                mean_dev.append(round(float(100 * (g.mean() / a.mean() - 1)), 4))
                res_dev.append(round(float(100 * ((g.std() / g.mean()) / (a.std() / a.mean()) - 1)), 3))
            return mean_dev, res_dev

        mb, rb = devs(response(t_gen))
        ma, ra = devs(response(mapped))
        lo, hi = self.energy_range_mev
        return {
            "method": "affine map of the generated logit(u_0) per energy knot, fitted so the response's mean and width equal the reference's",
            "knots_with_data": int(ok.sum()),
            "fit_converged": converged,  # per knot (None: no data); unconverged knots keep the last iterate
            "knot_energies_mev": [round(lo * (hi / lo) ** (i / (self.n_calib - 1)), 3) for i in range(self.n_calib)],
            "n_reference": int(e.shape[0]),
            "mean_response_dev_pct_before": mb,
            "mean_response_dev_pct_after": ma,
            "resolution_dev_pct_before": rb,
            "resolution_dev_pct_after": ra,
        }

    def postprocess(self, y: torch.Tensor, incident_energies: torch.Tensor) -> torch.Tensor:
        n_l = self.geometry.n_layers
        mean, std = self._standardisation(incident_energies)
        u = self._unit(y * std + mean)
        total = u[:, 0] * self.response_scale * incident_energies
        layer_e = []
        remaining = total
        for i in range(n_l - 1):
            e_i = u[:, 1 + i] * remaining
            layer_e.append(e_i)
            remaining = remaining - e_i
        layer_e.append(remaining)
        le = torch.stack(layer_e, dim=1)
        v = u[:, n_l:]
        vsum = (v @ self.onehot) @ self.onehot.T
        v = torch.where(vsum > 0, v / vsum.clamp_min(1e-30), torch.zeros_like(v))
        showers = v * (le @ self.onehot.T)
        if self.noise_mev > 0:  # remove the mean dequantisation noise; the noise band is zero
            showers = showers - 0.5 * self.noise_mev
            showers = torch.where(showers < 0.5 * self.noise_mev, torch.zeros_like(showers), showers)
        return showers

    @torch.no_grad()
    def postprocess_report(self, incident_energies: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, float]:
        """How often sampling needs :meth:`postprocess`'s repairs (CaloFlow's handling), at these energies.

        Physically impossible values are repaired, never passed on: a unit coordinate below 0 or
        above 1 (``sigmoid(y)`` within ``alpha`` of the ends) is clipped to [0, 1], so no energy is
        negative and no fraction exceeds 1, and each layer's voxel fractions are renormalised to
        sum to 1 (CaloFlow renormalises the same way). Returns the share of clipped voxel
        coordinates and the distribution of the per-layer sums before renormalisation.
        """
        e = incident_energies.to(self.device, torch.float32)
        y = self.network(self.sample_latent(e.shape[0], generator), self.condition(e))
        mean, std = self._standardisation(e)
        raw = (torch.sigmoid(y * std + mean) - self.alpha) / (1 - 2 * self.alpha)
        n_l = self.geometry.n_layers
        vox = raw[:, n_l:]
        sums = (vox.clamp(0.0, 1.0) @ self.onehot).flatten().double()
        q = torch.quantile(sums, torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64)).tolist()
        return {
            "n_showers": int(e.shape[0]),
            "clipped_below_0": float((vox < 0).double().mean()),
            "clipped_above_1": float((vox > 1).double().mean()),
            "layer_sum_q01": q[0], "layer_sum_median": q[1], "layer_sum_q99": q[2],
            "layer_sum_outside_0.9_1.1": float(((sums - 1).abs() > 0.1).double().mean()),
        }

    # -- density -----------------------------------------------------------------------
    def log_prob(self, showers: torch.Tensor, incident_energies: torch.Tensor) -> torch.Tensor:
        """Exact log-density (N,) of the preprocessed showers given the incident energies.

        The density is that of the standardised logit coordinates, with every voxel shifted by the
        mean of the dequantisation noise (``noise_mev / 2``) instead of random noise.
        """
        y = self.preprocess(showers, incident_energies)
        return self.network.log_prob(y, self.condition(incident_energies))

    def inverse(self, showers: torch.Tensor, incident_energies: torch.Tensor) -> torch.Tensor:
        """Showers -> latent noise ``z`` (N, latent_dim): the inverse of sampling."""
        z, _ = self.network.transform(self.preprocess(showers, incident_energies), self.condition(incident_energies))
        return z

    # -- serialisation -----------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict[str, Any], geometry: Geometry, source: str = "<config>") -> FlowGenerator:
        """``latent_dim`` in the config is ignored: a flow's follows from the geometry."""
        return cls(geometry, energy_range_of(config, source), arch=cls.parse_architecture(config, source))
