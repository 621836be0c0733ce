"""Fixtures for the firmware tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _fw_nets import TinyGen, calibration, make_tiny
from torch import nn

from simcompress.compress import compress, config_from_dict


@pytest.fixture
def quantize() -> Callable[..., Any]:
    """``quantize(method="fixed_point", cls=TinyGen, **options) -> CompressionResult``."""

    def _q(method: str = "fixed_point", cls: type[nn.Module] = TinyGen, seed: int = 0, **options: Any) -> Any:
        return compress(make_tiny(seed, cls), config_from_dict({"method": method, **options}), calibration=calibration())

    return _q
