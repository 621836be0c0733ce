"""Fixtures for the compression tests (tiny, seeded)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from compress_toys import make_mlp
from torch import nn

from simcompress.compress.training import distillation_trainer


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def mlp() -> nn.Sequential:
    return make_mlp()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(64, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def trainer(mlp: nn.Sequential) -> Callable[[nn.Module, int, float], nn.Module]:
    return distillation_trainer(mlp, lambda g: (torch.randn(32, 8, generator=g),), seed=0)
