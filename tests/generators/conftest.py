from __future__ import annotations

import pytest
import torch

from simcompress.showers.geometry import Geometry


@pytest.fixture(scope="session")
def geometry() -> Geometry:
    return Geometry.from_name("ds1-photons")


@pytest.fixture(scope="session")
def tiny_ref(geometry):
    """600 reference showers (GFlash), seeded."""
    from simcompress.showers.reference import simulate

    torch.set_num_threads(1)
    return simulate(geometry, 600, energies="ds1", seed=3, progress=False)
