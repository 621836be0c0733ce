"""TensorFlow-side helper for simcompress' QKeras interop (runs in the ``.venv-qkeras`` interpreter).

Standalone script: it imports TensorFlow 2.14 / QKeras 0.9.0 / hls4ml 1.3.0, never
simcompress (whose venv has numpy 2 and torch). Usage::

    .venv-qkeras/bin/python qkeras_tool.py job.json

``job.json`` holds ``{"workdir": dir, "tasks": [...]}``; paths are relative to
``workdir``. Each task is one of

* ``{"op": "build", "out": "m.h5", "n_in": 5, "layers": [...], "train": {...}, "seed": 0}``:
  build a functional QKeras model from layer specs (``{"type": "QActivation", "name": ...,
  "activation": "quantized_bits(10,3,alpha=1)"}``, ``{"type": "QDense", "name": ..., "units": 16,
  "kernel_quantizer": ..., "bias_quantizer": ..., "activation": ...}``, ``{"type":
  "QBatchNormalization", "name": ..., "epsilon": ..., "<param>_quantizer": ...,
  "moving_variance": [...], "moving_mean": [...]}``, ``{"type": "Conv1D", ...}`` for refusal
  tests), optionally train it for ``train.epochs`` on seeded random data, save ``.h5``;
* ``{"op": "predict", "model": "m.h5", "x": "x.npy", "out": "y.npy"}``: ``load_qmodel`` + predict;
* ``{"op": "hls4ml", "model": "m.h5", "x": "x.npy", "out": "y.npy", "dir": "prj", "bit_exact": true}``:
  hls4ml Keras route (Vitis backend, io_parallel), C-simulation outputs; writes
  ``<out>.json`` with the layer precisions hls4ml chose and the timings;
* ``{"op": "resave", "model": "a.h5", "out": "b.h5"}``: load with QKeras, save again with Keras.

A ``result.json`` in ``workdir`` records per-task status and seconds.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _quantizer(spec):
    from qkeras.quantizers import get_quantizer

    return None if spec is None else get_quantizer(spec)


def build(task, wd):
    import numpy as np
    import tensorflow as tf
    from qkeras import QActivation, QBatchNormalization, QDense
    from tensorflow.keras.layers import Conv1D, Input, Reshape
    from tensorflow.keras.models import Model

    from tensorflow.keras.layers import Dense, Dropout, ReLU
    from tensorflow.keras.models import Sequential

    seed = int(task.get("seed", 0))
    tf.keras.utils.set_random_seed(seed)
    x_in = Input((int(task["n_in"]),), name=task.get("input_name", "x"))
    x = x_in
    seq = [x_in] if task.get("sequential") else None
    for spec in task["layers"]:
        t = spec["type"]
        if seq is not None:  # Sequential model (plain Keras layers allowed)
            if t == "QActivation":
                seq.append(QActivation(spec["activation"], name=spec["name"]))
            elif t == "QDense":
                seq.append(QDense(int(spec["units"]), kernel_quantizer=_quantizer(spec.get("kernel_quantizer")),
                                  bias_quantizer=_quantizer(spec.get("bias_quantizer")),
                                  activation=spec.get("activation"), name=spec["name"]))
            elif t == "Dense":
                seq.append(Dense(int(spec["units"]), activation=spec.get("activation"), name=spec["name"]))
            elif t == "ReLU":
                seq.append(ReLU(name=spec["name"]))
            elif t == "Dropout":
                seq.append(Dropout(float(spec.get("rate", 0.1)), name=spec["name"]))
            else:
                raise ValueError(f"unknown layer type {t!r}")
            continue
        if t == "QActivation":
            x = QActivation(spec["activation"], name=spec["name"])(x)
        elif t == "QDense":
            x = QDense(int(spec["units"]), kernel_quantizer=_quantizer(spec.get("kernel_quantizer")),
                       bias_quantizer=_quantizer(spec.get("bias_quantizer")),
                       activation=spec.get("activation"), name=spec["name"])(x)
        elif t == "QBatchNormalization":
            kw = {k: spec.get(k) for k in ("gamma_quantizer", "beta_quantizer", "mean_quantizer", "variance_quantizer")}
            x = QBatchNormalization(epsilon=float(spec.get("epsilon", 1e-3)), name=spec["name"], **kw)(x)
        elif t == "Conv1D":
            x = Reshape((-1, 1))(x)
            x = Conv1D(int(spec["filters"]), int(spec["kernel_size"]), name=spec["name"])(x)
        else:
            raise ValueError(f"unknown layer type {t!r}")
    if seq is not None:
        model = Sequential(seq, name=task.get("model_name", "qkeras_sequential"))
    else:
        model = Model(x_in, x, name=task.get("model_name", "qkeras_generator"))
    tr = task.get("train")
    if tr:
        rng = np.random.default_rng(seed)
        n = int(tr.get("n", 512))
        xs = (rng.standard_normal((n, int(task["n_in"]))) * 2).astype("float32")
        ys = (0.5 * rng.standard_normal((n,) + tuple(model.output_shape[1:]))).astype("float32")
        model.compile("adam", "mse")
        model.fit(xs, ys, batch_size=int(tr.get("batch_size", 64)), epochs=int(tr.get("epochs", 2)), verbose=0, shuffle=False)
    for spec in task["layers"]:
        if spec["type"] == "QBatchNormalization":
            layer = model.get_layer(spec["name"])
            vals = {w.name.split("/")[-1].split(":")[0]: w for w in layer.weights}
            for key in ("gamma", "beta", "moving_mean", "moving_variance"):
                if key in spec:
                    vals[key].assign(np.asarray(spec[key], dtype="float32"))
    model.save(str(wd / task["out"]))
    return {"params": int(model.count_params())}


def predict(task, wd):
    import numpy as np
    from qkeras.utils import load_qmodel

    m = load_qmodel(str(wd / task["model"]), compile=False)
    x = np.load(wd / task["x"]).astype("float32")
    y = m.predict(x, batch_size=4096, verbose=0)
    np.save(wd / task["out"], y)
    return {"shape": list(y.shape)}


def run_hls4ml(task, wd):
    import numpy as np
    from qkeras.utils import load_qmodel

    import hls4ml

    m = load_qmodel(str(wd / task["model"]), compile=False)
    x = np.load(wd / task["x"]).astype("float32")
    t0 = time.perf_counter()
    cfg = hls4ml.utils.config_from_keras_model(m, granularity="name", backend="Vitis")
    hm = hls4ml.converters.convert_from_keras_model(
        m, hls_config=cfg, output_dir=str(wd / task.get("dir", "hls_prj")), backend="Vitis", io_type="io_parallel",
        part="xcvu13p-flga2577-2-e", bit_exact=bool(task.get("bit_exact", True)))
    t1 = time.perf_counter()
    hm.compile()
    t2 = time.perf_counter()
    y = np.asarray(hm.predict(np.ascontiguousarray(x))).reshape(x.shape[0], -1)
    t3 = time.perf_counter()
    np.save(wd / task["out"], y)
    precisions = {}
    for layer in hm.get_layers():
        for name, var in layer.variables.items():
            precisions[f"{layer.name}.{name}"] = str(var.type.precision)
        for name, wvar in layer.weights.items():
            precisions[f"{layer.name}.{name}"] = str(wvar.type.precision)
    info = {"convert_s": t1 - t0, "compile_s": t2 - t1, "predict_s": t3 - t2, "precisions": precisions}
    (wd / (task["out"] + ".json")).write_text(json.dumps(info, indent=1))
    return {"convert_s": t1 - t0, "compile_s": t2 - t1, "predict_s": t3 - t2}


def resave(task, wd):
    from qkeras.utils import load_qmodel

    m = load_qmodel(str(wd / task["model"]), compile=False)
    m.save(str(wd / task["out"]))
    return {}


OPS = {"build": build, "predict": predict, "hls4ml": run_hls4ml, "resave": resave}


def main(argv):
    import warnings

    warnings.filterwarnings("ignore")
    job = json.loads(Path(argv[1]).read_text())
    wd = Path(job["workdir"])
    results = []
    status = 0
    t_import = time.perf_counter()
    import qkeras  # noqa: F401  (fail early, and time the import)
    import tensorflow  # noqa: F401

    results.append({"op": "import", "ok": True, "seconds": time.perf_counter() - t_import})
    for task in job["tasks"]:
        t0 = time.perf_counter()
        try:
            extra = OPS[task["op"]](task, wd)
            results.append({"op": task["op"], "out": task.get("out"), "ok": True, "seconds": time.perf_counter() - t0, **extra})
        except Exception as err:  # noqa: BLE001 - reported back to the caller
            results.append({"op": task["op"], "out": task.get("out"), "ok": False, "error": f"{type(err).__name__}: {err}",
                            "traceback": traceback.format_exc()[-2000:], "seconds": time.perf_counter() - t0})
            if not task.get("may_fail", False):
                status = 1
                break
    (wd / "result.json").write_text(json.dumps(results, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
