"""Generic trainers for methods that fine-tune (QAT, gradual pruning, LoRA) and for pipelines.

A trainer is a callable ``trainer(model, steps, lr)`` that trains ``model`` in
place for ``steps`` optimizer steps at learning rate ``lr`` and only touches
parameters with ``requires_grad``. The CLI builds one from the generators'
adversarial/likelihood fine-tuning; these two cover any torch model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["distillation_trainer", "make_trainer"]


def make_trainer(loss_fn: Callable[[nn.Module, int], Tensor], seed: int = 0) -> Callable[[nn.Module, int, float], nn.Module]:
    """Adam on ``loss_fn(model, step)`` (a scalar loss), seeded, trainable parameters only.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
        >>> model = nn.Linear(4, 1)
        >>> train = make_trainer(lambda m, step: (m(x) - x.sum(1, keepdim=True)).pow(2).mean())
        >>> _ = train(model, 200, 1e-2)
        >>> bool((model(x) - x.sum(1, keepdim=True)).pow(2).mean() < 0.05)
        True
    """
    counter = {"step": 0}

    def train(model: nn.Module, steps: int, lr: float) -> nn.Module:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params or steps <= 0:
            return model
        opt = torch.optim.Adam(params, lr=lr)
        was_training = model.training
        model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + counter["step"])
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model, counter["step"])
                loss.backward()
                opt.step()
                counter["step"] += 1
        model.train(was_training)
        return model

    return train


def distillation_trainer(
    teacher: nn.Module, inputs: Callable[[torch.Generator], tuple[Any, ...]], seed: int = 0, forward: str | None = None
) -> Callable[[nn.Module, int, float], nn.Module]:
    """Train the student to match ``teacher``'s outputs (mean squared error) on ``inputs(gen)`` batches.

    ``forward`` names a submodule to call on both (e.g. ``"network"`` for a generator's
    deterministic network); ``None`` calls the model itself.
    """
    teacher = teacher.eval()
    gen = torch.Generator().manual_seed(seed)

    def call(m: nn.Module, args: tuple[Any, ...]) -> Tensor:
        f = m.get_submodule(forward) if forward else m
        return f(*args)

    def loss(student: nn.Module, step: int) -> Tensor:
        args = inputs(gen)
        with torch.no_grad():
            target = call(teacher, args)
        return torch.nn.functional.mse_loss(call(student, args), target)

    return make_trainer(loss, seed=seed)
