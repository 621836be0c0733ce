"""The alkaid route: what hls4ml 1.3.0 cannot convert, bit-exact between the emulation and alkaid's interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simcompress.compress import compress, config_from_dict
from simcompress.compress.fixed_point.record import PrecisionRecord
from simcompress.errors import UnsupportedLayerError
from simcompress.firmware import FirmwareConfig, export_firmware
from simcompress.firmware.alkaid_route import build_cast_network
from simcompress.firmware.export import select_route

pytestmark = pytest.mark.firmware
pytest.importorskip("alkaid")

T = {"rounding": "RND", "overflow": "SAT"}


class DeconvGen(nn.Module):
    """z (3) + c (1) -> Linear -> view (2, 4) -> ConvTranspose1d -> torch.tanh -> crop to 7 values."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.up = nn.ConvTranspose1d(2, 1, 4, stride=2, padding=1)

    def forward(self, z, c):
        x = F.leaky_relu(self.fc(torch.cat([z, c], 1)).view(-1, 2, 4), 0.3)
        return torch.tanh(self.up(x))[:, 0, :7]


class Dense(nn.Module):
    def __init__(self, act: nn.Module | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 5)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x):
        return self.act(self.fc(x))


def _quantized(**options: Any) -> Any:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    calib = [torch.randn(256, 3, generator=g), torch.rand(256, 1, generator=g)]
    spec = {"method": "fixed_point", "weight": {"width": 7, **T}, "result": {"width": 9, **T},
            "activation": {"width": 8, **T}, **options}
    return compress(DeconvGen().eval(), config_from_dict(spec), calibration=calib)


def _x(n: int = 500, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.concatenate([rng.normal(size=(n - 50, 3)), rng.uniform(-20, 20, size=(50, 3))]), rng.uniform(0, 1, (n, 1))]


def _record(result: dict[str, Any], **extra: Any) -> PrecisionRecord:
    w = {"width": 6, "integer": 1, **T}
    return PrecisionRecord.from_dict({"input": {"width": 8, "integer": 3, **T}, "input_sizes": [3],
                                      "layers": {"fc": {"weight": w, "bias": w, "result": result, **extra}}})


def test_transposed_convolution_emulation_equals_interpreter_and_the_quantized_model() -> None:
    from simcompress.firmware.alkaid_export import interpret
    from simcompress.firmware.graph import resolve

    res = _quantized()
    net, rec = resolve(res.model)
    cast = build_cast_network(net, rec, [3, 1])
    x = _x()
    y = cast.emulate(x)
    assert y.shape == (500, 7) and np.unique(y).size > 20
    assert np.count_nonzero(interpret(cast.trace(), cast.quantize_inputs(x)) != y) == 0
    with torch.no_grad():  # the compressed model computes the same numbers (small types: float32 is exact)
        y_model = res.model(*[torch.from_numpy(a).float() for a in cast.quantize_inputs(x)]).double().numpy()
    np.testing.assert_array_equal(y_model, y)
    t = rec.layers["tanh"].result
    np.testing.assert_array_equal(t.quantize(y), y)  # every output is on the Tanh result grid


def test_export_takes_the_alkaid_route_when_hls4ml_cannot(tmp_path: Path) -> None:
    res = _quantized()
    out = export_firmware(res.model, FirmwareConfig(check={"n_samples": 200}), tmp_path / "fw").report
    assert out["route"] == "alkaid" and out["bit_exactness"]["mismatches"] == 0 and out["bit_exactness"]["passed"]
    assert out["bit_exactness"]["n_outputs"] == 200 * 7 and out["estimate"]["total"]["lut"] > 0
    assert out["precisions"]["up"]["kind"] == "ConvTranspose1d"
    src = tmp_path / "fw" / "rtl" / "src"
    assert (src / "simcompress_gen.v").is_file() and "module simcompress_gen" in (src / "simcompress_gen.v").read_text()
    assert np.load(tmp_path / "fw" / "vectors" / "output_codes.npy").dtype == np.int64
    with pytest.raises(UnsupportedLayerError, match=r"hls4ml route: .*not supported.*the alkaid route can take this network: set route: alkaid"):
        export_firmware(res.model, FirmwareConfig(route="hls4ml"), tmp_path / "fw2")
    assert not (tmp_path / "fw2").exists()


def test_leaky_relu_after_a_saturating_cast_is_bit_exact() -> None:
    """alkaid's ``np.where(x > 0, ...)`` picks the wrong branch on saturated values; max/min does not."""
    from simcompress.firmware.alkaid_export import interpret

    torch.manual_seed(2)
    net = Dense(nn.LeakyReLU(0.2)).eval()
    rec = PrecisionRecord.from_dict({**_record({"width": 8, "integer": 2, **T}).to_dict(), "layers": {
        **_record({"width": 8, "integer": 2, **T}).to_dict()["layers"],
        "act": {"kind": "LeakyReLU", "result": {"width": 8, "integer": 2, **T},
                "param": {"width": 8, "integer": 0, "signed": False, **T}, "alpha": 0.2}}})
    cast = build_cast_network(net, rec, [3])
    x = [np.random.default_rng(0).uniform(-6, 6, (400, 3))]
    y = cast.emulate(x)
    assert (y < 0).any() and (y == 2 - 2**-6).any()  # negative slopes and saturation both occur
    assert np.count_nonzero(interpret(cast.trace(), cast.quantize_inputs(x)) != y) == 0


@pytest.mark.parametrize(("result", "extra", "match"), [
    ({"width": 8, "integer": 3, "rounding": "RND_ZERO", "overflow": "SAT"}, {},
     r"precision\.layers\.fc\.result: rounding RND_ZERO .* has no alkaid equivalent"),
    ({"width": 8, "integer": 3, "rounding": "RND", "overflow": "SAT_ZERO"}, {},
     r"precision\.layers\.fc\.result: overflow SAT_ZERO .* has no alkaid equivalent"),
    ({"width": 8, "integer": 3, **T}, {"accum": {"width": 10, "integer": 3}},
     r"precision\.layers\.fc\.accum: ap_fixed<10,3> is narrower than the exact accumulator"),
])
def test_record_alkaid_cannot_express_is_refused_naming_the_layer(result: dict, extra: dict, match: str) -> None:
    with pytest.raises(UnsupportedLayerError, match=match):
        build_cast_network(Dense().eval(), _record(result, **extra), [3])


def test_neither_route_names_both() -> None:
    net = Dense(nn.Softplus()).eval()
    rec = PrecisionRecord.from_dict({**_record({"width": 8, "integer": 3, **T}).to_dict(), "layers": {
        **_record({"width": 8, "integer": 3, **T}).to_dict()["layers"], "act": {"result": {"width": 8, "integer": 3, **T}}}})
    with pytest.raises(UnsupportedLayerError) as err:
        select_route(net, rec, [3])
    msg = str(err.value)
    assert msg.startswith("no firmware route takes this network: hls4ml route: layer 'act' (Softplus)")
    assert "alkaid route: layer 'act' (Softplus) is not supported by the alkaid route" in msg and "\n" not in msg


class DeadChannel(nn.Module):
    """Channel 0 is a dead ReLU (zero weights, negative bias); the deconvolution reads only channel 0."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.up = nn.ConvTranspose1d(2, 1, 2, stride=2)
        with torch.no_grad():
            self.fc.weight[:2] = 0.0
            self.fc.bias[:2] = -0.5
            self.up.weight[1] = 0.0

    def forward(self, x):
        return self.up(F.relu(self.fc(x).view(-1, 2, 2))).flatten(1)


def test_constant_products_of_dead_channels_trace() -> None:
    """alkaid 0.8.2 raises StopIteration on a product whose inputs are all constant; the patched cmvm returns it."""
    from simcompress.firmware.alkaid_export import interpret

    torch.manual_seed(4)
    r = {"width": 8, "integer": 3, **T}
    w = {"width": 6, "integer": 1, **T}
    rec = PrecisionRecord.from_dict({"input": {"width": 8, "integer": 3, **T}, "layers": {
        "fc": {"weight": w, "bias": w, "result": r}, "relu": {"kind": "ReLU", "functional": True, "result": r},
        "up": {"weight": w, "bias": w, "result": r}}})
    cast = build_cast_network(DeadChannel().eval(), rec, [3])
    x = [np.random.default_rng(1).normal(size=(50, 3))]
    y = cast.emulate(x)
    assert np.unique(y).size == 1  # every output is the deconvolution's bias
    assert np.count_nonzero(interpret(cast.trace(), cast.quantize_inputs(x)) != y) == 0
