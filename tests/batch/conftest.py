"""Fixtures of the batch tests: a stand-in model bundle and one shared 2-worker LocalCluster."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import batch_standin


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny, random-weights) GAN bundle written by the generators package."""
    import torch

    from simcompress.generators import GANGenerator, save_generator
    from simcompress.showers import Geometry

    torch.manual_seed(0)
    gen = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=8, hidden=[16], critic_hidden=[8])
    return save_generator(gen, tmp_path_factory.mktemp("model") / "tiny-gan", card={"note": "batch tests"})


@pytest.fixture(scope="session")
def standin_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return batch_standin.make_bundle(tmp_path_factory.mktemp("standin") / "tiny")


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[object]:
    """Two worker processes, one thread each, shared by the tests (startup costs a few seconds)."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
        memory_limit="2GiB", silence_logs=logging.ERROR,
    )
    try:
        yield cluster
    finally:
        cluster.close()
