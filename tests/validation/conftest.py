"""Shared fixtures: small GFlash reference samples and a fast gate spec."""

from __future__ import annotations

import pytest

from simcompress.showers.geometry import Geometry
from simcompress.validation.gate import GateSpec


@pytest.fixture(scope="session")
def geometry() -> Geometry:
    return Geometry.from_name("ds1-photons")


@pytest.fixture(scope="session")
def reference(geometry):
    from simcompress.showers.reference import simulate

    return simulate(geometry, 2500, seed=0, progress=False)


@pytest.fixture(scope="session")
def independent(geometry):
    """A second GFlash sample of the same physics (different seed)."""
    from simcompress.showers.reference import simulate

    return simulate(geometry, 2500, seed=1, progress=False)


@pytest.fixture(scope="session")
def fast_spec() -> GateSpec:
    """The default gate's rules with cheaper settings (small classifier, fewer FPD/KPD batches)."""
    return GateSpec(
        name="fast-default",
        classifier={"inputs": ["high"], "epochs": 4, "n_hidden": 32, "max_events": 2000, "max_auc": 0.6},
        fpd={"num_batches": 5, "num_points": 4},
        kpd={"num_batches": 5, "batch_size": 800},
        noise_floor={"n_splits": 8},
        bootstrap={"n_boot": 4, "n_boot_hist": 50},
    )
