"""Coverage of every compression step (changed / left alone, parameter shares, warnings, strict),
and the generator layers (Conv3d, ConvTranspose1d/2d/3d, BatchNorm2d/3d) in the methods."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simcompress.compress import compress, config_from_dict
from simcompress.compress.bundle import load_compressed, save_compressed
from simcompress.compress.coverage import CoverageWarning
from simcompress.compress.modules import Factorized
from simcompress.compress.parametrizations import FakeQuant, find_parametrization
from simcompress.compress.report import compression_report, report_markdown
from simcompress.errors import UnsupportedLayerError


class DeconvNet(nn.Module):
    """Linear -> view -> ConvTranspose2d + BatchNorm2d -> functional activations -> crop."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8 * 2 * 2)
        self.up1 = nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.up2 = nn.ConvTranspose2d(6, 1, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.fc(x).view(-1, 8, 2, 2), 0.2)
        h = F.relu(self.bn1(self.up1(h)))
        return torch.sigmoid(self.up2(h))[:, 0, :7, :7].flatten(1)


def _net() -> DeconvNet:
    torch.manual_seed(0)
    net = DeconvNet()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 2.0)
    return net.eval()


X = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("cfg", [
    {"method": "magnitude_prune", "sparsity": 0.5},
    {"method": "ptq"},
    {"method": "ptq", "types": ["ConvTranspose2d", "Linear"]},
    {"method": "mixed_precision", "sensitivity": "weight", "avg_bits": 4},
    {"method": "svd", "energy": 0.9, "only_if_smaller": False},
])
def test_methods_cover_transposed_convolutions(cfg: dict) -> None:
    net = _net()
    res = compress(net, config_from_dict(cfg))  # a CoverageWarning would be an error (pytest filterwarnings)
    cov = res.coverage
    changed = {r["name"]: r["type"] for r in cov["changed"]}
    assert changed == {"fc": "Linear", "up1": "ConvTranspose2d", "up2": "ConvTranspose2d"}
    assert cov["left_alone"] == [] and cov["not_handled_share"] == 0.0
    # shares are of every parameter (batch norm included), so they add up to below 1
    assert cov["total_params"] == sum(p.numel() for p in net.parameters())
    assert cov["changed_share"] == pytest.approx(1 - 12 / cov["total_params"])
    assert torch.isfinite(res.model(X)).all()
    assert res.report()["coverage"] is cov


def _nudge(model: nn.Module, steps: int, lr: float) -> None:  # a stand-in trainer: moves the trainable (LoRA) tensors
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)


def test_gap_warns_naming_layers_and_strict_refuses() -> None:
    net = _net()
    with pytest.warns(CoverageWarning, match=r"up1 \(ConvTranspose2d.*up2 \(ConvTranspose2d") as rec:
        res = compress(net, config_from_dict({"method": "lora", "steps": 1}), trainer=_nudge)
    assert "2 weight layer(s)" in str(rec[0].message)
    gaps = [r for r in res.coverage["left_alone"] if r["reason"] == "not handled"]
    assert [r["name"] for r in gaps] == ["up1", "up2"]
    assert res.coverage["not_handled_share"] == pytest.approx(sum(r["share"] for r in gaps)) and res.coverage["not_handled_share"] > 0.5
    with pytest.raises(UnsupportedLayerError, match="strict=True"):
        compress(net, config_from_dict({"method": "lora", "steps": 1, "strict": True}), trainer=_nudge)
    with pytest.raises(UnsupportedLayerError, match="up2"):
        compress(net, config_from_dict({"method": "lora", "steps": 1}), strict=True, trainer=_nudge)
    assert [r["name"] for r in res.coverage["changed"]] == ["fc"]


def test_user_exclusions_and_method_decisions_do_not_warn() -> None:
    net = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r1 = compress(net, config_from_dict({"method": "ptq", "exclude": ["up2"]}))
        r2 = compress(net, config_from_dict({"method": "ptq", "types": ["Linear"]}))
        r3 = compress(net, config_from_dict({"method": "svd", "rank": 8}))  # factors not smaller: kept by the method
    assert [(r["name"], r["reason"]) for r in r1.coverage["left_alone"]] == [("up2", "excluded")]
    assert {r["name"]: r["reason"] for r in r2.coverage["left_alone"]} == {"up1": "excluded", "up2": "excluded"}
    kept = {r["name"]: r["note"] for r in r3.coverage["left_alone"]}
    assert kept and all(v == "factors would not be smaller" for v in kept.values())


def test_conv_transpose_quantized_per_output_channel() -> None:
    res = compress(_net(), config_from_dict({"method": "ptq", "weights": {"bits": 4}}))
    fq = find_parametrization(res.model.up1, FakeQuant, "weight")
    assert fq.axis == 1 and tuple(fq.scale.shape) == (1, 6, 1, 1)  # weight is (in, out, kh, kw)


@pytest.mark.parametrize(("layer", "x"), [
    (nn.Conv2d(8, 16, 3, padding=1), (2, 8, 5, 5)),
    (nn.Conv3d(4, 8, 3), (2, 4, 5, 5, 5)),
    (nn.ConvTranspose1d(6, 5, 3, stride=2, output_padding=1), (2, 6, 7)),
    (nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), (2, 16, 3, 3)),
    (nn.ConvTranspose3d(4, 3, 3, stride=2), (2, 4, 3, 3, 3)),
])
def test_svd_of_convolutions_is_exact_at_full_rank(layer: nn.Module, x: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(layer).double()
    inp = torch.randn(*x, dtype=torch.float64)
    full = compress(model, config_from_dict({"method": "svd", "energy": 1.0, "only_if_smaller": False}))
    assert isinstance(full.model[0], Factorized)
    torch.testing.assert_close(full.model(inp), model(inp), rtol=0, atol=1e-10)
    low = compress(model, config_from_dict({"method": "svd", "rank": 1}))
    rec = low.layers[0]
    assert rec.params_after < rec.params_before and 0 < rec.details["rel_error"] < 1


def test_compressed_deconv_bundle_round_trip(tmp_path) -> None:
    from simcompress.compress.pipeline import Pipeline

    net = _net()
    pipe = Pipeline([config_from_dict(c) for c in ({"method": "structured_prune", "amount": 0.5, "include": ["up1"]},
                                                    {"method": "svd", "rank": 1, "include": ["up1"]},
                                                    {"method": "ptq", "weights": {"bits": 6}})])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoverageWarning)
        result = pipe.run(net)
    model = result.model
    assert isinstance(model.up1, Factorized) and model.up1[1].out_channels == 3  # shrunk to 3 channels, then factorized
    assert model.bn1.num_features == 3 and model.up2.in_channels == 3
    save_compressed(model, {"toy": True}, [s.config.to_dict() for s in result.steps], {}, tmp_path / "b")
    again = load_compressed(tmp_path / "b", builder=lambda cfg: _net())
    torch.testing.assert_close(again(X), model(X), rtol=0, atol=0)
    rep = compression_report(net, model, example=(X,), onnx=False, min_time=0.01, repeats=1, pipeline=result.to_dict())
    assert [c["method"] for c in rep["coverage"]] == ["structured_prune", "svd", "ptq"]
    assert rep["compressed"]["macs_per_sample"] < rep["original"]["macs_per_sample"]  # ConvTranspose MACs counted
    md = report_markdown(rep)
    assert "## Coverage" in md and "| up2 | ConvTranspose2d |" in md


class ReshapeNet(nn.Module):
    """Linear -> view(N, -1, 2, 3) -> ConvTranspose2d -> BN -> upsample -> Conv2d -> crop -> flatten -> Linear."""

    def __init__(self, fixed_view: bool = False) -> None:
        super().__init__()
        self.fixed_view = fixed_view
        self.fc = nn.Linear(6, 8 * 2 * 3)
        self.up1 = nn.ConvTranspose2d(8, 6, 4, 2, 1)
        self.bn1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 5, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(5)
        self.head = nn.Linear(5 * 8 * 12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x).view(-1, 8, 2, 3) if self.fixed_view else self.fc(x).view(x.shape[0], -1, 2, 3)
        h = F.relu(self.bn1(self.up1(F.leaky_relu(h, 0.2))))
        h = torch.tanh(self.bn2(self.c2(F.interpolate(h, scale_factor=2, mode="nearest"))))[:, :, :8, :12]
        return self.head(h.flatten(1))


def test_structured_prune_follows_channels_through_reshapes_and_crops() -> None:
    torch.manual_seed(0)
    net = ReshapeNet().eval()
    x = torch.randn(4, 6)
    same = compress(net, config_from_dict({"method": "structured_prune", "amount": 0.0}))
    torch.testing.assert_close(same.model(x), net(x), rtol=0, atol=0)
    res = compress(net, config_from_dict({"method": "structured_prune", "amount": 0.5}))
    m = res.model
    assert (m.fc.out_features, m.up1.in_channels) == (24, 4)  # 4 of 8 channels = 4 blocks of 2x3 features
    assert (m.up1.out_channels, m.bn1.num_features, m.c2.in_channels) == (3, 3, 3)
    assert (m.c2.out_channels, m.bn2.num_features, m.head.in_features) == (3, 3, 3 * 96)
    assert m(x).shape == (4, 10)
    kept = {r.name: r.details for r in res.layers}
    assert kept["head"]["removed_units"] == 0 and kept["fc"]["consumer"] == "up1"


def test_structured_prune_refuses_a_view_that_fixes_the_channel_count() -> None:
    net = ReshapeNet(fixed_view=True).eval()
    with pytest.raises(UnsupportedLayerError, match=r"channel count 8 written into the forward code"):
        compress(net, config_from_dict({"method": "structured_prune", "amount": 0.5, "include": ["fc"]}))
    res = compress(net, config_from_dict({"method": "structured_prune", "amount": 0.5, "on_unsupported": "keep"}))
    notes = {r["name"]: (r["reason"], r["note"]) for r in res.coverage["left_alone"]}
    assert notes["fc"][0] == "kept" and "written into the forward code" in notes["fc"][1]
    assert {r["name"] for r in res.coverage["changed"]} == {"up1", "c2", "head"}  # head: its inputs shrank


@pytest.mark.parametrize(("layer", "x"), [
    (nn.Conv3d(4, 6, 3, padding=1), (2, 4, 4, 4, 4)),
    (nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1), (2, 8, 3, 3)),
    (nn.ConvTranspose1d(5, 4, 3, stride=2, output_padding=1), (2, 5, 6)),
])
def test_tucker_of_3d_and_transposed_convolutions_is_exact_at_full_rank(layer: nn.Module, x: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(layer).double()
    inp = torch.randn(*x, dtype=torch.float64)
    full = compress(model, config_from_dict({"method": "tucker", "rank_ratio": 1.0, "only_if_smaller": False}))
    assert isinstance(full.model[0], Factorized) and len(full.model[0]) == 3
    torch.testing.assert_close(full.model(inp), model(inp), rtol=0, atol=1e-10)
    low = compress(model, config_from_dict({"method": "tucker", "rank_ratio": 0.5, "only_if_smaller": False}))
    assert 0 < low.layers[0].details["rel_error"] < 1
