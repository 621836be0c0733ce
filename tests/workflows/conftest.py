"""Fixtures of the workflow tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
