"""Shared tiny, seeded shower samples for the showers tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from simcompress.showers.data import ShowerSet
from simcompress.showers.reference import simulate


@pytest.fixture(scope="session")
def calochallenge_dir() -> Path:
    """The folder with the four CaloChallenge binning XML files (``../shared/calochallenge``; may be absent)."""
    env = os.environ.get("SIMCOMPRESS_CALOCHALLENGE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "calochallenge"


@pytest.fixture(scope="session")
def ds1_small() -> ShowerSet:
    """300 ds1-photons showers over the 15 CaloChallenge energies (seed 11)."""
    return simulate("ds1-photons", 300, energies="ds1", seed=11, progress=False)


@pytest.fixture(scope="session")
def ds2_small() -> ShowerSet:
    """40 ds2 showers, log-uniform 1 GeV - 100 GeV (seed 12): a sparse-layout geometry."""
    return simulate("ds2", 40, energies="log-uniform:1e3,1e5", seed=12, progress=False)
