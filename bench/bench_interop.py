"""QKeras interop: exactness and timings of import, export and the two firmware routes.

A QKeras generator network (input ``quantized_bits(10,3)``, ``QDense`` with
``quantized_bits(8,0,alpha=1)`` weights, ``quantized_relu(8,3)``; 17 -> 64 -> 128 -> 368
in full mode, 17 -> 16 -> 32 -> 368 in quick mode) is trained for 3 epochs in the
``.venv-qkeras`` TensorFlow interpreter, then

* imported into simcompress (``load_qkeras_network``) and compared with QKeras' predictions;
* converted by hls4ml's Keras route (``bit_exact=True``, C simulation) in the TF venv, and for
  contrast with hls4ml's default (``bit_exact`` unset: raw inputs are first cast to ``fixed<16,6>``);
* converted by simcompress.firmware's PyTorch route (``firmware_network`` -> ``build_graph``
  -> hls4ml PyTorch frontend, C simulation) in the main venv;

and a random simcompress ``qkeras-mlp`` generator of the same shape is exported to ``.h5``
and run by QKeras. Reported: fraction of exactly equal outputs and max |diff| for each
pair, and wall times. Inputs: half on the input grid, half raw N(0, 3^2) floats.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _cmp(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a = np.asarray(a, dtype=np.float64).reshape(b.shape)
    return {"fraction_equal": float(np.mean(a == b)), "rows_equal": float(np.mean(np.all(a == b, axis=1))),
            "max_abs_diff": float(np.max(np.abs(a - b)))}


def run(quick: bool = True) -> dict[str, Any]:
    from simcompress.interop.firmware import firmware_network
    from simcompress.interop.generator import QKerasMLPGenerator
    from simcompress.interop.qkeras import export_qkeras, load_qkeras_network
    from simcompress.interop.tf_env import qkeras_python, run_tf_job
    from simcompress.showers.geometry import Geometry

    if qkeras_python() is None:
        return {"skipped": "no .venv-qkeras interpreter (make qkeras-env)"}
    torch.set_num_threads(1)
    hidden = [16, 32] if quick else [64, 128]
    n = 500 if quick else 2000
    latent = 16
    q = "quantized_bits(8,0,alpha=1)"
    layers = [{"type": "QActivation", "name": "in_q", "activation": "quantized_bits(10,3,alpha=1)"}]
    for k, h in enumerate(hidden):
        layers += [{"type": "QDense", "name": f"fc{k + 1}", "units": h, "kernel_quantizer": q, "bias_quantizer": q},
                   {"type": "QActivation", "name": f"relu{k + 1}", "activation": "quantized_relu(8,3)"}]
    layers.append({"type": "QDense", "name": f"fc{len(hidden) + 1}", "units": 368, "kernel_quantizer": q, "bias_quantizer": q})
    out: dict[str, Any] = {"architecture": [latent + 1, *hidden, 368], "n_samples": n}
    with tempfile.TemporaryDirectory(prefix="bench_interop.") as tmp:
        wd = Path(tmp)
        rng = np.random.default_rng(0)
        grid = np.clip(np.round(rng.standard_normal((n // 2, latent + 1)) * 2 * 64), -512, 511) / 64
        x = np.concatenate([grid, rng.standard_normal((n - n // 2, latent + 1)) * 3]).astype(np.float32)
        np.save(wd / "x.npy", x)
        gen = QKerasMLPGenerator.random(Geometry.from_name("ds1-photons"), latent_dim=latent, hidden=hidden, seed=0,
                                        postprocess="energy_fraction")
        t0 = time.perf_counter()
        export_qkeras(gen, wd / "export.h5")
        out["export_s"] = time.perf_counter() - t0
        tasks = [
            {"op": "build", "out": "m.h5", "n_in": latent + 1, "layers": layers, "train": {"epochs": 3, "n": 4096}},
            {"op": "predict", "model": "m.h5", "x": "x.npy", "out": "y_qkeras.npy"},
            {"op": "hls4ml", "model": "m.h5", "x": "x.npy", "out": "y_hls_keras.npy", "dir": "hls", "bit_exact": True},
            {"op": "predict", "model": "export.h5", "x": "x.npy", "out": "y_export.npy"},
            {"op": "hls4ml", "model": "m.h5", "x": "x.npy", "out": "y_hls_default.npy", "dir": "hls_default",
             "bit_exact": False},
        ]
        t0 = time.perf_counter()
        res = run_tf_job(tasks, wd, timeout=1800)
        out["tf_job_s"] = time.perf_counter() - t0
        out["tf_tasks_s"] = {f"{r['op']}:{r.get('out')}": round(r["seconds"], 2) for r in res}
        hls_info = json.loads((wd / "y_hls_keras.npy.json").read_text())
        out["keras_route_compile_s"] = hls_info["compile_s"]
        y_qk = np.load(wd / "y_qkeras.npy").astype(np.float64)
        y_keras_hls = np.load(wd / "y_hls_keras.npy").astype(np.float64)

        t0 = time.perf_counter()
        net = load_qkeras_network(wd / "m.h5")
        out["import_s"] = time.perf_counter() - t0
        with torch.no_grad():
            y_torch = net(torch.from_numpy(x)).double().numpy()
            y_gen = gen.network(torch.from_numpy(x)).double().numpy()
        out["import_vs_qkeras"] = _cmp(y_torch, y_qk)
        out["keras_hls4ml_vs_qkeras"] = _cmp(y_keras_hls, y_qk)
        # hls4ml's default (bit_exact unset) casts raw inputs to fixed<16,6,TRN,WRAP> first: exact only on the grid
        y_default = np.load(wd / "y_hls_default.npy").astype(np.float64)
        half = n // 2
        out["keras_hls4ml_default_vs_qkeras_on_grid_inputs"] = _cmp(y_default[:half], y_qk[:half])
        out["keras_hls4ml_default_vs_qkeras_raw_inputs"] = _cmp(y_default[half:], y_qk[half:])
        out["export_vs_qkeras"] = _cmp(y_gen, np.load(wd / "y_export.npy").astype(np.float64))

        from simcompress.firmware import hls
        from simcompress.firmware.config import FirmwareConfig
        from simcompress.firmware.graph import build_graph

        plain, record, sizes = firmware_network(net, latent_dim=latent)
        graph = build_graph(plain, record, sizes)
        ins = [x[:, :latent].astype(np.float64), x[:, latent:].astype(np.float64)]
        out["emulation_vs_qkeras"] = _cmp(graph.emulate(ins), y_qk)
        t0 = time.perf_counter()
        model = hls.convert(graph, plain, FirmwareConfig(project_name="bench_qkeras"), wd / "fw")
        t1 = time.perf_counter()
        hls.compile_model(model)
        t2 = time.perf_counter()
        y_torch_hls = hls.csim_predict(model, graph, ins)
        out["pytorch_route_convert_s"] = t1 - t0
        out["pytorch_route_compile_s"] = t2 - t1
        out["pytorch_route_vs_keras_route"] = _cmp(y_torch_hls, y_keras_hls)
        out["pytorch_route_vs_qkeras"] = _cmp(y_torch_hls, y_qk)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
