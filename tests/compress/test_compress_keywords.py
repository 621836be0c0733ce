"""compress() refuses keywords that no transform reads (a misspelling must not run a different compression)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simcompress.compress import compress, config_from_dict
from simcompress.compress.base import CONTEXT_KEYWORDS
from simcompress.compress.pipeline import Pipeline
from simcompress.errors import UnknownArgumentError


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def test_misspelled_keyword_is_refused_with_the_nearest_name() -> None:
    cfg = config_from_dict({"method": "ptq", "weights": {"bits": 8}, "activations": {"bits": 8}})
    x = torch.randn(32, 6)
    with pytest.raises(UnknownArgumentError, match=r"unknown keyword 'calibraton' for method 'ptq'.*did you mean 'calibration'"):
        compress(_mlp(), cfg, calibraton=x)
    with pytest.raises(TypeError):  # a TypeError, as Python's own unexpected-keyword error
        compress(_mlp(), cfg, bits=4)  # a method option given as a keyword, not in the config


def test_context_keywords_are_accepted_whichever_method_reads_them() -> None:
    model = _mlp()
    x = torch.randn(64, 6)
    cfg = config_from_dict({"method": "ptq", "weights": {"bits": 8}, "activations": {"bits": 8}})
    calibrated = compress(model, cfg, calibration=x)
    unused = compress(model, cfg, calibration=x, reference=None, gate=None)  # read by other methods, ignored here
    assert {"calibration", "trainer", "gate", "reference"} == set(CONTEXT_KEYWORDS)
    y = torch.randn(16, 6)
    assert torch.equal(calibrated.model(y), unused.model(y))


def test_pipeline_passes_the_check_on() -> None:
    with pytest.raises(UnknownArgumentError, match="trainr"):
        Pipeline([{"method": "svd", "rank": 2}], on_failure="stop").run(_mlp(), trainr=None)
