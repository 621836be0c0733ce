"""The typed precision record: exact JSON round trip, refusals, and finding it in a model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from simcompress.compress import compress, config_from_dict
from simcompress.compress.fixed_point import PrecisionEntry, PrecisionRecord, find_precision_network, precision_record
from simcompress.errors import ConfigError


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.act = nn.LeakyReLU(0.1)
        self.out = nn.Linear(6, 2)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.act(self.fc(torch.cat([z, c], dim=1)))))


def _quantized() -> nn.Module:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    cal = (torch.randn(64, 4, generator=g), torch.rand(64, 1, generator=g))
    return compress(_Net(), config_from_dict({"method": "fixed_point"}), calibration=cal).model


def test_record_round_trips_the_json_text() -> None:
    rec = precision_record(_quantized())
    assert rec is not None
    typed = PrecisionRecord.from_dict(rec)
    assert json.dumps(typed.to_dict(), indent=2) == json.dumps(rec, indent=2)
    assert typed.layers["fc"].kind == "Linear" and typed.layers["fc"].activation_layer == "act"
    assert typed.layers["act"].param is not None and typed.layers["act"].alpha == pytest.approx(0.1)
    assert typed.layers["relu"].functional is True
    assert [n for n, _ in typed.weight_layers()] == ["fc", "out"]
    assert PrecisionRecord.from_json(json.dumps(rec)).to_dict() == rec


def test_record_from_another_framework_keeps_its_keys() -> None:
    data = {"input": "ap_fixed<8,3>", "layers": {"body.0": {"weight": "ap_fixed<6,1>", "bias": "ap_fixed<8,2>",
                                                             "accum": "ap_fixed<20,8>", "result": "ap_fixed<12,4>",
                                                             "source": "fc1"}},
            "input_sizes": [3, 1]}
    out = PrecisionRecord.from_dict(data).to_dict()
    assert list(out) == ["input", "layers", "input_sizes"]
    assert list(out["layers"]["body.0"]) == ["weight", "bias", "accum", "result", "source"]
    assert out["layers"]["body.0"]["result"]["hls"] == "ap_fixed<12,4>"
    assert list(PrecisionEntry.make(result=None, kind="ReLU").to_dict()) == ["kind", "result"]


def test_record_refusals_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"p.json: not a precision record \(needs 'input' and 'layers'\)"):
        PrecisionRecord.from_dict({"layers": {}}, "p.json")
    with pytest.raises(ConfigError, match=r"p.json.layers.fc: unknown key 'wieght'"):
        PrecisionRecord.from_dict({"input": "ap_fixed<8,3>", "layers": {"fc": {"wieght": "ap_fixed<8,3>"}}}, "p.json")
    with pytest.raises(ConfigError, match=r"p.json.layers.fc.result: cannot parse fixed-point type"):
        PrecisionRecord.from_dict({"input": "ap_fixed<8,3>", "layers": {"fc": {"result": "fixed8"}}}, "p.json")
    with pytest.raises(ConfigError, match=r"p.json: not valid JSON"):
        PrecisionRecord.from_json("{", "p.json")


def test_find_precision_network_without_the_module_classes() -> None:
    model = _quantized()
    found = find_precision_network(model)
    assert found is not None
    path, inner, rec = found
    assert path == "" and inner is model.inner and rec.to_dict() == model.record
    assert find_precision_network(_Net()) is None
