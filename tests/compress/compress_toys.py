"""Tiny seeded models shared by the compression tests."""

from __future__ import annotations

import itertools

import torch
from torch import nn


def make_mlp(seed: int = 0, dtype: torch.dtype = torch.float32, widths: tuple[int, ...] = (8, 24, 16, 4)) -> nn.Sequential:
    """Linear/activation chain with a batch norm, the shape of a generator network."""
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        lin = nn.Linear(a, b, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g, dtype=dtype) / a**0.5)
            lin.bias.copy_(torch.randn(b, generator=g, dtype=dtype) * 0.1)
        layers.append(lin)
        if i < len(widths) - 2:
            if i == 1:
                layers.append(nn.BatchNorm1d(b, dtype=dtype))
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers).eval()


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.c2 = nn.Conv2d(8, 6, 3, padding=1)
        self.head = nn.Linear(6 * 5 * 5, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.c2(self.act(self.c1(x))).flatten(1))
