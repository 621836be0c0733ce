"""Shared by conftest.py and test_batch_slurm.py (a module of its own: ``from conftest import`` picks up whichever
``conftest`` module another test folder loaded first)."""

from __future__ import annotations

import os

import pytest


def slurm_or_skip() -> None:
    """Skip (with the reason) only when not root; as root, missing Slurm packages are a failure."""
    from simcompress.batch.localslurm import missing_tools, unavailable_reason

    if os.geteuid() != 0:
        pytest.skip(unavailable_reason() or "not root")
    if missing_tools():
        pytest.fail(f"{unavailable_reason()}; `make test` installs them as root (mk/slurm.mk)")
