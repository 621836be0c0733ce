"""Fixtures for the QKeras interop tests.

The TensorFlow side (QKeras 0.9.0, TF 2.14.1, hls4ml's Keras route) runs once per session
in the ``.venv-qkeras`` interpreter (``make qkeras-env``) through
:func:`simcompress.interop.tf_env.run_tf_job`; tests needing it skip cleanly without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from simcompress.interop.tf_env import qkeras_python, run_tf_job

LATENT = 4
N_SAMPLES = 400

#: a QKeras generator network trained in TensorFlow: quantized_bits input, symmetric and plain
#: weight quantizers, quantized_relu both as QActivation and as QDense activation, output quantizer
M1_LAYERS = [
    {"type": "QActivation", "name": "in_q", "activation": "quantized_bits(10,3,alpha=1)"},
    {"type": "QDense", "name": "fc1", "units": 16, "kernel_quantizer": "quantized_bits(8,0,alpha=1)",
     "bias_quantizer": "quantized_bits(8,0,alpha=1)"},
    {"type": "QActivation", "name": "relu1", "activation": "quantized_relu(8,3)"},
    {"type": "QDense", "name": "fc2", "units": 12, "kernel_quantizer": "quantized_bits(6,0,symmetric=1,alpha=1)",
     "bias_quantizer": "quantized_bits(8,1,alpha=1)", "activation": "quantized_relu(6,2)"},
    {"type": "QDense", "name": "fc3", "units": 7, "kernel_quantizer": "quantized_bits(8,0,alpha=1)",
     "bias_quantizer": "quantized_bits(8,0,alpha=1)"},
]

#: batch normalization that is exact: variance + epsilon a power of 4, short quantized parameters
BN_LAYERS = [
    {"type": "QActivation", "name": "in_q", "activation": "quantized_bits(6,2,alpha=1)"},
    {"type": "QDense", "name": "fc1", "units": 4, "kernel_quantizer": "quantized_bits(4,0,alpha=1)",
     "bias_quantizer": "quantized_bits(4,0,alpha=1)"},
    {"type": "QBatchNormalization", "name": "bn", "epsilon": 2.0**-10,
     "gamma_quantizer": "quantized_bits(4,1,alpha=1)", "beta_quantizer": "quantized_bits(6,2,alpha=1)",
     "mean_quantizer": "quantized_bits(6,2,alpha=1)", "variance_quantizer": None,
     "moving_variance": [1 - 2.0**-10, 4 - 2.0**-10, 0.25 - 2.0**-10, 16 - 2.0**-10],
     "moving_mean": [0.3, -0.6, 1.1, 0.0], "gamma": [1.5, -0.75, 0.5, 1.0]},
    {"type": "QActivation", "name": "relu1", "activation": "quantized_relu(8,3)"},
    {"type": "QDense", "name": "fc2", "units": 3, "kernel_quantizer": "quantized_bits(8,0,alpha=1)",
     "bias_quantizer": "quantized_bits(8,0,alpha=1)"},
]


def inputs(n: int = N_SAMPLES, n_in: int = LATENT + 1, seed: int = 7) -> np.ndarray:
    """Half on the quantized_bits(10,3) grid, half raw floats (some saturating), float32."""
    rng = np.random.default_rng(seed)
    on_grid = np.clip(np.round(rng.standard_normal((n // 2, n_in)) * 2 * 64), -512, 511) / 64
    raw = rng.standard_normal((n - n // 2, n_in)) * 3
    return np.concatenate([on_grid, raw]).astype(np.float32)


@pytest.fixture(scope="session")
def tf_side(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every TensorFlow-side task once; returns ``{"dir": Path, "results": [...], "export": gen}``."""
    if qkeras_python() is None:
        pytest.skip("no QKeras/TensorFlow interpreter (.venv-qkeras): run `make qkeras-env`")
    from simcompress.interop.generator import QKerasMLPGenerator
    from simcompress.interop.qkeras import export_qkeras
    from simcompress.showers.geometry import Geometry

    wd = tmp_path_factory.mktemp("qkeras_tf")
    np.save(wd / "x.npy", inputs())
    np.save(wd / "x_bn.npy", inputs(n_in=5, seed=3))
    gen = QKerasMLPGenerator.random(Geometry.from_name("ds1-photons"), latent_dim=LATENT, hidden=[16, 32], seed=1)
    export_qkeras(gen, wd / "export.h5")
    student = compressed_mlp_student(Geometry.from_name("ds1-photons"))
    export_qkeras(student, wd / "student.h5")
    np.save(wd / "x_student.npy", inputs(n_in=7, seed=11))
    bn_bad = [dict(layer) for layer in BN_LAYERS]
    bn_bad[2] = {k: v for k, v in bn_bad[2].items() if k != "moving_variance"}
    bn_bad[2]["moving_variance"] = [0.7, 1.3, 2.1, 0.9]
    tasks = [
        {"op": "build", "out": "m1.h5", "n_in": LATENT + 1, "layers": M1_LAYERS, "train": {"epochs": 2}, "seed": 0},
        {"op": "predict", "model": "m1.h5", "x": "x.npy", "out": "y_m1_qkeras.npy"},
        {"op": "hls4ml", "model": "m1.h5", "x": "x.npy", "out": "y_m1_hls_keras.npy", "dir": "hls_m1", "bit_exact": True},
        {"op": "build", "out": "bn.h5", "n_in": 5, "layers": BN_LAYERS, "train": {"epochs": 1}, "seed": 2},
        {"op": "predict", "model": "bn.h5", "x": "x_bn.npy", "out": "y_bn_qkeras.npy"},
        {"op": "build", "out": "bn_inexact.h5", "n_in": 5, "layers": bn_bad, "seed": 2},
        {"op": "build", "out": "auto_po2.h5", "n_in": 5, "seed": 0, "layers": [
            {"type": "QActivation", "name": "in_q", "activation": "quantized_bits(10,3,alpha=1)"},
            {"type": "QDense", "name": "fc1", "units": 4, "kernel_quantizer": "quantized_bits(8,0)",
             "bias_quantizer": "quantized_bits(8,0)"}]},
        {"op": "build", "out": "po2_act.h5", "n_in": 5, "seed": 0, "layers": [
            {"type": "QActivation", "name": "in_q", "activation": "quantized_bits(10,3,alpha=1)"},
            {"type": "QDense", "name": "fc1", "units": 4, "kernel_quantizer": "quantized_bits(8,0,alpha=1)",
             "bias_quantizer": "quantized_bits(8,0,alpha=1)"},
            {"type": "QActivation", "name": "act", "activation": "quantized_po2(4)"}]},
        {"op": "predict", "model": "export.h5", "x": "x.npy", "out": "y_export_qkeras.npy"},
        {"op": "resave", "model": "export.h5", "out": "export_resaved.h5"},
        {"op": "predict", "model": "student.h5", "x": "x_student.npy", "out": "y_student_qkeras.npy"},
        {"op": "build", "out": "seq.h5", "n_in": 5, "seed": 4, "sequential": True, "train": {"epochs": 1}, "layers": [
            {"type": "QActivation", "name": "in_q", "activation": "quantized_bits(8,3,alpha=1)"},
            {"type": "QDense", "name": "fc1", "units": 6, "kernel_quantizer": "quantized_bits(8,0,alpha=1)",
             "bias_quantizer": "quantized_bits(8,0,alpha=1)", "activation": "relu"},
            {"type": "Dropout", "name": "drop"},
            {"type": "QActivation", "name": "r", "activation": "quantized_relu(6,2)"},
            {"type": "QDense", "name": "fc2", "units": 3, "kernel_quantizer": "quantized_bits(8,0,alpha=1)",
             "bias_quantizer": "quantized_bits(8,0,alpha=1)"},
            {"type": "ReLU", "name": "relu_out"}]},
        {"op": "predict", "model": "seq.h5", "x": "x.npy", "out": "y_seq_qkeras.npy"},
        {"op": "build", "out": "float_dense.h5", "n_in": 5, "seed": 4, "sequential": True, "layers": [
            {"type": "QActivation", "name": "in_q", "activation": "quantized_bits(8,3,alpha=1)"},
            {"type": "Dense", "name": "fc1", "units": 6}]},
    ]
    results = run_tf_job(tasks, wd, timeout=600)
    (wd / "results.json").write_text(json.dumps(results))
    return {"dir": Path(wd), "results": results, "export": gen, "latent_dim": LATENT,
            "student": student}


def compressed_mlp_student(geometry: Any, rounding: str = "RND_CONV") -> Any:
    """A distilled MLP student (ReLU, 6 latent + 1 condition) quantized by compress' fixed_point method."""
    from simcompress.compress import compress, config_from_dict
    from simcompress.distill.students import MLPGenerator

    torch.manual_seed(0)
    student = MLPGenerator(geometry, latent_dim=6, width=16, depth=2, activation="relu")
    spec = lambda w: {"width": w, "rounding": rounding, "overflow": "SAT"}
    cfg = config_from_dict({"method": "fixed_point", "input": spec(10), "weight": spec(8), "bias": spec(8),
                            "result": spec(14), "activation": spec(10), "calibration_samples": 256})
    return compress(student, cfg).model


@pytest.fixture
def make_student() -> Any:
    return compressed_mlp_student


@pytest.fixture
def seeded() -> torch.Generator:
    return torch.Generator().manual_seed(0)
