"""Teacher-student distillation of shower generators (issue 6).

Methods (compression steps that join :mod:`simcompress.compress`'s registry through the
``simcompress.methods`` entry-point group, so ``compress`` never imports this package;
see :mod:`.methods`):

* ``distill_flow_iaf``: MAF teacher -> IAF student (probability density distillation, CaloFlow II);
* ``distill_mlp``: any generator -> feed-forward MLP student (the route from a flow to firmware);
* ``distill_gan``: GAN -> GAN with at most ``max_param_fraction`` of the teacher's parameters.

Students are ordinary generator kinds (``"iaf"``, ``"mlp"``; the small GAN is a ``"gan"``), so
they save and load as plain bundles.
"""

from __future__ import annotations

from .config import (
    FlowToIAFConfig,
    GANToGANConfig,
    IAFArchitecture,
    MLPArchitecture,
    PhysicsLossWeights,
    ToMLPConfig,
    TrainingConfig,
)
from .methods import distill_flow_iaf, distill_gan, distill_mlp
from .speed import compare_sampling_speed, sampling_rate

__all__ = [
    "FlowToIAFConfig",
    "GANToGANConfig",
    "IAFArchitecture",
    "MLPArchitecture",
    "PhysicsLossWeights",
    "ToMLPConfig",
    "TrainingConfig",
    "compare_sampling_speed",
    "distill_flow_iaf",
    "distill_gan",
    "distill_mlp",
    "sampling_rate",
]
