"""Training recipes of the generators (typed, YAML): one per trainable kind.

A recipe's ``model`` section *is* the kind's bundle architecture
(:class:`~simcompress.generators.gan.GANArchitecture`,
:class:`~simcompress.generators.flow.FlowArchitecture`; the GAN's adds ``latent_dim``), so
its keys, defaults and bounds are written once.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, model_validator

from .._config import StrictModel, load_yaml, parse_config
from ..errors import ConfigError
from ..showers.geometry import Geometry
from .base import DEFAULT_ENERGY_RANGE_MEV, ShowerGenerator
from .flow import FlowArchitecture, FlowGenerator
from .gan import GANArchitecture, GANGenerator

__all__ = [
    "FlowModelConfig",
    "FlowTrainConfig",
    "GANModelConfig",
    "GANTrainConfig",
    "TrainConfig",
    "build_from_config",
    "load_train_config",
]


class GANModelConfig(GANArchitecture):
    """A GAN recipe's ``model``: the bundle architecture plus the noise width."""

    latent_dim: int = Field(64, ge=1)


class FlowModelConfig(FlowArchitecture):
    """A flow recipe's ``model``: the bundle architecture."""


class _TrainCommon(StrictModel):
    geometry: str = "ds1-photons"
    energy_range_mev: tuple[float, float] = DEFAULT_ENERGY_RANGE_MEV
    steps: int = Field(2000, ge=0, description="optimiser steps; 0 only with init_from (post-training steps alone, e.g. recalibrate_response)")
    batch_size: int = Field(256, ge=2)
    seed: int = 0
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    monitor_events: int = Field(2000, ge=100)
    monitor_every: int = Field(500, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    threads: int = Field(1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    final_lr_fraction: float = Field(0.1, gt=0, le=1.0)
    init_from: str | None = Field(
        None,
        description=(
            "warm start: a bundle (zoo name or folder) whose weights, buffers and (GAN) critic the run "
            "starts from instead of random ones; its architecture must give the same tensors as `model` "
            "(keys that only change sampling, e.g. alpha_symmetry, may differ); its data-fitted tables "
            "are kept, not refitted"
        ),
    )

    @model_validator(mode="after")
    def _steps_need_a_start(self) -> _TrainCommon:
        if self.steps == 0 and self.init_from is None:
            msg = "steps: 0 needs init_from (a run without steps only applies the post-training steps to a trained bundle)"
            raise ValueError(msg)
        return self


class GANTrainConfig(_TrainCommon):
    kind: Literal["gan"] = "gan"
    model: GANModelConfig = Field(default_factory=GANModelConfig)
    n_critic: int = Field(5, ge=1)
    lr_generator: float = Field(1e-4, gt=0)
    lr_critic: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.9)
    gp_weight: float = Field(10.0, ge=0)
    moment_weight: float = Field(1.0, ge=0)
    moment_bins: int = Field(15, ge=1)
    moment_quantiles: int = Field(
        0, ge=0, le=64, description="per energy bin, also match the reference's quantiles at this many levels (0: mean and spread only)"
    )
    adversarial_weight: float = Field(
        1.0, ge=0, description="weight of the critic's term in the generator loss; 0: moment matching only, no critic steps"
    )
    feature_threshold_mev: float = Field(
        0.0,
        ge=0,
        description=(
            "the moment loss and the critic see every shower (reference and generated alike) with each voxel E "
            "weighted by sigmoid(ln(E / threshold) / (ln 10 / 10)), a soft voxel threshold, so that training "
            "matches the features validation measures above its voxel threshold (1 MeV for ds1); 0: no threshold"
        ),
    )
    sparsity_sharpness: float = Field(
        1.0,
        ge=1.0,
        le=20.0,
        description=(
            "the moment loss's soft sparsity with its sigmoid this many times narrower than the tenth of a decade the "
            "critic uses: closer to validation's hard count of voxels above threshold, gradients only near it"
        ),
    )
    recalibrate_response: bool = Field(
        False, description="after training, GANGenerator.recalibrate_response on the training showers (recorded in the card)"
    )

    @model_validator(mode="after")
    def _some_loss(self) -> GANTrainConfig:
        if self.adversarial_weight == 0 and self.moment_weight == 0:
            msg = "adversarial_weight and moment_weight are both 0: the generator would have no loss"
            raise ValueError(msg)
        return self

    def build(self, geometry: Geometry) -> GANGenerator:
        arch = GANArchitecture.model_validate(self.model.model_dump(exclude={"latent_dim"}))
        return GANGenerator(geometry, self.model.latent_dim, self.energy_range_mev, arch=arch)


class FlowTrainConfig(_TrainCommon):
    kind: Literal["flow"] = "flow"
    model: FlowModelConfig = Field(default_factory=FlowModelConfig)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    recalibrate_response: bool = Field(
        False,
        description=(
            "after training, FlowGenerator.recalibrate_response on the training showers (per energy knot, the "
            "generated response's mean and width mapped onto theirs; recorded in the card); needs standardise: energy"
        ),
    )

    @model_validator(mode="after")
    def _recalibration_needs_table(self) -> FlowTrainConfig:
        if self.recalibrate_response and self.model.standardise != "energy":
            msg = "recalibrate_response needs model.standardise: energy (the per-energy table it corrects)"
            raise ValueError(msg)
        return self

    def build(self, geometry: Geometry) -> FlowGenerator:
        return FlowGenerator(geometry, self.energy_range_mev, arch=FlowArchitecture.model_validate(self.model.model_dump()))


TrainConfig = GANTrainConfig | FlowTrainConfig
_CONFIGS: dict[str, type[GANTrainConfig | FlowTrainConfig]] = {"gan": GANTrainConfig, "flow": FlowTrainConfig}


def load_train_config(kind: str, path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a training recipe (YAML) for ``kind`` (``"gan"`` or ``"flow"``)."""
    if kind not in _CONFIGS:
        msg = f"unknown generator kind {kind!r}; allowed: {', '.join(sorted(_CONFIGS))}"
        raise ConfigError(msg)
    cls = _CONFIGS[kind]
    if path is None:
        cfg = parse_config(cls, {}, "<defaults>")
    else:
        cfg = load_yaml(cls, path)
        if cfg.kind != kind:
            msg = f"{path}: kind: recipe is for {cfg.kind!r}, not {kind!r}"
            raise ConfigError(msg)
    if overrides:
        cfg = parse_config(cls, {**cfg.model_dump(), **overrides}, str(path or "<defaults>"))
    return cfg


def build_from_config(cfg: TrainConfig) -> ShowerGenerator:
    """The untrained generator a recipe describes (its ``model`` is the kind's architecture)."""
    return cfg.build(Geometry.from_name(cfg.geometry))
