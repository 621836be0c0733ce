"""Typed configs of the distillation methods (pydantic, unknown keys rejected)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .._config import StrictModel
from ..compress.base import MethodConfig

__all__ = [
    "ALL_ACTIVATIONS",
    "FIRMWARE_ACTIVATIONS",
    "FlowToIAFConfig",
    "GANToGANConfig",
    "IAFArchitecture",
    "MLPArchitecture",
    "PhysicsLossWeights",
    "ToMLPConfig",
    "TrainingConfig",
]

#: activations the hls4ml PyTorch frontend converts correctly (see shared/reference/firmware.md).
FIRMWARE_ACTIVATIONS = ("relu", "leaky_relu")
#: activations a non-firmware student may use.
ALL_ACTIVATIONS = ("relu", "leaky_relu", "elu", "tanh", "silu", "gelu", "softplus")


class TrainingConfig(StrictModel):
    """The optimisation loop shared by every distillation method."""

    steps: int = Field(2000, ge=1, description="optimizer steps")
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    lr_final_fraction: float = Field(0.05, gt=0, le=1, description="cosine decay to lr * this")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    seed: int = 0
    pool_size: int = Field(8192, ge=16, description="teacher samples (same noise) generated once and reused")
    pool_batch_size: int = Field(2048, ge=1, description="batch size used to draw the teacher pool")
    checkpoint_dir: str | None = Field(None, description="resumable checkpoints (safetensors + JSON); None: none")
    checkpoint_every: int = Field(250, ge=1)
    threads: int | None = Field(1, ge=1, description="torch threads during training (None: leave as is)")
    progress: bool = True


class MLPArchitecture(StrictModel):
    """Feed-forward student ``network(z, c) = MLP(cat(z, c))``."""

    width: int = Field(256, ge=1)
    depth: int = Field(3, ge=1, description="hidden layers")
    activation: Literal["relu", "leaky_relu", "elu", "tanh", "silu", "gelu", "softplus"] = "leaky_relu"
    negative_slope: float = Field(0.2, ge=0, lt=1)
    batchnorm: bool = False


class IAFArchitecture(StrictModel):
    """Inverse autoregressive student; ``steps=None`` copies the teacher's number of steps."""

    steps: int | None = Field(None, ge=1)
    hidden: int = Field(256, ge=2)
    depth: int = Field(1, ge=1, description="hidden layers per MADE")
    init: Literal["identity", "teacher"] = Field(
        "identity", description="identity: zero last layers; teacher: copy MADE weights when shapes match"
    )
    transform: Literal["affine", "rqs"] = Field(
        "affine", description="the student's block transform; rqs: monotonic splines (needed to follow a spline teacher)"
    )
    n_bins: int | None = Field(None, ge=2, le=64, description="spline bins of an rqs student (None: the teacher's)")


class PhysicsLossWeights(StrictModel):
    """Weights of the physics terms (energies as fractions of the incident energy)."""

    total_energy: float = Field(1.0, ge=0)
    layer_energies: float = Field(1.0, ge=0)


class _DistillBase(MethodConfig):
    training: TrainingConfig = TrainingConfig()
    speed_batch_sizes: tuple[int, ...] = Field((1, 100, 10000), description="batch sizes of the speed-up measurement")
    speed_min_seconds: float = Field(0.5, ge=0, description="time each rate is measured over (at least one batch)")
    energy_sampling: Literal["log-uniform", "teacher-range-discrete"] = Field(
        "log-uniform", description="incident energies of the teacher pool within the teacher's energy range"
    )
    discrete_energies_mev: tuple[float, ...] | None = Field(
        None, description="draw pool energies uniformly from these values (e.g. the 15 ds1 energies)"
    )


class FlowToIAFConfig(_DistillBase):
    """Probability density distillation of a MAF teacher into an IAF student (CaloFlow II).

    Loss = ``w_z * mean_k D(h_k^student, h_k^teacher)`` on teacher pairs (data -> z)
    + ``w_x * mean_k D(...)`` on student samples (noise -> x) + ``w_kl * reverse KL``, where
    ``D`` is a Huber (default) or squared distance of the differences divided, per coordinate
    and per state, by the teacher's robust spread (1.4826 MAD over the pool): a flow's
    standardised coordinates can have rare samples at |y| ~ 1e5 (coordinates whose training
    spread was tiny), which would otherwise dominate a plain MSE and blow the training up.
    """

    method: ClassVar[str] = "distill_flow_iaf"
    student: IAFArchitecture = IAFArchitecture()
    weight_latent_pass: float = Field(1.0, ge=0, description="teacher pool x -> teacher z -> student x, all steps")
    weight_data_pass: float = Field(1.0, ge=0, description="noise z -> student x -> teacher z, all steps")
    intermediate: bool = Field(True, description="match every intermediate flow state, not only the ends")
    weight_reverse_kl: float = Field(0.0, ge=0, description="E_student[log q - log p_teacher] per dimension")
    state_loss: Literal["huber", "mse"] = Field(
        "huber", description="per-coordinate loss on state differences scaled by the teacher's robust spread"
    )
    huber_delta: float = Field(1.0, gt=0, description="Huber transition (in units of the robust spread)")
    outlier_clip: float | None = Field(
        30.0,
        gt=0,
        description="latent pass: ignore teacher-state coordinates farther than this many robust spreads from the median",
    )

    @model_validator(mode="after")
    def _some_loss(self) -> FlowToIAFConfig:
        if self.weight_latent_pass == 0 and self.weight_data_pass == 0 and self.weight_reverse_kl == 0:
            msg = "at least one of weight_latent_pass, weight_data_pass, weight_reverse_kl must be > 0"
            raise ValueError(msg)
        return self


class ToMLPConfig(_DistillBase):
    """Any generator to a feed-forward student by same-noise regression plus physics terms.

    ``firmware: true`` restricts the student to hls4ml-convertible layers and refuses anything else.
    """

    method: ClassVar[str] = "distill_mlp"
    student: MLPArchitecture = MLPArchitecture()
    firmware: bool = True
    weight_voxels: float = Field(1.0, ge=0, description="MSE of standardized log voxel fractions")
    physics: PhysicsLossWeights = PhysicsLossWeights()
    shape_features: float = Field(
        0.0,
        ge=0,
        description="same-noise match of each layer's energy-weighted centres and widths (x, y, r), "
        "standardised by the teacher pool's spread",
    )
    shape_mmd: float = Field(
        0.0,
        ge=0,
        description="distribution-level term: MMD between the batch's standardised centres, widths and layer "
        "fractions and the teacher's (Gaussian kernels, bandwidths 0.5-4 spreads)",
    )
    log_offset: float = Field(1e-6, gt=0, description="u = log(E_voxel / E_inc + log_offset)")

    @model_validator(mode="after")
    def _firmware_layers(self) -> ToMLPConfig:
        # refused at build time with UnsupportedLayerError too; here it is a config error with the key named
        if self.firmware and self.student.activation not in FIRMWARE_ACTIVATIONS:
            msg = (
                f"student.activation {self.student.activation!r} is not hls4ml-convertible; "
                f"a firmware recipe allows {', '.join(FIRMWARE_ACTIVATIONS)}"
            )
            raise ValueError(
                msg
            )
        return self


class GANToGANConfig(_DistillBase):
    """GAN teacher to a smaller GAN: same-noise output matching + discriminator feature matching,
    then optional adversarial fine-tuning against reference showers (teacher's discriminator as start)."""

    method: ClassVar[str] = "distill_gan"
    student: MLPArchitecture = MLPArchitecture(width=64, depth=3)
    firmware: bool = True
    max_param_fraction: float = Field(0.25, gt=0, le=1, description="student params <= this * teacher params")
    weight_output: float = Field(1.0, ge=0, description="MSE of network outputs for the same (z, c)")
    weight_features: float = Field(1.0, ge=0, description="MSE of teacher-discriminator features")
    physics: PhysicsLossWeights = PhysicsLossWeights()
    weight_shape: float = Field(
        0.0,
        ge=0,
        description="same-noise MSE on the summary columns of the features (log total, layer fractions, shape "
        "block: centres, widths, soft sparsity), standardised; the output term weighs them as 1 of ~400 columns each",
    )
    feature_threshold_mev: float = Field(
        0.0,
        ge=0,
        description="compute the distillation's features above this soft voxel threshold, as validation does "
        "above its threshold (1 MeV for ds1); 0: raw showers",
    )
    sparsity_sharpness: float = Field(
        1.0, gt=0, description="sharpness of the features' soft sparsity (1: a tenth of a decade; larger: nearer the hard count)"
    )
    feature_mmd: float = Field(
        0.0,
        ge=0,
        description="distribution-level term: MMD between the batch's standardised critic features (log total, "
        "layer fractions, shape block) and the teacher's at the same incident energies (Gaussian kernels, "
        "bandwidths 0.5-4 spreads)",
    )
    adversarial_steps: int = Field(
        0, ge=0, description="adversarial fine-tuning steps (with adversarial_real 'reference': need reference showers)"
    )
    adversarial_lr: float = Field(1e-4, gt=0)
    adversarial_distill_weight: float = Field(1.0, ge=0, description="keep the distillation loss during fine-tuning")
    adversarial_real: Literal["reference", "teacher"] = Field(
        "reference",
        description="what the critic of the adversarial phase sees as real: reference showers (the student is "
        "pulled toward the reference) or the teacher's own pool showers (toward the teacher; no reference needed)",
    )
    latent_dim: int | None = Field(
        None,
        ge=1,
        description=(
            "the student's noise width: it reads the first latent_dim coordinates of the teacher's noise "
            "(same-noise matching on those; None: the teacher's whole latent). A firmware student uses it to "
            "make its first layer smaller and its input count one that hls4ml's reuse-factor rule divides"
        ),
    )

    @model_validator(mode="after")
    def _firmware_layers(self) -> GANToGANConfig:
        if self.firmware and self.student.activation not in FIRMWARE_ACTIVATIONS:
            msg = (
                f"student.activation {self.student.activation!r} is not hls4ml-convertible; "
                f"a firmware recipe allows {', '.join(FIRMWARE_ACTIVATIONS)}"
            )
            raise ValueError(
                msg
            )
        return self
