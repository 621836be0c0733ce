"""QKeras interop on the main side only (no TensorFlow): quantizer semantics, .h5 round trips, refusals."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from simcompress.compress.fixed_point import FixedType
from simcompress.errors import BundleError, UnsupportedLayerError
from simcompress.interop.firmware import firmware_network
from simcompress.interop.generator import QKerasMLPGenerator, load_qkeras_generator
from simcompress.interop.qkeras import (
    QKerasNetwork,
    export_qkeras,
    fixed_to_quantizer,
    load_qkeras_network,
    network_from_precision,
    quantizer_to_fixed,
)
from simcompress.showers.geometry import Geometry


def qkeras_quantized_bits(x, bits, integer, symmetric=0, keep_negative=True):
    """Independent float32 transcription of qkeras 0.9.0 quantized_bits.__call__ (alpha=1, no stochastic rounding)."""
    x = np.asarray(x, dtype=np.float32)
    unsigned_bits = bits - int(keep_negative)
    m = np.float32(2.0**unsigned_bits)
    m_i = np.float32(2.0**integer)
    p = x * m / m_i
    lo = np.float32(int(keep_negative) * (-m + symmetric))
    xq = m_i * np.clip(np.round(p), lo, m - 1) / m  # np.round: half to even, as tf.round
    return (x + (-x + xq)).astype(np.float32)


def qkeras_quantized_relu(x, bits, integer):
    x = np.asarray(x, dtype=np.float32)
    m = np.float32(2.0**bits)
    m_i = np.float32(2.0**integer)
    p = x * m / m_i
    xq = m_i * np.clip(np.round(p) / m, 0.0, 1.0 - 1.0 / m)
    return xq.astype(np.float32)


@pytest.fixture(scope="module")
def geometry() -> Geometry:
    return Geometry.from_name("ds1-photons")


@pytest.mark.parametrize(
    ("cfg", "hls"),
    [
        ({"bits": 10, "integer": 3}, "ap_fixed<10,4,AP_RND_CONV,AP_SAT>"),
        ({"bits": 8, "integer": 0, "symmetric": 1}, "ap_fixed<8,1,AP_RND_CONV,AP_SAT_SYM>"),
        ({"bits": 6, "integer": 2, "keep_negative": False}, "ap_ufixed<6,2,AP_RND_CONV,AP_SAT>"),
        ({"bits": 8, "integer": -2}, "ap_fixed<8,-1,AP_RND_CONV,AP_SAT>"),
    ],
)
def test_quantized_bits_is_the_hls_cast(cfg: dict, hls: str) -> None:
    t, kind = quantizer_to_fixed({"class_name": "quantized_bits", "config": {**cfg, "alpha": 1}}, "test")
    assert kind == "quantized_bits" and t.to_hls() == hls
    rng = np.random.default_rng(0)
    step = 2.0 ** (cfg["integer"] - cfg["bits"] + int(cfg.get("keep_negative", True)))
    # random values, exact ties (half steps) and saturating values. (Beyond |x| ~ 2**(23-F) QKeras'
    # straight-through form x + (xq - x) itself rounds in float32, e.g. x=1e6: QKeras' own artifact.)
    x = np.concatenate([rng.standard_normal(5000) * 4 * 2.0 ** cfg["integer"],
                        (np.arange(-300, 300) + 0.5) * step, [1e3, -1e3, 0.0, -0.0]]).astype(np.float32)
    want = qkeras_quantized_bits(x, cfg["bits"], cfg["integer"], cfg.get("symmetric", 0), cfg.get("keep_negative", True))
    got = t.quantize(torch.from_numpy(x)).numpy()
    assert np.array_equal(got, want)
    # string form, positional arguments as QKeras parses them
    args = f"{cfg['bits']},{cfg['integer']},{cfg.get('symmetric', 0)},{int(cfg.get('keep_negative', True))},alpha=1"
    assert quantizer_to_fixed(f"quantized_bits({args})", "test")[0] == t


def test_quantized_relu_is_the_unsigned_cast() -> None:
    t, kind = quantizer_to_fixed("quantized_relu(8,3)", "test")
    assert kind == "quantized_relu" and t == FixedType(8, 3, False, "RND_CONV", "SAT")
    x = np.concatenate([np.random.default_rng(1).standard_normal(4000) * 6, (np.arange(-50, 300) + 0.5) / 32])
    x = x.astype(np.float32)
    assert np.array_equal(t.quantize(torch.from_numpy(x)).numpy(), qkeras_quantized_relu(x, 8, 3))
    # export writes back the same class
    assert fixed_to_quantizer(t, "quantized_relu", "t")["class_name"] == "quantized_relu"
    assert fixed_to_quantizer(FixedType(10, 4, True, "RND_CONV", "SAT"), None, "t")["config"]["integer"] == 3


@pytest.mark.parametrize(
    ("q", "needle"),
    [
        ({"class_name": "quantized_bits", "config": {"bits": 8, "integer": 0, "alpha": "auto_po2"}}, "alpha='auto_po2'"),
        ({"class_name": "quantized_bits", "config": {"bits": 8, "integer": 0, "alpha": "auto"}}, "alpha='auto'"),
        ({"class_name": "quantized_bits", "config": {"bits": 8, "integer": 0, "alpha": 1,
                                                     "use_stochastic_rounding": True}}, "stochastic"),
        ("quantized_po2(4)", "'quantized_po2'"),
        ("binary()", "'binary'"),
        ("quantized_relu(8,3,1)", "use_sigmoid"),
        ("quantized_relu(8,3,negative_slope=0.25)", "negative_slope"),
        ("quantized_bits(1,0,alpha=1)", "sign/binary"),
        ("quantized_bits(28,4,alpha=1)", "float32"),
        ({"class_name": "quantized_bits", "config": {"bits": 8, "integer": 0, "alpha": 1, "qnoise_factor": 0.5}},
         "qnoise_factor"),
    ],
)
def test_unmappable_quantizers_are_refused(q, needle: str) -> None:
    with pytest.raises(UnsupportedLayerError, match="layer 'x'") as err:
        quantizer_to_fixed(q, "layer 'x'")
    assert needle in str(err.value)


def test_export_import_round_trip_is_bit_identical(tmp_path, geometry, seeded) -> None:
    gen = QKerasMLPGenerator.random(geometry, latent_dim=4, hidden=[16, 32], seed=3)
    path = export_qkeras(gen, tmp_path / "gen.h5")
    back = load_qkeras_generator(path)
    assert back.network.layers == gen.network.layers
    for (k, a), (k2, b) in zip(gen.state_dict().items(), back.state_dict().items(), strict=False):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(500, 5, generator=seeded) * 3
    assert torch.equal(gen.network(x), back.network(x))
    e = torch.full((20,), 65536.0)
    assert torch.equal(gen.sample(e, torch.Generator().manual_seed(5)), back.sample(e, torch.Generator().manual_seed(5)))
    assert gen.network.float32_exact is True
    # the file is a Keras 2 .h5: model_config + model_weights/<layer>/<layer>/kernel:0
    with h5py.File(path) as f:
        cfg = json.loads(f.attrs["model_config"])
        assert [layer["class_name"] for layer in cfg["config"]["layers"]] == [
            "InputLayer", "QActivation", "QDense", "QActivation", "QDense", "QActivation", "QDense"]
        assert f["model_weights/fc1/fc1/kernel:0"].shape == (5, 16)


def test_bundle_round_trip_through_the_generator_registry(tmp_path, geometry) -> None:
    from simcompress.generators import load_generator, save_generator

    gen = QKerasMLPGenerator.random(geometry, latent_dim=3, hidden=[8], seed=2)
    save_generator(gen, tmp_path / "bundle")
    back = load_generator(tmp_path / "bundle")
    assert isinstance(back, QKerasMLPGenerator) and back.kind == "qkeras-mlp"
    e = torch.tensor([1000.0, 4096.0, 2.0**20])
    assert torch.equal(gen.sample(e, torch.Generator().manual_seed(1)), back.sample(e, torch.Generator().manual_seed(1)))


def _edit_config(src, dst, fn):
    import shutil

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        fn(cfg["config"]["layers"])
        f.attrs["model_config"] = json.dumps(cfg)
    return dst


def test_unsupported_layers_and_graphs_are_refused(tmp_path, geometry) -> None:
    gen = QKerasMLPGenerator.random(geometry, latent_dim=4, hidden=[8], seed=0)
    src = export_qkeras(gen, tmp_path / "ok.h5")

    def to_conv(layers):
        layers[2]["class_name"] = "Conv1D"

    with pytest.raises(UnsupportedLayerError, match=r"layer 'fc1' \(Conv1D\) is not supported; supported layers"):
        load_qkeras_network(_edit_config(src, tmp_path / "conv.h5", to_conv))

    def branch(layers):  # fc2 also reads in_q: fc1 now feeds nothing
        layers[4]["inbound_nodes"] = [[["in_q", 0, 0, {}]]]

    with pytest.raises(UnsupportedLayerError, match="single-path"):
        load_qkeras_network(_edit_config(src, tmp_path / "branch.h5", branch))

    def auto_alpha(layers):
        layers[2]["config"]["kernel_quantizer"]["config"]["alpha"] = "auto_po2"

    with pytest.raises(UnsupportedLayerError, match=r"layer 'fc1' \(QDense\) kernel_quantizer: quantized_bits with alpha='auto_po2'"):
        load_qkeras_network(_edit_config(src, tmp_path / "po2.h5", auto_alpha))

    def no_input_quant(layers):
        del layers[1]
        layers[1]["inbound_nodes"] = [[["input", 0, 0, {}]]]

    with pytest.raises(UnsupportedLayerError, match="input quantizer"):
        load_qkeras_network(_edit_config(src, tmp_path / "noq.h5", no_input_quant))
    net = load_qkeras_network(tmp_path / "noq.h5", strict=False)
    assert net.float32_exact is None
    (tmp_path / "saved_model").mkdir()
    with pytest.raises(BundleError, match="SavedModel"):
        load_qkeras_network(tmp_path / "saved_model")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(BundleError, match="junk.h5: not an HDF5 file"):
        load_qkeras_network(tmp_path / "junk.h5")


def test_wide_accumulators_are_not_exact_in_float32(tmp_path) -> None:
    wide = FixedType(16, 8, True, "RND_CONV", "SAT")
    layers = [{"op": "quant", "name": "in_q", "type": wide.to_dict(), "qkeras": "quantized_bits"},
              {"op": "dense", "name": "fc1", "in": 64, "out": 2, "bias": True,
               "weight_type": wide.to_dict(), "bias_type": wide.to_dict()}]
    net = QKerasNetwork(layers, 64)
    with torch.no_grad():
        net.body[1].weight.fill_(100.0)
        net.body[1].bias.fill_(0.5)
    assert net.float32_exact is False
    path = export_qkeras(net, tmp_path / "wide.h5")
    with pytest.raises(UnsupportedLayerError, match=r"layer 'fc1' \(Dense\): its accumulator can exceed float32"):
        load_qkeras_network(path)


def test_export_refuses_types_qkeras_cannot_express() -> None:
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    w8 = {"width": 8, "integer": 1}
    with torch.no_grad():
        for m in (mlp[0], mlp[2]):
            m.weight.copy_(FixedType(8, 1).quantize(m.weight))
            m.bias.copy_(FixedType(8, 1).quantize(m.bias))
    rec = {"input": "ap_fixed<10,4,AP_RND_CONV,AP_SAT>",
           "layers": {"0": {"weight": w8, "bias": w8, "result": "ap_fixed<16,6>"}, "2": {"weight": w8, "bias": w8}}}
    with pytest.raises(UnsupportedLayerError, match=r"ap_fixed<16,6> has no QKeras equivalent"):
        export_qkeras(network_from_precision(mlp, rec), "unused.h5")
    with pytest.raises(UnsupportedLayerError, match=r"'1' \(Tanh\) has no exact QKeras equivalent"):
        network_from_precision(nn.Sequential(nn.Linear(3, 4), nn.Tanh()), rec)


def test_plain_mlp_with_precision_record_exports_exactly(tmp_path) -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    wt = FixedType(8, 1, True, "RND_CONV", "SAT")
    with torch.no_grad():
        for m in (mlp[0], mlp[2]):
            m.weight.copy_(wt.quantize(m.weight))
            m.bias.copy_(wt.quantize(m.bias))
    in_t = FixedType(10, 4, True, "RND_CONV", "SAT")
    act_t = FixedType(8, 3, False, "RND_CONV", "SAT")
    rec = {"input": in_t.to_dict(), "layers": {
        "0": {"weight": wt.to_dict(), "bias": wt.to_dict(), "result": "ap_fixed<40,20,AP_RND_CONV,AP_SAT>"},
        "1": {"result": act_t.to_dict()},
        "2": {"weight": wt.to_dict(), "bias": wt.to_dict()}}}
    net = network_from_precision(mlp, rec)
    # the 40-bit result type holds the exact accumulator: dropped; ReLU + unsigned cast = quantized_relu
    assert [e["op"] for e in net.layers] == ["quant", "dense", "quant", "dense"]
    assert net.body[2].qkeras == "quantized_relu"
    x = torch.randn(300, 5) * 4
    ref = mlp[2](act_t.quantize(torch.relu(mlp[0](in_t.quantize(x)))))
    assert torch.equal(net(x), ref)
    back = load_qkeras_network(export_qkeras(net, tmp_path / "mlp.h5"))
    assert torch.equal(back(x), ref)


def test_firmware_graph_of_an_imported_network_emulates_it_exactly(tmp_path, geometry) -> None:
    from simcompress.firmware.graph import build_graph

    gen = QKerasMLPGenerator.random(geometry, latent_dim=4, hidden=[16], seed=4,
                                    activation_type=FixedType(8, 3, False, "RND_CONV", "SAT"))
    net = load_qkeras_network(export_qkeras(gen, tmp_path / "g.h5"))
    plain, rec, sizes = firmware_network(net, latent_dim=4)
    graph = build_graph(plain, rec, sizes)
    x = torch.randn(400, 5, generator=torch.Generator().manual_seed(2)) * 3
    xd = x.double().numpy()
    emu = graph.emulate([xd[:, :4], xd[:, 4:]])
    with torch.no_grad():
        assert np.array_equal(emu, net(x).double().numpy())


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # a random-weight model's degenerate showers
def test_imported_generator_goes_through_the_validation_gate(tmp_path, geometry) -> None:
    """The compression pipeline's fidelity gate runs unchanged on an imported QKeras generator."""
    from simcompress.showers.reference import simulate
    from simcompress.validation.gate import load_gate_spec, make_model_gate

    spec = load_gate_spec("loose")
    gate = make_model_gate(simulate(geometry, 600, seed=0, progress=False), spec, n_events=spec.min_events, seed=0)
    gen = QKerasMLPGenerator.random(geometry, latent_dim=4, hidden=[16, 32], seed=1)
    imported = load_qkeras_generator(export_qkeras(gen, tmp_path / "gen.h5"))
    res, res_orig = gate(imported), gate(gen)
    assert res.metrics == res_orig.metrics and res.passed == res_orig.passed
    checks = res.metrics["checks"]
    assert len(checks) > 10
    # an untrained network is not a calorimeter simulation: the gate must say so
    assert not res.passed


def test_compressed_fixed_point_generator_exports_exactly(tmp_path, geometry, make_student) -> None:
    from simcompress.firmware.graph import build_graph

    model = make_student(geometry)
    path = export_qkeras(model, tmp_path / "student.h5")
    net = load_qkeras_network(path)
    z = torch.randn(500, 6, generator=torch.Generator().manual_seed(1)) * 2
    c = torch.rand(500, 1, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        want = model.network(z, c)
        assert torch.equal(net(z, c), want)
    # and the firmware graph of the re-imported network is the compressed model's arithmetic
    plain, rec, sizes = firmware_network(net, latent_dim=6)
    emu = build_graph(plain, rec, sizes).emulate([z.double().numpy(), c.double().numpy()])
    assert np.array_equal(emu, want.double().numpy())
    with h5py.File(path) as f:
        meta = json.loads(f.attrs["simcompress"])
    assert meta["source_kind"] == "mlp" and meta["latent_dim"] == 6


def test_export_refuses_rounding_qkeras_lacks(geometry, make_student) -> None:
    model = make_student(geometry, rounding="RND")
    with pytest.raises(UnsupportedLayerError, match=r"ap_fixed<10,\d+,AP_RND,AP_SAT> has no QKeras equivalent.*rounding: RND_CONV"):
        export_qkeras(model, "unused.h5")
    with pytest.raises(UnsupportedLayerError, match="no fixed-point network"):
        export_qkeras(nn.Sequential(nn.Linear(2, 2)), "unused.h5")


def test_negative_integer_bits(tmp_path) -> None:
    """QKeras 0.9.0 cannot run quantizers with integer < 0: weights are widened (same grid), casts refused."""
    tiny_w = FixedType(6, -1, True, "RND_CONV", "SAT")  # values in [-0.25, 0.25), step 2**-7
    in_t = FixedType(8, 3, True, "RND_CONV", "SAT")
    layers = [{"op": "quant", "name": "in_q", "type": in_t.to_dict(), "qkeras": "quantized_bits"},
              {"op": "dense", "name": "fc1", "in": 3, "out": 2, "bias": True,
               "weight_type": tiny_w.to_dict(), "bias_type": tiny_w.to_dict()}]
    net = QKerasNetwork(layers, 3)
    with torch.no_grad():
        net.body[1].weight.copy_(tiny_w.quantize(torch.randn(2, 3)))
        net.body[1].bias.copy_(tiny_w.quantize(torch.randn(2)))
    back = load_qkeras_network(export_qkeras(net, tmp_path / "w.h5"))
    assert back.layers[1]["weight_type"]["integer"] == 1 and back.layers[1]["weight_type"]["width"] == 8
    x = torch.randn(50, 3) * 3
    assert torch.equal(back(x), net(x))
    bad = QKerasNetwork([*layers, {"op": "quant", "name": "out_q", "type": FixedType(8, 0, True, "RND_CONV", "SAT").to_dict()}], 3)
    bad.body[1].load_state_dict(net.body[1].state_dict())
    with pytest.raises(UnsupportedLayerError, match=r"layer 'out_q'.*negative QKeras 'integer' \(-1\)"):
        export_qkeras(bad, tmp_path / "bad.h5")


def test_compress_methods_and_compressed_bundles_work_on_an_imported_generator(tmp_path, geometry) -> None:
    from simcompress.compress import compress, config_from_dict
    from simcompress.compress.bundle import load_compressed, save_compressed
    from simcompress.generators import build_generator

    gen = load_qkeras_generator(export_qkeras(QKerasMLPGenerator.random(geometry, latent_dim=4, hidden=[16], seed=6),
                                              tmp_path / "g.h5"))
    cfg = config_from_dict({"method": "magnitude_prune", "sparsity": 0.5})
    res = compress(gen, cfg)
    w = res.model.network.body[1].weight
    assert 0.4 <= float((w == 0).float().mean()) <= 0.6
    save_compressed(res.model, gen.config_dict(), [cfg.to_dict()], res.report(), tmp_path / "pruned")
    back = load_compressed(tmp_path / "pruned", builder=build_generator)
    e = torch.tensor([1e3, 1e5, 3e6])
    assert torch.equal(back.sample(e, torch.Generator().manual_seed(0)), res.model.sample(e, torch.Generator().manual_seed(0)))


def test_batch_normalization_exact_or_refused(tmp_path) -> None:
    in_t = FixedType(6, 3, True, "RND_CONV", "SAT")
    w_t = FixedType(4, 1, True, "RND_CONV", "SAT")
    layers = [{"op": "quant", "name": "in_q", "type": in_t.to_dict(), "qkeras": "quantized_bits"},
              {"op": "dense", "name": "fc1", "in": 3, "out": 4, "bias": True, "weight_type": w_t.to_dict(),
               "bias_type": w_t.to_dict()},
              {"op": "bn", "name": "bn", "features": 4, "eps": 2.0**-10}]
    net = QKerasNetwork(layers, 3)
    eps = 2.0**-10
    with torch.no_grad():
        net.body[1].weight.copy_(w_t.quantize(torch.randn(4, 3)))
        net.body[1].bias.copy_(w_t.quantize(torch.randn(4)))
        bn = net.body[2]
        bn.running_var.copy_(torch.tensor([1 - eps, 4 - eps, 0.25 - eps, 16 - eps]))
        bn.running_mean.copy_(torch.tensor([0.25, -0.5, 1.125, 0.0]))
        bn.weight.copy_(torch.tensor([1.5, -0.75, 0.5, 1.0]))
        bn.bias.copy_(torch.tensor([0.25, 0.0, -1.0, 0.5]))
    assert net.float32_exact is True
    back = load_qkeras_network(export_qkeras(net, tmp_path / "bn.h5"))
    x = torch.randn(200, 3) * 4
    with torch.no_grad():
        y = back(x)
        # exact reference in float64: gamma * (x - mean) / sqrt(var + eps) + beta
        h = net.body[1](in_t.quantize(x)).double()
        ref = (h - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + eps) * bn.weight.double() + bn.bias.double()
    assert torch.equal(y.double(), ref)
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([0.7, 1.3, 2.1, 0.9]))
    assert net.float32_exact is False
    with pytest.raises(UnsupportedLayerError, match=r"layer 'bn' \(BatchNormalization\).*not a power of 4"):
        load_qkeras_network(export_qkeras(net, tmp_path / "bn_bad.h5"))
