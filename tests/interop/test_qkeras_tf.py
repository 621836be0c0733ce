"""QKeras interop against live QKeras 0.9.0 / TensorFlow 2.14.1 / hls4ml 1.3.0 (the .venv-qkeras side).

Skipped with a reason when ``.venv-qkeras`` is missing; ``make test`` creates it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from simcompress.errors import UnsupportedLayerError
from simcompress.interop.firmware import firmware_network
from simcompress.interop.generator import load_qkeras_generator
from simcompress.interop.qkeras import load_qkeras_network


def _forward(net, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def test_tf_side_ran(tf_side) -> None:
    res = tf_side["results"]
    assert all(r["ok"] for r in res), [r for r in res if not r["ok"]]
    assert {r["op"] for r in res} >= {"import", "build", "predict", "hls4ml", "resave"}


def test_trained_qkeras_model_imports_bit_exactly(tf_side) -> None:
    d = tf_side["dir"]
    net = load_qkeras_network(d / "m1.h5")
    assert [e["op"] for e in net.layers] == ["quant", "dense", "quant", "dense", "quant", "dense"]
    assert net.float32_exact is True
    x = np.load(d / "x.npy")
    y_qk = np.load(d / "y_m1_qkeras.npy")
    y = _forward(net, x)
    assert y.shape == y_qk.shape == (x.shape[0], 7)
    assert np.array_equal(y, y_qk)  # on-grid and raw (off-grid, saturating) inputs alike
    # the trained model really uses its quantizers (not a trivially constant net)
    assert len(np.unique(y_qk)) > 100


def test_hls4ml_keras_route_matches_qkeras(tf_side) -> None:
    d = tf_side["dir"]
    y_qk = np.load(d / "y_m1_qkeras.npy")
    y_hls = np.load(d / "y_m1_hls_keras.npy")
    assert np.array_equal(y_hls, y_qk)


@pytest.mark.firmware
def test_pytorch_firmware_route_matches_keras_route(tf_side, tmp_path) -> None:
    """Same generator network through hls4ml's QKeras route (TF venv) and simcompress.firmware's PyTorch route."""
    from simcompress.firmware import hls
    from simcompress.firmware.config import FirmwareConfig
    from simcompress.firmware.graph import build_graph

    d, latent = tf_side["dir"], tf_side["latent_dim"]
    gen_net = load_qkeras_network(d / "m1.h5")
    plain, record, sizes = firmware_network(gen_net, latent_dim=latent)
    graph = build_graph(plain, record, sizes)
    x = np.load(d / "x.npy").astype(np.float64)
    ins = [x[:, :latent], x[:, latent:]]
    model = hls.convert(graph, plain, FirmwareConfig(project_name="qkeras_m1"), tmp_path / "prj")
    hls.compile_model(model)
    y_torch_route = hls.csim_predict(model, graph, ins)
    y_keras_route = np.load(d / "y_m1_hls_keras.npy").astype(np.float64)
    y_emulated = graph.emulate(ins)
    agree = float(np.mean(y_torch_route == y_keras_route))
    (tmp_path / "agreement.json").write_text(json.dumps({"fraction_equal": agree,
                                                        "max_abs_diff": float(np.abs(y_torch_route - y_keras_route).max())}))
    assert agree == 1.0
    assert np.array_equal(y_emulated, y_keras_route)


def test_exported_generator_runs_identically_in_qkeras(tf_side) -> None:
    d = tf_side["dir"]
    gen = tf_side["export"]
    x = np.load(d / "x.npy")
    assert np.array_equal(_forward(gen.network, x), np.load(d / "y_export_qkeras.npy"))


def test_pytorch_qkeras_pytorch_round_trip(tf_side) -> None:
    """Export, reload and re-save in TensorFlow, import again: the same weights and outputs, bit for bit."""
    d = tf_side["dir"]
    gen = tf_side["export"]
    back = load_qkeras_generator(d / "export_resaved.h5", gen.geometry, latent_dim=gen.latent_dim,
                                 energy_range_mev=gen.energy_range_mev)
    sd, sd2 = gen.network.state_dict(), back.network.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    e = torch.tensor([300.0, 4096.0, 65536.0, 2.0**21])
    assert torch.equal(gen.sample(e, torch.Generator().manual_seed(3)), back.sample(e, torch.Generator().manual_seed(3)))


def test_exact_batch_normalization_imports(tf_side) -> None:
    d = tf_side["dir"]
    net = load_qkeras_network(d / "bn.h5")
    assert [e["op"] for e in net.layers] == ["quant", "dense", "bn", "quant", "dense"]
    x = np.load(d / "x_bn.npy")
    y_qk = np.load(d / "y_bn_qkeras.npy")
    assert np.array_equal(_forward(net, x), y_qk)
    assert len(np.unique(y_qk)) > 20


def test_inexact_models_from_tensorflow_are_refused(tf_side) -> None:
    d = tf_side["dir"]
    with pytest.raises(UnsupportedLayerError, match=r"layer 'bn' \(BatchNormalization\).*not a power of 4"):
        load_qkeras_network(d / "bn_inexact.h5")
    # QDense(kernel_quantizer=quantized_bits(8,0)) without alpha: QKeras switches it to alpha='auto_po2'
    with pytest.raises(UnsupportedLayerError, match=r"layer 'fc1' \(QDense\) kernel_quantizer: quantized_bits with alpha='auto_po2'"):
        load_qkeras_network(d / "auto_po2.h5")
    with pytest.raises(UnsupportedLayerError, match=r"layer 'act' \(QActivation\) activation: quantizer 'quantized_po2'"):
        load_qkeras_network(d / "po2_act.h5")


def test_compressed_generator_exported_runs_identically_in_qkeras(tf_side) -> None:
    """A generator quantized by compress' fixed_point method, exported: QKeras computes the same numbers."""
    d = tf_side["dir"]
    model = tf_side["student"]
    x = np.load(d / "x_student.npy")
    with torch.no_grad():
        want = model.network(torch.from_numpy(x[:, :6]), torch.from_numpy(x[:, 6:])).numpy()
    assert np.array_equal(np.load(d / "y_student_qkeras.npy"), want)


@pytest.mark.firmware
def test_qkeras_written_generator_to_firmware_with_zero_mismatches(tf_side, tmp_path) -> None:
    """A generator file written by TensorFlow/QKeras goes through simcompress.firmware.export_firmware unchanged."""
    from simcompress.firmware import export_firmware
    from simcompress.firmware.config import FirmwareConfig
    from simcompress.interop.firmware import as_fixed_point_generator

    gen = tf_side["export"]
    imported = load_qkeras_generator(tf_side["dir"] / "export_resaved.h5", gen.geometry, latent_dim=gen.latent_dim,
                                     energy_range_mev=gen.energy_range_mev)
    fp = as_fixed_point_generator(imported)
    e = torch.tensor([1000.0, 3e5])
    assert torch.equal(fp.sample(e, torch.Generator().manual_seed(4)), gen.sample(e, torch.Generator().manual_seed(4)))
    res = export_firmware(fp, FirmwareConfig(project_name="qk_tf"), tmp_path / "fw", n_samples=300)
    assert res.mismatches == 0
    assert res.report["bit_exactness"]["n_outputs"] == 300 * gen.network.n_out


def test_sequential_model_with_plain_keras_layers(tf_side) -> None:
    d = tf_side["dir"]
    net = load_qkeras_network(d / "seq.h5")
    assert [e["op"] for e in net.layers] == ["quant", "dense", "relu", "quant", "dense", "relu"]
    x = np.load(d / "x.npy")
    assert np.array_equal(_forward(net, x), np.load(d / "y_seq_qkeras.npy"))
    # an unquantized float Dense: its float32 products are not exact, refused unless strict=False
    with pytest.raises(UnsupportedLayerError, match=r"layer 'fc1' \(Dense\): its accumulator can exceed float32"):
        load_qkeras_network(d / "float_dense.h5")
    assert load_qkeras_network(d / "float_dense.h5", strict=False).float32_exact is False
