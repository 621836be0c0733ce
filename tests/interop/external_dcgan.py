"""A stand-in for a user's own generator file: an external-style conditional DCGAN.

``Linear -> view -> ConvTranspose2d + BatchNorm2d stack -> crop``, activations as functions
(``F.leaky_relu``, ``F.relu``, ``torch.sigmoid``), 16 x 23 = 368 voxels (ds1-photons).
Imported by the tests by file path, as a user's ``my_gan.py`` would be.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DCGAN(nn.Module):
    def __init__(self, latent: int = 16, ch: int = 16) -> None:
        super().__init__()
        self.ch = ch
        self.fc1 = nn.Linear(latent + 1, 2 * ch * 2 * 3)
        self.deconv1 = nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(ch)
        self.deconv2 = nn.ConvTranspose2d(ch, ch, 4, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(ch)
        self.deconv3 = nn.ConvTranspose2d(ch, 1, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.fc1(torch.cat([z, c], 1))
        x = F.leaky_relu(x.view(-1, 2 * self.ch, 2, 3), 0.2)
        x = F.relu(self.bn1(self.deconv1(x)))
        x = F.relu(self.bn2(self.deconv2(x)))
        x = torch.sigmoid(self.deconv3(x))  # (N, 1, 16, 24)
        return x[:, 0, :, :23].flatten(1)  # crop to the 16 x 23 calorimeter image


class ConcatMLP(nn.Module):
    """forward(x) on the concatenated input cat([z, c], 1)."""

    def __init__(self, n_in: int = 9, n_out: int = 368) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, 32), nn.Tanh(), nn.Linear(32, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_dcgan(seed: int = 0) -> DCGAN:
    """Seeded weights and non-trivial batch-norm statistics, eval mode."""
    torch.manual_seed(seed)
    net = DCGAN()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return net.eval()


class ReluMLP(nn.Module):
    """An MLP the hls4ml route can take: forward(x) on cat([z, c], 1), Linear/ReLU only."""

    def __init__(self, n_in: int = 9, hidden: int = 16, n_out: int = 368) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
