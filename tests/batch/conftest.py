"""Fixtures of the batch tests: a stand-in model bundle, one shared 2-worker LocalCluster and a
single-node Slurm cluster (munged, slurmctld, slurmd started here, stopped by pid at the end)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import batch_standin
import pytest
from batch_slurm_helpers import slurm_or_skip


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


@pytest.fixture(scope="module")
def slurm() -> Iterator[object]:
    """A single-node Slurm (partition ``debug``) in a temporary folder, ``SLURM_CONF`` set for the module.

    At the end it cancels the jobs, stops exactly the three daemons it started (by process id)
    and checks that no process of theirs is left before removing the folder.
    """
    slurm_or_skip()
    from simcompress.batch.localslurm import LocalSlurm, _alive

    root = tempfile.mkdtemp(prefix="sc-slurm-")  # short: the munge socket path must fit a sockaddr_un
    cluster = LocalSlurm(root).start()
    pids = dict(cluster.pids)
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", str(cluster.conf))
    try:
        yield cluster
    finally:
        mp.undo()
        notes = cluster.stop()
        left = [f"{n} {p}" for n, p in pids.items() if _alive(p)] + [str(p) for p in cluster._descendants()]
        if not left:
            shutil.rmtree(root, ignore_errors=True)
        assert not left, f"local Slurm left processes behind: {left} (folder kept: {root})"
        assert not notes, f"local Slurm needed more than SIGTERM: {notes}"
