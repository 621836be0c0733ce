"""The callables that the generic compression pipeline takes, made for shower generators.

``compress`` works on any torch model and receives its calibration data and its fine-tuning as
injected callables (``calibration=``, ``Pipeline(finetune=...)``); these build them from a
:class:`~simcompress.generators.base.ShowerGenerator` and, for fine-tuning, the generators'
own training step (GAN: adversarial with the bundle's critic; flow: maximum likelihood).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["generator_calibration", "generator_finetune"]


def generator_calibration(gen: Any, energies: Any, seed: int) -> Callable[[Any], Any]:
    """Calibration callable: the generator's network on seeded noise at ``energies`` (MeV)."""
    import torch

    z = torch.randn(len(energies), int(gen.latent_dim), generator=torch.Generator().manual_seed(seed))
    e = torch.as_tensor(energies, dtype=torch.float32)

    def run(m: Any) -> Any:
        return m.network(z, m.condition(e))

    return run


def generator_finetune(gen: Any, data: Any, seed: int, n_teacher: int = 4096) -> Callable[[Any, int, float], Any]:
    """Trainer ``(model, steps, lr)``: the generators' fine-tuning (GAN: adversarial with the
    bundle's critic; flow: maximum likelihood) on the reference showers, or, with no reference,
    on ``n_teacher`` showers sampled from the original generator (self-distillation)."""
    import numpy as np
    import torch

    from ..generators.train import finetune

    held = {"data": data}

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

    calls = {"n": 0}

    def train(model: Any, steps: int, lr: float) -> Any:
        calls["n"] += 1
        was = model.training
        finetune(model, training_data(), steps, lr, seed=seed + calls["n"])
        model.train(was)
        return model

    return train
