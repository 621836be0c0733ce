"""Small generator networks of the ``network(z, c)`` form for the firmware tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyGen(nn.Module):
    """noise (4) + conditioning (1) -> 12 -> 8 -> 6 voxels, with BatchNorm, LeakyReLU and a functional ReLU."""

    def __init__(self, latent: int = 4, hidden: tuple[int, int] = (12, 8), n_out: int = 6, slope: float = 0.2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(latent + 1, hidden[0])
        self.bn1 = nn.BatchNorm1d(hidden[0])
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.act2 = nn.LeakyReLU(slope)
        self.out = nn.Linear(hidden[1], n_out)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.bn1(self.fc1(torch.cat([z, c], dim=1))))
        return self.out(torch.relu(self.act2(self.fc2(h))))


class ReluGen(nn.Module):
    """noise + conditioning -> 16 -> 10 outputs, ReLU only (what the RTL route supports)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 16)
        self.act1 = nn.ReLU()
        self.out = nn.Linear(16, 10)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.out(self.act1(self.fc1(torch.cat([z, c], dim=1))))


def calibration(n: int = 512, seed: int = 1, latent: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, latent, generator=g), torch.rand(n, 1, generator=g) * 2 - 1]


def make_tiny(seed: int = 0, cls: type[nn.Module] = TinyGen) -> nn.Module:
    torch.manual_seed(seed)
    m = cls()
    m.train()
    with torch.no_grad():
        m(*calibration(64, seed + 10))
    return m.eval()


