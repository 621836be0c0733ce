"""Conditional Wasserstein GAN for calorimeter showers (CaloGAN / CaloChallenge-GAN tradition).

Generator: ``cat(z, c) -> [Linear -> (BatchNorm1d) -> LeakyReLU] x k -> Linear`` with
``1 + n_layers + n_voxels`` outputs; only layers hls4ml's PyTorch frontend converts
exactly, no reshapes, torch.fx traceable. The outputs are logits of a factorised
shower (CaloFlow-style energy bookkeeping), normalised in :meth:`GANGenerator.postprocess`:

* response ``r`` = total deposited energy / incident energy. With ``response_mode="calibrated"``
  (default) ``log r = m(c) + s(c) * y[0]``, where ``m`` and ``s`` are the mean and spread of
  ``log r`` in the training data, tabulated at ``n_calib`` knots in ``c`` and interpolated
  linearly (buffers fitted by :meth:`GANGenerator.calibrate`): the network then only has to
  produce a standardised, energy-independent number, and the energy resolution, which falls
  from 20 % to 0.2 % over the ds1 range, comes out right at every energy. With
  ``response_mode="sigmoid"``, ``r = response_scale * sigmoid(y[0])``. ``r`` is capped at
  ``response_scale``;
* ``f = softmax(y[1:1+L])``: fraction of the deposited energy in each layer;
* ``v_l = softmax(y[layer l voxels])``: voxel fractions within each layer;
* ``shower = E_inc * r * f[layer] * v``, voxels below ``threshold_mev`` set to 0;
* with ``alpha_symmetry`` each sampled shower is then turned to a random azimuthal orientation
  (whole-bin rotations, optionally mirrored; :func:`orientation_table`), drawn after the noise.
  A reference symmetric in alpha has the same distribution in every orientation, so the network
  only has to learn the shower up to its orientation: without it the GAN's centres of energy sat
  off-axis at low energy (EC_x layer 1 at 256 MeV: -6.8 mm, reference 0.0) and fluctuated too
  little. The permutation is outside the network, so compression and firmware see none of it.

So the total energy follows the incident energy by construction and the network only
has to learn dimensionless, O(1) quantities. The critic (:class:`Critic`) sees the
same factorised features of real and generated showers (``log r``, ``f``, ``sqrt v``,
standardised) plus ``c``; it is trained with the WGAN-GP objective (Gulrajani et al.
2017, used by BoloGAN / CaloShowerGAN in the CaloChallenge) and saved next to the
generator (``discriminator.safetensors``) so compressed generators can be fine-tuned
adversarially.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt
from torch import nn

from .._config import StrictModel
from ..showers.geometry import Geometry
from .base import DEFAULT_ENERGY_RANGE_MEV, ShowerGenerator, energy_range_of, knot_interp, latent_dim_of, register_generator

__all__ = ["HLS4ML_SAFE_MODULES", "Critic", "GANArchitecture", "GANGenerator", "GANNetwork", "ShapeBasis", "shower_features", "soft_threshold"]

#: Module types the GAN network may contain (hls4ml PyTorch frontend converts them exactly).
HLS4ML_SAFE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Sequential,
    nn.Linear,
    nn.BatchNorm1d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.ELU,
)

_EPS_MEV = 1e-6


def _threshold_(showers: torch.Tensor, threshold_mev: float) -> None:
    """In place: ``showers[showers < threshold_mev] = 0``, NaN kept (as ``torch.where(x < t, 0, x)``).

    ``torch.threshold_(x, t', 0)`` keeps ``x > t'``; with ``t'`` the float just below ``t`` (in the
    tensor's dtype) that is ``x >= t``, the same test, in one vectorised pass (``masked_fill_``
    with its boolean mask is 10x slower here when many voxels fall below). Only NaN differs
    (``threshold_`` zeroes it), so a block whose sum is not finite takes the exact masked path.
    """
    if not bool(torch.isfinite(showers.sum())):
        showers.masked_fill_(showers < threshold_mev, 0.0)
        return
    t = torch.tensor(threshold_mev, dtype=showers.dtype)
    below = float(torch.nextafter(t, torch.tensor(-math.inf, dtype=showers.dtype)))
    torch.threshold_(showers, below, 0.0)


class GANArchitecture(StrictModel):
    """``architecture`` of a ``"gan"`` bundle (see the module docstring for the meaning of each key)."""

    hidden: list[PositiveInt] = Field(default_factory=lambda: [256, 512], description="generator hidden widths")
    negative_slope: float = Field(0.2, ge=0, description="LeakyReLU slope (generator and critic)")
    batchnorm: bool = False
    response_scale: float = Field(2.0, gt=0, description="cap (calibrated) or scale (sigmoid) of the response r")
    threshold_mev: float = Field(0.0, ge=0, description="voxels below are set to 0 when sampling")
    critic_hidden: list[PositiveInt] = Field(default_factory=lambda: [512, 256])
    response_mode: Literal["calibrated", "sigmoid"] = "calibrated"
    n_calib: int = Field(15, ge=2, description="knots of the response tables m(c), s(c)")
    critic_features: Literal["basic", "shape"] = "basic"
    minibatch_std: bool = False
    alpha_symmetry: Literal["none", "rotate", "rotate_reflect"] = Field(
        "none",
        description=(
            "orient each sampled shower at random in the detector's azimuth (whole-bin rotations of "
            "every angular layer, and with rotate_reflect also the mirror image alpha -> -alpha); "
            "for references symmetric in alpha (an incident particle along the axis)"
        ),
    )


class GANNetwork(nn.Module):
    """``forward(z, c) = body(cat(z, c))``: an MLP of hls4ml-convertible layers."""

    def __init__(
        self, latent_dim: int, n_cond: int, hidden: list[int], n_out: int, negative_slope: float = 0.2, batchnorm: bool = False
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim + n_cond
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.LeakyReLU(negative_slope))
            width = h
        layers.append(nn.Linear(width, n_out))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([z, c], dim=1))


def _layer_onehot(geometry: Geometry) -> torch.Tensor:
    idx = torch.as_tensor(geometry.voxel_layer, dtype=torch.long)
    return torch.nn.functional.one_hot(idx, geometry.n_layers).to(torch.float32)


def orientation_table(geometry: Geometry, mode: str) -> torch.Tensor:
    """``(n_orient, V)`` voxel permutations of the azimuthal orientations of ``geometry``.

    Row ``o`` maps an output voxel to the input voxel it takes (``torch.gather`` along the voxel
    axis). The orientations are the whole-bin rotations common to every angular layer (multiples
    of ``2 pi / gcd(n_alpha)``) and, with ``mode="rotate_reflect"``, each followed by the mirror
    ``alpha -> -alpha`` (bin ``j`` <-> ``n_alpha - 1 - j``: the bins are symmetric about 0): the
    dihedral group of the binning. Layers with one angular bin keep their voxels. Refused
    (:class:`~simcompress.errors.ConfigError`) for Cartesian geometries and for geometries with no
    angular layer, where no azimuthal rotation maps the binning onto itself.
    """
    from ..errors import ConfigError

    if geometry.kind != "cylindrical":
        msg = f"alpha_symmetry: geometry {geometry.name!r} is {geometry.kind}; azimuthal orientation needs cylindrical layers (allowed there: none)"
        raise ConfigError(msg)
    angular = [lay.n_alpha for lay in geometry.layers if lay.n_alpha > 1]
    if not angular:
        msg = f"alpha_symmetry: geometry {geometry.name!r} has no layer with more than one angular bin (allowed there: none)"
        raise ConfigError(msg)
    n_rot = math.gcd(*angular)
    reflections = (False, True) if mode == "rotate_reflect" else (False,)
    rows = []
    for mirror in reflections:
        for k in range(n_rot):
            perm = torch.arange(geometry.n_voxels)
            for s, lay in zip(geometry.layer_slices, geometry.layers, strict=True):
                if lay.n_alpha == 1:
                    continue
                a = (torch.arange(lay.n_alpha) + k * (lay.n_alpha // n_rot)) % lay.n_alpha
                if mirror:
                    a = lay.n_alpha - 1 - a
                idx = (a[:, None] * lay.n_r + torch.arange(lay.n_r)[None, :]).reshape(-1)  # alpha-major voxels
                perm[s] = s.start + idx
            rows.append(perm)
    return torch.stack(rows)


def soft_threshold(showers: torch.Tensor, threshold_mev: float) -> torch.Tensor:
    """``E * sigmoid(ln(E / threshold) / w)`` per voxel, ``w = ln 10 / 10`` (a tenth of a decade,
    the width of :class:`ShapeBasis`'s soft sparsity); ``threshold_mev <= 0`` returns ``showers``.

    The differentiable stand-in for validation's hard voxel threshold: a voxel a decade above it
    keeps all but 5e-5 of its energy, one at the threshold half, one a decade below 5e-5 of it.
    """
    if threshold_mev <= 0:
        return showers
    w = math.log(10.0) / 10.0
    logr = torch.log(showers.clamp_min(1e-30)) - math.log(threshold_mev)
    return showers * torch.sigmoid(logr / w)


def shower_features(
    showers: torch.Tensor, e_mev: torch.Tensor, onehot: torch.Tensor, shape: ShapeBasis | None = None,
    threshold_mev: float = 0.0, sparsity_sharpness: float = 1.0,
) -> torch.Tensor:
    """Factorised features ``[log r, f (L), sqrt v (V)]`` of showers (differentiable).

    ``r`` = total / incident energy, ``f`` = layer fractions of the total, ``v`` = voxel
    fractions within their layer (0 for an empty layer). With ``shape`` the shower-shape
    block of :meth:`ShapeBasis.features` is appended. ``threshold_mev > 0``: every feature
    but the soft sparsity (itself a soft count above ``ShapeBasis.sparsity_mev``) is computed
    from :func:`soft_threshold`-ed showers, as validation computes them above its voxel threshold;
    a layer is then empty (``v`` about 0) when what survives the threshold is far below 1 % of it
    (the regulariser of the voxel fractions is ``0.01 * threshold_mev`` instead of 1e-6 MeV: the
    residue of sub-threshold voxels must not become the shape of a layer validation sees as empty).
    ``sparsity_sharpness``: see :meth:`ShapeBasis.features`.
    """
    raw = showers
    showers = soft_threshold(showers, threshold_mev)
    eps = max(_EPS_MEV, 0.01 * threshold_mev)
    layer_e = showers @ onehot  # (N, L)
    total = layer_e.sum(dim=1, keepdim=True)
    r = total / e_mev.unsqueeze(1)
    f = layer_e / (total + _EPS_MEV)
    v = showers / (layer_e @ onehot.T + eps)
    parts = [torch.log(r + 1e-6), f, torch.sqrt(v.clamp_min(0) + 1e-12)]
    if shape is not None:
        parts.append(shape.features(raw, v, sparsity_sharpness))
    return torch.cat(parts, dim=1)


class ShapeBasis(nn.Module):
    """Differentiable CaloChallenge shower-shape features, for the critic and the moment loss.

    Per layer: centre of energy and width in ``r`` (mm); for layers with angular bins also
    centre and width in ``x`` and ``y`` (CaloChallenge's eta and phi); and a soft sparsity,
    the fraction of voxels above ``sparsity_mev`` (a sigmoid in ``log E`` of width
    ``ln 10 / 10``, i.e. a tenth of a decade). These are the quantities a GAN that sees only
    voxel fractions gets wrong first (too narrow showers whose shape barely fluctuates), so the
    critic sees them directly. All computed from the voxel fractions ``v`` within each layer,
    without a threshold, the same way for reference and generated showers.
    """

    pos: torch.Tensor
    pos2: torch.Tensor
    pos_layer: torch.Tensor
    onehot: torch.Tensor

    def __init__(self, geometry: Geometry, sparsity_mev: float = 1.0) -> None:
        super().__init__()
        import numpy as np

        layer = np.asarray(geometry.voxel_layer)
        cols_pos: list[np.ndarray] = []  # (V,) position columns, one per (layer, coordinate)
        cols_layer: list[int] = []
        angular = [i for i, lay in enumerate(geometry.layers) if lay.n_alpha > 1]
        for i in range(geometry.n_layers):
            m = (layer == i).astype(np.float64)
            coords = [np.asarray(geometry.voxel_r)]
            if i in angular:
                coords += [np.asarray(geometry.voxel_x), np.asarray(geometry.voxel_y)]
            for c in coords:
                cols_pos.append(m * c)
                cols_layer.append(i)
        pos = torch.as_tensor(np.stack(cols_pos, axis=1), dtype=torch.float32)  # (V, K)
        self.register_buffer("pos", pos, persistent=False)
        self.register_buffer("pos2", pos * pos, persistent=False)
        self.register_buffer("pos_layer", torch.as_tensor(cols_layer, dtype=torch.long), persistent=False)
        self.register_buffer("onehot", _layer_onehot(geometry), persistent=False)
        self.log_thr = float(math.log(sparsity_mev))
        self.n_features = 2 * pos.shape[1] + geometry.n_layers

    def features(self, showers: torch.Tensor, v: torch.Tensor, sparsity_sharpness: float = 1.0) -> torch.Tensor:
        """``(N, 2K + L)``: centres (K), widths (K), soft sparsity per layer (L).

        ``sparsity_sharpness`` divides the soft sparsity's sigmoid width (a tenth of a decade at
        1): larger values approach the hard count validation makes, with gradients only near the
        threshold (a training option, ``GANTrainConfig.sparsity_sharpness``, for the training
        run's moment loss and critic; everything else uses 1).
        """
        v = v.clamp_min(0)
        m1 = v @ self.pos  # (N, K) energy-weighted mean position in each layer
        m2 = v @ self.pos2
        width = (m2 - m1 * m1).clamp_min(1e-6).sqrt()
        slope = float(sparsity_sharpness) * 10.0 / math.log(10.0)
        soft = torch.sigmoid((torch.log(showers.clamp_min(1e-12)) - self.log_thr) * slope)
        n_vox = self.onehot.sum(0)
        sparsity = (soft @ self.onehot) / n_vox
        return torch.cat([m1, width, sparsity], dim=1)


class Critic(nn.Module):
    """WGAN critic on standardised shower features and the condition.

    With ``minibatch_std`` the critic also sees, for each sample, the mean over features of the
    batch standard deviation of the standardised features (Karras et al. 2018): a generator
    whose showers barely differ from each other (mode collapse) is then visible in every
    sample the critic scores.
    """

    feat_mean: torch.Tensor
    feat_std: torch.Tensor

    def __init__(
        self, n_features: int, n_cond: int, hidden: list[int], negative_slope: float = 0.2, minibatch_std: bool = False
    ) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(n_features))
        self.register_buffer("feat_std", torch.ones(n_features))
        self.minibatch_std = bool(minibatch_std)
        layers: list[nn.Module] = []
        width = n_features + n_cond + int(self.minibatch_std)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.body = nn.Sequential(*layers)
        self.hidden = list(hidden)
        self.negative_slope = negative_slope

    def set_standardisation(self, features: torch.Tensor) -> None:
        self.feat_mean.copy_(features.mean(0))
        self.feat_std.copy_(features.std(0).clamp_min(1e-3))

    def body_input(self, features: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """What the critic's first layer sees: standardised features, condition (, minibatch std)."""
        x = (features - self.feat_mean) / self.feat_std
        parts = [x, c]
        if self.minibatch_std:
            sd = x.std(dim=0, keepdim=True).mean(dim=1, keepdim=True) if x.shape[0] > 1 else x.new_zeros(1, 1)
            parts.append(sd.expand(x.shape[0], 1))
        return torch.cat(parts, dim=1)

    def forward(self, features: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.body(self.body_input(features, c)).squeeze(1)


@register_generator
class GANGenerator(ShowerGenerator):
    """Conditional WGAN-GP shower generator (see module docstring).

    Example:
        >>> from simcompress.showers import Geometry
        >>> g = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=8, hidden=[16])
        >>> g.sample(torch.tensor([1000.0, 65536.0]), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 368])
    """

    kind = "gan"
    Architecture = GANArchitecture
    arch: GANArchitecture
    onehot: torch.Tensor
    resp_mean: torch.Tensor
    resp_std: torch.Tensor
    orient_perm: torch.Tensor
    _critic: Critic
    _shape: ShapeBasis | None

    def __init__(
        self,
        geometry: Geometry,
        latent_dim: int = 64,
        energy_range_mev: tuple[float, float] = DEFAULT_ENERGY_RANGE_MEV,
        *,
        arch: GANArchitecture | None = None,
        **fields: Any,
    ) -> None:
        """``arch``, or its fields as keywords (``hidden=[16]``): :class:`GANArchitecture`."""
        super().__init__(geometry, latent_dim, energy_range_mev)
        a: GANArchitecture = self.make_architecture(arch, fields)
        self.arch = a
        self.critic_features = a.critic_features
        self.minibatch_std = a.minibatch_std
        self.response_mode = a.response_mode
        self.n_calib = a.n_calib
        if a.response_mode == "calibrated":
            self.register_buffer("resp_mean", torch.zeros(self.n_calib))
            self.register_buffer("resp_std", torch.full((self.n_calib,), 0.1))
        self.hidden = list(a.hidden)
        self.negative_slope = a.negative_slope
        self.batchnorm = a.batchnorm
        self.response_scale = a.response_scale
        self.threshold_mev = a.threshold_mev
        self.critic_hidden = list(a.critic_hidden)
        n_l, n_v = geometry.n_layers, geometry.n_voxels
        self.network = GANNetwork(self.latent_dim, self.n_cond, self.hidden, 1 + n_l + n_v, self.negative_slope, self.batchnorm)
        self.register_buffer("onehot", _layer_onehot(geometry), persistent=False)
        self.alpha_symmetry = a.alpha_symmetry
        if a.alpha_symmetry != "none":
            self.register_buffer("orient_perm", orientation_table(geometry, a.alpha_symmetry), persistent=False)
        # the shape basis and the critic are deliberately NOT registered submodules: compression
        # and firmware must not see them (they are training-time only)
        shape = ShapeBasis(geometry) if a.critic_features == "shape" else None
        object.__setattr__(self, "_shape", shape)
        n_feat = 1 + n_l + n_v + (shape.n_features if shape is not None else 0)
        object.__setattr__(
            self, "_critic", Critic(n_feat, self.n_cond, self.critic_hidden, self.negative_slope, minibatch_std=self.minibatch_std)
        )

    @property
    def critic(self) -> Critic:
        return self._critic

    @torch.no_grad()
    def calibrate(self, showers: torch.Tensor, incident_energies: torch.Tensor) -> None:
        """Fit the response tables ``m(c)``, ``s(c)`` (mean and std of ``log r``) to reference showers."""
        if self.response_mode != "calibrated":
            return
        c = self.condition(incident_energies).reshape(-1)
        log_r = torch.log(showers.sum(1).double() / incident_energies.double()).clamp_min(-20)
        k = torch.round((c.clamp(-1, 1) + 1) / 2 * (self.n_calib - 1)).long()
        n = torch.bincount(k, minlength=self.n_calib).double()
        s1 = torch.zeros(self.n_calib, dtype=torch.float64).index_add_(0, k, log_r)
        s2 = torch.zeros(self.n_calib, dtype=torch.float64).index_add_(0, k, log_r * log_r)
        ok = n > 1
        if not ok.any():
            msg = "calibrate: need at least 2 showers in one energy bin"
            raise ValueError(msg)
        mean = s1 / n.clamp_min(1)
        std = (s2 / n.clamp_min(1) - mean**2).clamp_min(0).sqrt().clamp_min(1e-4)
        knots = torch.arange(self.n_calib, dtype=torch.float64)
        # bins without data: linear interpolation (constant outside) between the filled ones
        import numpy as np

        kx = knots[ok].numpy()
        self.resp_mean.copy_(torch.from_numpy(np.interp(knots.numpy(), kx, mean[ok].numpy())))
        self.resp_std.copy_(torch.from_numpy(np.interp(knots.numpy(), kx, std[ok].numpy())))

    @torch.no_grad()
    def recalibrate_response(
        self,
        showers: torch.Tensor,
        incident_energies: torch.Tensor,
        generator: torch.Generator | None = None,
        iterations: int = 2,
        batch_size: int = 10_000,
    ) -> dict[str, Any]:
        """After training: shift the response table ``m(c)`` so that the generated mean response
        ``<E_dep / E_inc>`` equals the reference's at every knot that has reference showers.

        Training leaves a per-energy bias of the mean response of a few per cent at low energy
        (there the resolution is 20 % and the moment loss cheap to miss); each iteration samples at
        the reference's energies and subtracts ``log(<r_gen> / <r_ref>)`` per knot (showers assigned
        to their nearest knot, as :meth:`calibrate`). The widths ``s(c)`` and the network are left
        as they are. Returns the per-knot deviations in per cent before and after (None at knots
        without reference showers), and the knot energies.
        """
        if self.response_mode != "calibrated":
            msg = "recalibrate_response: needs response_mode='calibrated'"
            raise ValueError(msg)
        if iterations < 1:
            msg = f"recalibrate_response: iterations must be >= 1, got {iterations}"
            raise ValueError(msg)
        e = torch.as_tensor(incident_energies, dtype=torch.float32).reshape(-1)
        k = torch.round((self.condition(e).reshape(-1).clamp(-1, 1) + 1) / 2 * (self.n_calib - 1)).long().cpu()
        n = torch.bincount(k, minlength=self.n_calib).double()
        ok = n > 0

        def knot_mean(x: torch.Tensor) -> torch.Tensor:
            r = x.double().sum(1).cpu() / e.double()
            return torch.zeros(self.n_calib, dtype=torch.float64).index_add_(0, k, r) / n.clamp_min(1)

        ref = knot_mean(torch.as_tensor(showers))
        state = generator.get_state() if generator is not None else None
        devs = []
        for _ in range(iterations + 1):
            if generator is not None and state is not None:
                generator.set_state(state)  # the same noise each iteration: the shift, not the noise, changes
            gen_mean = knot_mean(self.sample(e, generator, batch_size, check_range=False))
            devs.append(torch.where(ok, 100 * (gen_mean / ref - 1), torch.nan))
            if len(devs) <= iterations:
                shift = torch.where(ok, torch.log(gen_mean / ref), torch.zeros_like(ref))
                self.resp_mean.sub_(shift.to(self.resp_mean))
        lo, hi = self.energy_range_mev
        knots_mev = [round(lo * (hi / lo) ** (i / (self.n_calib - 1)), 3) for i in range(self.n_calib)]  # EnergyCondition's knots
        return {
            "knots_with_data": int(ok.sum()),
            "knot_energies_mev": knots_mev,
            "mean_response_dev_pct_before": [round(float(v), 4) if has else None for v, has in zip(devs[0], ok, strict=True)],
            "mean_response_dev_pct_after": [round(float(v), 4) if has else None for v, has in zip(devs[-1], ok, strict=True)],
            "iterations": iterations,
        }

    def parts(
        self, y: torch.Tensor, c: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Network output -> (response r (N,), layer fractions (N, L), voxel-in-layer fractions (N, V)).

        ``c`` (the condition) is needed for ``response_mode="calibrated"``.
        """
        n_l = self.geometry.n_layers
        if self.response_mode == "calibrated" and c is None:
            msg = "parts: the condition c is needed with response_mode='calibrated'"
            raise ValueError(msg)
        r, f = self._response_and_fractions(y, c if c is not None else y[:, :0])
        vy = y[:, 1 + n_l :]
        v = torch.cat([torch.softmax(vy[:, s], dim=1) for s in self.geometry.layer_slices], dim=1)
        return r, f, v

    def sample_extras(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """With ``alpha_symmetry``: ``{"orient": (n,) int}``, a uniform draw of the orientations of
        :func:`orientation_table` (drawn after the noise, from the same generator); else ``{}``."""
        if self.alpha_symmetry == "none":
            return {}
        dev = generator.device if generator is not None else self.device
        n_orient = int(self.orient_perm.shape[0])
        return {"orient": torch.randint(0, n_orient, (n,), generator=generator, device=dev).to(self.device)}

    def orient(self, showers: torch.Tensor, orient: torch.Tensor) -> torch.Tensor:
        """Showers turned to orientations ``orient`` (rows of :func:`orientation_table`); differentiable."""
        return torch.gather(showers, 1, self.orient_perm[orient])

    def postprocess(
        self, y: torch.Tensor, incident_energies: torch.Tensor, threshold: bool = True, orient: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Network output -> showers in MeV: ``E r f[layer] v``, voxels below ``threshold_mev`` set to 0.

        ``orient`` (from :meth:`sample_extras`; only with ``alpha_symmetry``) turns each shower to
        its drawn azimuthal orientation; without it the network's own orientation is kept (what
        distillation and firmware comparisons want: the same noise gives the same shower).

        Without autograd (sampling) this runs :meth:`_postprocess_fast`, which computes the same
        values bit for bit with fewer passes over the (N, V) block; with autograd (training,
        distillation) the differentiable composition of :meth:`parts`.
        """
        if orient is not None and self.alpha_symmetry == "none":
            msg = "postprocess: orient given, but this GAN has alpha_symmetry='none'"
            raise ValueError(msg)
        if not (torch.is_grad_enabled() and (y.requires_grad or incident_energies.requires_grad)):
            out = self._postprocess_fast(y, incident_energies, threshold)
            return out if orient is None else self.orient(out, orient)
        r, f, v = self.parts(y, self.condition(incident_energies))
        showers = (incident_energies * r).unsqueeze(1) * (f @ self.onehot.T) * v
        if threshold and self.threshold_mev > 0:
            showers = torch.where(showers < self.threshold_mev, torch.zeros_like(showers), showers)
        return showers if orient is None else self.orient(showers, orient)

    def _postprocess_fast(self, y: torch.Tensor, incident_energies: torch.Tensor, threshold: bool) -> torch.Tensor:
        """:meth:`postprocess` without autograd, bitwise the same values.

        Written by hand (no library fuses a per-segment softmax with a per-row scale): the
        general path builds ``f @ onehot.T`` (N, V), two full products and a ``torch.where``
        with its mask and zeros, each a fresh (N, V) tensor; the fused ``torch.compile`` kernel
        would need a C++ compiler at run time and reorders the arithmetic. Here each layer's
        voxel softmax is scaled by its per-row factor ``E r f_l`` straight into the output
        (the same two roundings, ``(E r f_l) * v``, as the general path, since the one-hot
        product picks ``f_l`` exactly), and the threshold is one in-place pass.
        """
        n_l = self.geometry.n_layers
        r, f = self._response_and_fractions(y, self.condition(incident_energies))
        col = (incident_energies * r).unsqueeze(1) * f  # (N, L): E r f_l, rounded as in the general path
        out = torch.empty(y.shape[0], self.geometry.n_voxels, dtype=col.dtype, device=y.device)
        off = 1 + n_l
        for i, s in enumerate(self.geometry.layer_slices):
            v = torch.softmax(y[:, off + s.start : off + s.stop], dim=1)
            torch.mul(col[:, i : i + 1], v, out=out[:, s])
        if threshold and self.threshold_mev > 0:
            _threshold_(out, self.threshold_mev)
        return out

    def _response_and_fractions(self, y: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Response ``r`` (N,) and layer fractions ``f`` (N, L): the first two parts of :meth:`parts`."""
        n_l = self.geometry.n_layers
        if self.response_mode == "calibrated":
            log_r = knot_interp(c, self.resp_mean) + knot_interp(c, self.resp_std) * y[:, 0].clamp(-10, 10)
            r = torch.exp(log_r).clamp_max(self.response_scale)
        else:
            r = self.response_scale * torch.sigmoid(y[:, 0])
        return r, torch.softmax(y[:, 1 : 1 + n_l], dim=1)

    @property
    def shape_basis(self) -> ShapeBasis | None:
        return self._shape

    def moment_columns(self) -> list[int]:
        """Columns of :meth:`features` the per-energy moment loss matches: ``log r``, the layer
        fractions and, with ``critic_features="shape"``, the shower-shape block."""
        n_l, n_v = self.geometry.n_layers, self.geometry.n_voxels
        cols = list(range(1 + n_l))
        if self._shape is not None:
            start = 1 + n_l + n_v
            cols += list(range(start, start + self._shape.n_features))
        return cols

    def features(
        self, showers: torch.Tensor, incident_energies: torch.Tensor, threshold_mev: float = 0.0, sparsity_sharpness: float = 1.0
    ) -> torch.Tensor:
        """:func:`shower_features` with this GAN's layers and shape block (the two options: see there)."""
        return shower_features(showers, incident_energies, self.onehot, self._shape, threshold_mev, sparsity_sharpness)

    @classmethod
    def parse_architecture(cls, config: dict[str, Any], source: str = "<config>") -> GANArchitecture:
        a = config.get("architecture")
        if isinstance(a, dict):
            a = {"response_mode": "sigmoid", **a}  # bundles written before the key existed
        arch: GANArchitecture = super().parse_architecture({"architecture": a}, source)
        return arch

    @classmethod
    def from_config(cls, config: dict[str, Any], geometry: Geometry, source: str = "<config>") -> GANGenerator:
        arch = cls.parse_architecture(config, source)
        return cls(geometry, latent_dim_of(config, source), energy_range_of(config, source), arch=arch)

    def to(self, *args: Any, **kwargs: Any) -> GANGenerator:  # keep the critic with the generator
        out = super().to(*args, **kwargs)
        self.critic.to(*args, **kwargs)
        if self._shape is not None:
            self._shape.to(*args, **kwargs)
        return out
