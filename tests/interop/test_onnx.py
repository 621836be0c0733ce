"""ONNX -> torch conversion: exact against ONNX Runtime on the operators generators use."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simcompress.errors import UnsupportedLayerError
from simcompress.interop.onnx import OnnxNetwork, compare_with_onnxruntime, convert_onnx, import_onnx

pytest.importorskip("onnxruntime")


class UpsampleConv(nn.Module):
    """Linear -> view(x.size(0), -1, 4, 4) (a Shape/Gather/Concat chain) -> nearest upsample -> Conv2d + BN -> crop."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(9, 8 * 16)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = F.elu(self.fc(torch.cat([z, c], 1))).view(z.size(0), -1, 4, 4)
        h = torch.tanh(self.bn(self.conv(self.up(h))))
        return torch.sigmoid(h[:, :, 1:, :]).flatten(1)[:, :368] * 2.0 + 0.5


class Conv1dMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 4 * 92)
        self.conv = nn.ConvTranspose1d(4, 2, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.softplus(self.fc(x)).reshape(-1, 4, 92)
        return torch.relu(self.conv(h)).flatten(1)[:, :368]


def _export(tmp_path: Path, net: nn.Module, args: tuple, names: list[str]) -> Path:
    path = tmp_path / f"{type(net).__name__}.onnx"
    torch.manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(path), dynamo=False, input_names=names, output_names=["y"],
                          dynamic_axes={n: {0: "batch"} for n in [*names, "y"]})
    return path


@pytest.mark.parametrize(("net", "shapes", "names"), [
    (UpsampleConv, [(3, 8), (3, 1)], ["z", "c"]),
    (Conv1dMLP, [(3, 5)], ["x"]),
])
def test_conversion_matches_onnxruntime(tmp_path: Path, net: type, shapes: list, names: list) -> None:
    torch.manual_seed(0)
    model = net()
    path = _export(tmp_path, model, tuple(torch.randn(*s) for s in shapes), names)
    graph, state = convert_onnx(path)
    ops = {r["op"] for r in graph["ops"]}
    assert ("Resize" in ops and "Conv" in ops) if net is UpsampleConv else ("ConvTranspose" in ops)
    rebuilt = OnnxNetwork(graph)
    rebuilt.load_state_dict(state, strict=True)
    check = compare_with_onnxruntime(path, rebuilt, graph["input_sizes"], n=128)
    assert check["max_rel_diff"] < 1e-6
    with torch.no_grad():
        x = [torch.randn(7, s[1]) for s in shapes]
        torch.testing.assert_close(rebuilt(*x), model(*x), rtol=1e-5, atol=1e-6)
    torch.fx.symbolic_trace(rebuilt)  # static graph: the compression methods can trace it


def test_import_checks_input_sizes_and_operators(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = _export(tmp_path, UpsampleConv(), (torch.randn(2, 8), torch.randn(2, 1)), ["z", "c"])
    gen, check = import_onnx(path, geometry="ds1-photons", latent_dim=8)
    assert gen.sample(torch.full((3,), 1e4), torch.Generator().manual_seed(0)).shape == (3, 368)
    assert check["max_rel_diff"] < 1e-6
    from simcompress.errors import ConfigError

    with pytest.raises(ConfigError, match="8 and 1 features; --latent-dim 4"):
        import_onnx(path, geometry="ds1-photons", latent_dim=4)
    hsw = nn.Sequential(nn.Linear(9, 368), nn.Hardswish())
    path = _export(tmp_path, hsw, (torch.randn(2, 9),), ["x"])
    with pytest.raises(UnsupportedLayerError, match="ONNX operator 'HardSwish' is not supported"):
        convert_onnx(path)
