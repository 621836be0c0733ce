"""Bit counting by hand, the report's honesty fields, and bundle safety."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from compress_toys import make_mlp
from torch import nn

from simcompress.compress import compress, config_from_dict
from simcompress.compress.accounting import encode_cost, storage_bits, storage_table
from simcompress.compress.bundle import load_compressed, register_module_type, save_compressed
from simcompress.compress.report import compression_report, count_ops, report_markdown
from simcompress.errors import BundleError, ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny() -> nn.Sequential:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1.0, -2, 0.5, 0.1], [0.3, 0.2, -0.1, 4.0], [-1.0, 0.05, 0.6, 0.7]]))
    return m.eval()


def test_float_model_bits_by_hand() -> None:
    # 12 + 3 + 6 + 2 = 23 float32 values
    assert storage_bits(_tiny()) == 23 * 32


def test_quantized_and_pruned_bits_by_hand() -> None:
    m = _tiny()
    m = compress(m, config_from_dict({"method": "magnitude_prune", "sparsity": 0.5, "include": ["0"]})).model
    m = compress(m, config_from_dict({"method": "ptq", "weights": {"bits": 4, "granularity": "per_channel"}, "include": ["0"]})).model
    table = {t.name: t for t in storage_table(m)}
    w = table["0.weight"]
    # 6 of 12 weights are non-zero (magnitude pruning); 4-bit values; 3 per-channel float32 scales (symmetric: no zero points)
    assert (w.numel, w.value_bits, w.overhead_bits) == (12, 4, 3 * 32)
    nnz = w.nnz
    assert nnz == 6
    dense = 12 * 4
    bitmask = 12 + nnz * 4
    csr = nnz * (4 + 2) + (3 + 1) * 3  # column index: ceil(log2 4) = 2 bits; row pointers: ceil(log2 7) = 3 bits
    assert w.bits == min(dense, bitmask, csr) + 96
    assert w.encoding == {dense: "dense", bitmask: "bitmask", csr: "csr"}[min(dense, bitmask, csr)]
    assert storage_bits(m) == w.bits + 3 * 32 + 6 * 32 + 2 * 32  # untouched bias and layer 2 stay float32


def test_encode_cost_prefers_csr_for_very_sparse_rows() -> None:
    assert encode_cost((100, 100), 10, 8) == ("csr", 10 * (8 + 7) + 101 * 4)
    assert encode_cost((10, 10), 100, 8) == ("dense", 800)


def test_count_ops_by_hand() -> None:
    m = _tiny()
    x = torch.randn(5, 4)
    ops = count_ops(m, lambda mm: mm(x), 5)
    assert ops["macs"] == 4 * 3 + 3 * 2
    assert ops["bops"] == (4 * 3 + 3 * 2) * 32 * 32
    pruned = compress(m, config_from_dict({"method": "magnitude_prune", "sparsity": 0.5, "include": ["0"]})).model
    ops_p = count_ops(pruned, lambda mm: mm(x), 5)
    assert ops_p["macs"] == 18 and ops_p["macs_nonzero"] == 6 + 6


def test_report_is_labelled_and_consistent(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model = make_mlp(widths=(16, 64, 64, 8))
    x = torch.randn(128, 16, generator=torch.Generator().manual_seed(0))
    res = compress(model, config_from_dict({"method": "structured_prune", "amount": 0.5}))
    save_compressed(res.model, {}, [], None, tmp_path / "b")
    rep = compression_report(model, res.model, example=(x,), min_time=0.02, repeats=1, onnx=True, compressed_bundle=tmp_path / "b")
    o, c = rep["original"], rep["compressed"]
    assert c["params"] < o["params"] and rep["ratios"]["storage"] == pytest.approx(o["storage_bits"] / c["storage_bits"])
    assert o["throughput"] > 0 and c["throughput"] > 0 and c["bundle_bytes"] > 0
    assert "throughput" in rep["provenance"]["measured"] and "storage_bits" in rep["provenance"]["counted"]
    assert rep["onnx"]["measured"] is True and "compressed_int8_dynamic" not in rep["onnx"]  # nothing quantized
    assert rep["onnx"]["compressed_fp32"]["max_abs_diff_vs_torch_compressed"] < 1e-4
    md = report_markdown(rep)
    assert "| throughput |" in md and "measured" in md and "counted" in md
    json.dumps(rep)  # JSON-ready


def test_int8_onnx_form_measured_for_quantized_models() -> None:
    torch.set_num_threads(1)
    model = make_mlp(widths=(16, 64, 64, 8))
    x = torch.randn(64, 16)
    res = compress(model, config_from_dict({"method": "ptq"}))
    rep = compression_report(model, res.model, example=(x,), min_time=0.02, repeats=1)
    q = rep["onnx"]["compressed_int8_dynamic"]
    assert q["forwards_per_s"] > 0 and q["onnx_bytes"] < rep["onnx"]["compressed_fp32"]["onnx_bytes"] / 2
    assert isinstance(rep["onnx"]["int8_helps"], bool)


def test_quantized_bundle_stores_integer_codes(tmp_path: Path) -> None:
    model = make_mlp(widths=(32, 128, 128, 8))
    x = torch.randn(16, 32)
    res = compress(model, config_from_dict({"method": "ptq", "weights": {"bits": 8}}))
    save_compressed(model, {}, [], None, tmp_path / "float")
    save_compressed(res.model, {}, [], None, tmp_path / "int8")
    f = (tmp_path / "float" / "weights.safetensors").stat().st_size
    q = (tmp_path / "int8" / "weights.safetensors").stat().st_size
    assert q < 0.4 * f
    loaded = load_compressed(tmp_path / "int8", builder=lambda _c: make_mlp(widths=(32, 128, 128, 8)))
    assert torch.equal(loaded(x), res.model(x))


def test_bundle_refuses_tampering_and_unknown_types(tmp_path: Path) -> None:
    res = compress(make_mlp(), config_from_dict({"method": "svd", "rank": 2}))
    out = save_compressed(res.model, {}, [], None, tmp_path / "b")
    cfg = json.loads((out / "config.json").read_text())
    cfg["compression"]["structure"]["0"]["type"] = "EvilModule"
    cfg["compression"]["structure"]["0"].pop("spec", None)
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="0"):
        load_compressed(out, builder=lambda _c: make_mlp())
    out = save_compressed(res.model, {}, [], None, tmp_path / "c")
    cfg = json.loads((out / "config.json").read_text())
    cfg["compression"]["structure"]["0"]["spec"]["children"][0]["type"] = "os.system"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="not in the compressed-bundle allowlist"):
        load_compressed(out, builder=lambda _c: make_mlp())
    out = save_compressed(res.model, {}, [], None, tmp_path / "d")
    data = bytearray((out / "weights.safetensors").read_bytes())
    data[-1] ^= 1
    (out / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_compressed(out, builder=lambda _c: make_mlp())
    with pytest.raises(BundleError, match="not a compressed bundle"):
        load_compressed(tmp_path / "nowhere", builder=lambda _c: make_mlp())


def test_unregistered_parametrization_is_refused_on_save(tmp_path: Path) -> None:
    class Scale(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    m = make_mlp()
    torch.nn.utils.parametrize.register_parametrization(m[0], "weight", Scale())
    with pytest.raises(BundleError, match="Scale.*not registered"):
        save_compressed(m, {}, [], None, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="to_spec"):
        register_module_type(Scale)


def test_generator_bundle_round_trip(tmp_path: Path) -> None:
    import simcompress.generators as gens
    from simcompress.showers.geometry import Geometry

    gen = gens.build_generator({
        "kind": "gan", "latent_dim": 8, "geometry": Geometry.from_name("ds1-photons").to_dict(),
        "energy_range_mev": [256.0, 4194304.0],
        "architecture": {"hidden": [32, 32], "negative_slope": 0.2, "batchnorm": False, "critic_hidden": [16]},
    })
    res = compress(gen, config_from_dict({"method": "svd", "rank": 4}))
    assert all(r.name.startswith("network.") for r in res.layers)  # never the critic
    save_compressed(res.model.eval(), gen.config_dict(), [], None, tmp_path / "g")
    loaded = gens.load_generator(tmp_path / "g")
    e = torch.full((6,), 1e4)
    a = loaded.sample(e, generator=torch.Generator().manual_seed(1))
    b = res.model.sample(e, generator=torch.Generator().manual_seed(1))
    assert type(loaded) is type(gen) and torch.equal(a, b)
    assert math.isfinite(float(a.sum()))


def test_pruned_bundle_stores_kept_values_and_packed_masks(tmp_path: Path) -> None:
    widths = (32, 128, 128, 8)
    model = make_mlp(widths=widths)
    x = torch.randn(16, 32)
    res = compress(model, config_from_dict({"method": "magnitude_prune", "sparsity": 0.9}))
    save_compressed(model, {}, [], None, tmp_path / "float")
    save_compressed(res.model, {}, [], None, tmp_path / "pruned")
    f = (tmp_path / "float" / "weights.safetensors").stat().st_size
    p = (tmp_path / "pruned" / "weights.safetensors").stat().st_size
    assert p < 0.25 * f  # 10 % of the values (4 bytes) + 1 bit per weight of mask
    loaded = load_compressed(tmp_path / "pruned", builder=lambda _c: make_mlp(widths=widths))
    assert torch.equal(loaded(x), res.model(x))
    sparsity = json.loads((tmp_path / "pruned" / "sparsity.json").read_text())
    assert sparsity["2.weight"]["nnz"] == round(0.1 * 128 * 128)
