"""The Keras 2 legacy HDF5 format (``model.save("x.h5")``, tf.keras 2.14), read and written with h5py.

This layer knows files and Keras configs only (no fixed-point types, no torch): the root
attribute ``model_config`` (JSON), the weights under ``model_weights/<layer>/<layer>/<weight>:0``
with the ``layer_names`` / ``weight_names`` attributes, the single-path layer chain of a
Sequential or Functional model, and the layer configs an exported file holds. Writes are
atomic (:mod:`simcompress._atomic`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..._atomic import atomic_path
from ...errors import BundleError, UnsupportedLayerError

__all__ = ["KERAS_VERSION", "bn_layer", "dense_layer", "functional_config", "layer_chain", "quant_layer", "read_qkeras_h5",
           "write_keras_h5"]

#: Keras version written into exported files (tf.keras of TensorFlow 2.14, the pinned QKeras stack).
KERAS_VERSION = "2.14.0"


def _attr_str(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def read_qkeras_h5(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Read a Keras 2 ``.h5`` model: ``(model_config, {layer: {weight: array}}, root attrs)``.

    Weight keys are the short names (``kernel``, ``bias``, ``gamma``, ...).
    """
    p = Path(path)
    if p.is_dir():
        msg = (
            f"{p}: a Keras SavedModel directory needs TensorFlow to read; save the model as .h5 "
            "(model.save('model.h5')), which QKeras 0.9.0 also reloads reliably"
        )
        raise BundleError(
            msg
        )
    if not p.is_file():
        msg = f"{p}: no such file"
        raise BundleError(msg)
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        msg = f"{p}: not an HDF5 file ({err})"
        raise BundleError(msg) from None
    with f:
        if "model_config" not in f.attrs:
            msg = f"{p}: no 'model_config' attribute; is this a Keras model saved with model.save('x.h5')?"
            raise BundleError(msg)
        try:
            config = json.loads(_attr_str(f.attrs["model_config"]))
        except json.JSONDecodeError as err:
            msg = f"{p}: 'model_config' is not valid JSON ({err})"
            raise BundleError(msg) from None
        attrs = {k: _attr_str(v) for k, v in f.attrs.items() if k != "model_config" and not isinstance(v, np.ndarray)}
        weights: dict[str, dict[str, np.ndarray]] = {}
        g = f.get("model_weights", f)
        names = [_attr_str(n) for n in g.attrs.get("layer_names", [])]
        for lname in names:
            if lname not in g:
                msg = f"{p}: layer {lname!r} listed in layer_names has no weight group"
                raise BundleError(msg)
            lg = g[lname]
            d: dict[str, np.ndarray] = {}
            for wname in (_attr_str(w) for w in lg.attrs.get("weight_names", [])):
                if wname not in lg:
                    msg = f"{p}: weight {lname}/{wname} is missing"
                    raise BundleError(msg)
                short = wname.rsplit("/", 1)[-1].split(":")[0]
                d[short] = np.asarray(lg[wname][()])
            weights[lname] = d
    return config, weights, attrs


def layer_chain(config: dict[str, Any], source: str) -> tuple[list[dict[str, Any]], str]:
    """Layer configs of a Sequential or single-path Functional model, in order."""
    cls = config.get("class_name")
    body = config.get("config") or {}
    name = str(body.get("name", "qkeras_model"))
    layers = body.get("layers")
    if not isinstance(layers, list):
        msg = f"{source}: model_config has no layer list"
        raise BundleError(msg)
    if cls == "Sequential":
        return layers, name
    if cls not in ("Functional", "Model"):
        msg = f"{source}: model class {cls!r} is not supported; allowed: Sequential, Functional"
        raise UnsupportedLayerError(msg)
    ins = body.get("input_layers") or []
    outs = body.get("output_layers") or []
    if len(ins) != 1 or len(outs) != 1:
        msg = (
            f"{source}: model has {len(ins)} inputs and {len(outs)} outputs; only single-input single-output chains map to a "
            "generator network (concatenate z and the condition into one Input)"
        )
        raise UnsupportedLayerError(
            msg
        )
    by_name = {l["config"]["name"] if "name" not in l else l["name"]: l for l in layers}
    consumers: dict[str, list[str]] = {}
    for l in layers:
        lname = l.get("name", l["config"].get("name"))
        nodes = l.get("inbound_nodes") or []
        srcs = []
        for node in nodes:
            items = node if isinstance(node, list) else node.get("args", [])
            for it in items:
                if isinstance(it, list) and it and isinstance(it[0], str):
                    srcs.append(it[0])
        if len(nodes) > 1 or len(srcs) > 1:
            msg = f"{source}: layer {lname!r} ({l.get('class_name')}) merges {len(srcs)} inputs; only single-path chains are supported"
            raise UnsupportedLayerError(
                msg
            )
        for s in srcs:
            consumers.setdefault(s, []).append(lname)
    order = [ins[0][0]]
    while order[-1] != outs[0][0]:
        nxt = consumers.get(order[-1], [])
        if len(nxt) != 1:
            msg = f"{source}: layer {order[-1]!r} feeds {len(nxt)} layers; only single-path chains are supported"
            raise UnsupportedLayerError(
                msg
            )
        order.append(nxt[0])
    return [by_name[n] for n in order], name


def quant_layer(name: str, q: dict[str, Any]) -> dict[str, Any]:
    act = {"class_name": q["class_name"], "config": q["config"], "__passive_serialization__": True}
    return {"class_name": "QActivation", "config": {"name": name, "trainable": True, "dtype": "float32", "activation": act}}


def dense_layer(name: str, units: int, use_bias: bool, kq: dict[str, Any] | None, bq: dict[str, Any] | None,
                 activation: Any) -> dict[str, Any]:
    cfg = {
        "name": name, "trainable": True, "dtype": "float32", "units": int(units), "activation": activation,
        "use_bias": bool(use_bias),
        "kernel_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None},
        "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None},
        "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
        "kernel_constraint": None, "bias_constraint": None,
        "kernel_quantizer": kq, "bias_quantizer": bq, "kernel_range": None, "bias_range": None,
    }
    return {"class_name": "QDense" if (kq or bq) else "Dense", "config": cfg}


def bn_layer(name: str, eps: float) -> dict[str, Any]:
    cfg = {"name": name, "trainable": True, "dtype": "float32", "axis": [1], "momentum": 0.99, "epsilon": eps,
           "center": True, "scale": True, "beta_quantizer": None, "gamma_quantizer": None, "mean_quantizer": None,
           "variance_quantizer": None}
    return {"class_name": "QBatchNormalization", "config": cfg}


def _write_bytes_list(obj: h5py.Group | h5py.File, key: str, names: list[str]) -> None:
    if names:
        obj.attrs[key] = np.array([n.encode("utf-8") for n in names])
    else:
        obj.attrs[key] = np.array([], dtype=np.float64)


def functional_config(name: str, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``model_config`` of a Functional single-path chain: each layer consumes the previous one."""
    for k, layer in enumerate(layers):
        layer["name"] = layer["config"]["name"]
        layer["inbound_nodes"] = [] if k == 0 else [[[layers[k - 1]["config"]["name"], 0, 0, {}]]]
    return {"class_name": "Functional", "config": {
        "name": name, "trainable": True, "layers": layers,
        "input_layers": [[layers[0]["name"], 0, 0]], "output_layers": [[layers[-1]["name"], 0, 0]]}}


def write_keras_h5(path: str | os.PathLike[str], model_config: dict[str, Any],
                   weights: dict[str, list[tuple[str, np.ndarray]]], meta: dict[str, Any] | None = None) -> Path:
    """Write a Keras 2 ``.h5`` model atomically: ``weights[layer]`` are ``(name, float32 array)`` pairs.

    ``meta`` goes into the root attribute ``simcompress`` (JSON), which Keras ignores.
    """
    out = Path(path)
    order = [layer["name"] for layer in model_config["config"]["layers"]]
    with atomic_path(out, fsync=False) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = KERAS_VERSION
        f.attrs["model_config"] = json.dumps(model_config)
        if meta:
            f.attrs["simcompress"] = json.dumps(meta)
        g = f.create_group("model_weights")
        g.attrs["backend"] = "tensorflow"
        g.attrs["keras_version"] = KERAS_VERSION
        _write_bytes_list(g, "layer_names", order)
        for lname in order:
            lg = g.create_group(lname)
            ws = weights.get(lname, [])
            _write_bytes_list(lg, "weight_names", [n for n, _ in ws])
            for wname, arr in ws:
                lg.create_dataset(wname, data=np.asarray(arr, dtype=np.float32))
        tl = g.create_group("top_level_model_weights")
        _write_bytes_list(tl, "weight_names", [])
    return out
