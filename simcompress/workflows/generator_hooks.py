"""The callables that the generic compression pipeline takes, made for shower generators.

``compress`` works on any torch model and receives its calibration data and its fine-tuning as
injected callables (``calibration=``, ``Pipeline(finetune=...)``); these build them from a
:class:`~simcompress.generators.base.ShowerGenerator`. Fine-tuning is knowledge distillation
toward the uncompressed generator (the teacher; the default) or the generators' own training
step on the reference (GAN: adversarial with the bundle's critic;
flow: maximum likelihood).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

__all__ = ["FINETUNE_OBJECTIVES", "generator_calibration", "generator_finetune"]


def generator_calibration(gen: Any, energies: Any, seed: int) -> Callable[[Any], Any]:
    """Calibration callable: the generator's network on seeded noise at ``energies`` (MeV).

    A step's model with a narrower latent (a ``distill_gan`` student with ``latent_dim``) gets the
    first coordinates of the same noise, as in its distillation.
    """
    import torch

    z = torch.randn(len(energies), int(gen.latent_dim), generator=torch.Generator().manual_seed(seed))
    e = torch.as_tensor(energies, dtype=torch.float32)

    def run(m: Any) -> Any:
        return m.network(z[:, : int(m.latent_dim)], m.condition(e))

    return run


#: what :func:`generator_finetune` trains toward
FINETUNE_OBJECTIVES = ("teacher", "reference")


def generator_finetune(
    gen: Any, data: Any, seed: int, n_teacher: int = 4096, *, objective: str = "teacher", batch_size: int = 512,
) -> Callable[[Any, int, float], Any]:
    """Trainer ``(model, steps, lr)`` for the pipeline's fine-tuning and the training methods (QAT, ...).

    ``objective="teacher"`` (default): knowledge distillation toward ``gen``, the uncompressed
    teacher (:func:`simcompress.generators.train.finetune_to_teacher`: student and teacher on the
    same noise and condition, incident energies drawn from ``data``'s when given). Compression is
    judged by its damage against the teacher, and this objective reduces exactly that.
    ``objective="reference"``: the generators' own training objective on ``data``, the reference
    showers (GAN: WGAN-GP with the bundle's critic plus per-energy moments; flow: maximum
    likelihood), or with no reference ``n_teacher`` showers sampled from ``gen``. On the shipped
    GAN this moves the student toward the reference, i.e. away from a teacher that differs from
    it: separation power against the teacher 0.3-0.9 where the gate allows ~0.01 (2026-12-02).
    Each call of the trainer gets its own seed (``seed + call``), so a run is reproducible.
    """
    import numpy as np
    import torch

    from ..generators.train import copy_generator, finetune, finetune_to_teacher

    if objective not in FINETUNE_OBJECTIVES:
        msg = f"generator_finetune: unknown objective {objective!r}; known: {', '.join(FINETUNE_OBJECTIVES)}"
        raise ConfigError(msg)
    held = {"data": data}
    calls = {"n": 0}
    teacher = copy_generator(gen).eval() if objective == "teacher" else None  # frozen: the pipeline never trains it
    energies = None if data is None else np.asarray(data.incident_energy, dtype=np.float32)

    def training_data() -> Any:
        if held["data"] is None:  # sampled once, on first use
            from ..showers.data import ShowerSet

            lo, hi = (float(v) for v in gen.energy_range_mev)
            rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
            e = np.exp(rng.uniform(math.log(lo), math.log(hi), n_teacher)).astype(np.float32)
            with torch.no_grad():
                y = gen.sample(torch.from_numpy(e), generator=torch.Generator().manual_seed(seed + 7))
            held["data"] = ShowerSet(e, y.detach().float().numpy(), gen.geometry, {"source": "original generator (self-distillation)"})
        return held["data"]

    def train(model: Any, steps: int, lr: float) -> Any:
        calls["n"] += 1
        was = model.training
        if teacher is not None:
            finetune_to_teacher(model, teacher, steps, lr, energies=energies, seed=seed + calls["n"], batch_size=batch_size)
        else:
            finetune(model, training_data(), steps, lr, seed=seed + calls["n"])
        model.train(was)
        return model

    return train
