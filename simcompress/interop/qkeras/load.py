"""Reading a QKeras ``.h5`` model into an exactly equivalent :class:`~.network.QKerasNetwork`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ...compress.fixed_point.types import FixedType
from ...errors import BundleError, UnsupportedLayerError
from .h5 import layer_chain, read_qkeras_h5
from .network import QKerasNetwork, check_exact
from .quantizers import quantizer_to_fixed

__all__ = ["load_qkeras_network"]

_SUPPORTED_LAYERS = ("InputLayer", "QActivation", "Activation", "ReLU", "QDense", "Dense", "QBatchNormalization",
                     "BatchNormalization", "Dropout")


def _activation_entries(act: Any, lname: str, where: str) -> list[dict[str, Any]]:
    """Body entries for a Keras activation (string/dict): quantizer, relu or nothing."""
    if act is None or act == "linear":
        return []
    if act == "relu":
        return [{"op": "relu", "name": lname}]
    if isinstance(act, dict) and act.get("class_name") in ("linear", "relu") and "config" not in act:
        return _activation_entries(act["class_name"], lname, where)
    qt = quantizer_to_fixed(act, where)
    if qt is None:
        return []
    t, kind = qt
    return [{"op": "quant", "name": lname, "type": t.to_dict(), "qkeras": kind}]


def _quantized_weight(arr: np.ndarray, q: Any, where: str) -> tuple[np.ndarray, FixedType | None]:
    qt = quantizer_to_fixed(q, where)
    a = np.asarray(arr, dtype=np.float32)
    if qt is None:
        return a, None
    t, _ = qt
    return t.quantize(a.astype(np.float64)).astype(np.float32), t


def load_qkeras_network(path: str | os.PathLike[str], *, strict: bool = True,
                        input_type: FixedType | None = None) -> QKerasNetwork:
    """Read a QKeras ``.h5`` model into an exactly equivalent :class:`QKerasNetwork`.

    Args:
        path: Keras 2 ``.h5`` file (``model.save("x.h5")``).
        strict: refuse models whose float32 arithmetic is not provably exact (accumulators
            beyond 24 bits, inexact batch normalization, no input quantizer). With ``False``
            such models load and :attr:`QKerasNetwork.float32_exact` says so.
        input_type: grid of the inputs when the model has no input quantizer.

    Raises:
        UnsupportedLayerError: a layer, quantizer or graph shape that cannot be mapped exactly.
        BundleError: the file is not a Keras ``.h5`` model or is incomplete.
    """
    src = str(path)
    config, weights, _ = read_qkeras_h5(path)
    chain, model_name = layer_chain(config, src)
    entries: list[dict[str, Any]] = []
    state: dict[str, np.ndarray] = {}
    n_in: int | None = None
    width: int | None = None
    for layer in chain:
        cls = layer.get("class_name")
        cfg = layer.get("config") or {}
        lname = str(cfg.get("name", layer.get("name")))
        where = f"{src}: layer {lname!r} ({cls})"
        if cls not in _SUPPORTED_LAYERS:
            msg = f"{where} is not supported; supported layers: {', '.join(_SUPPORTED_LAYERS)}"
            raise UnsupportedLayerError(msg)
        if cls == "InputLayer":
            shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
            if not shape or len(shape) != 2:
                msg = f"{where}: input shape {shape!r}; only flat (batch, features) inputs are supported"
                raise UnsupportedLayerError(msg)
            n_in = width = int(shape[1])
            continue
        if width is None:  # Sequential without InputLayer: the first layer carries the shape
            shape = cfg.get("batch_input_shape")
            if not shape or len(shape) != 2:
                msg = f"{where}: cannot infer the flat input size (batch_input_shape {shape!r})"
                raise UnsupportedLayerError(msg)
            n_in = width = int(shape[1])
        if cls in ("QActivation", "Activation"):
            entries += _activation_entries(cfg.get("activation"), lname, f"{where} activation")
        elif cls == "ReLU":
            if cfg.get("max_value") is not None or float(cfg.get("negative_slope", 0.0)) != 0.0 or float(cfg.get("threshold", 0.0)) != 0.0:
                msg = f"{where}: only a plain ReLU (no max_value, negative_slope or threshold) is supported"
                raise UnsupportedLayerError(msg)
            entries.append({"op": "relu", "name": lname})
        elif cls == "Dropout":
            continue  # identity at inference
        elif cls in ("QDense", "Dense"):
            w = weights.get(lname, {})
            if "kernel" not in w:
                msg = f"{where}: kernel weights missing from the file"
                raise BundleError(msg)
            use_bias = bool(cfg.get("use_bias", True))
            if use_bias and "bias" not in w:
                msg = f"{where}: bias weights missing from the file"
                raise BundleError(msg)
            for key in ("kernel_range", "bias_range"):
                if cfg.get(key) is not None:
                    msg = f"{where}: {key} (deprecated) is not supported"
                    raise UnsupportedLayerError(msg)
            kq = cfg.get("kernel_quantizer") if cls == "QDense" else None
            bq = cfg.get("bias_quantizer") if cls == "QDense" else None
            kernel, wt = _quantized_weight(w["kernel"], kq, f"{where} kernel_quantizer")
            if kernel.shape != (width, int(cfg["units"])):
                msg = f"{where}: kernel shape {kernel.shape} does not match ({width}, {cfg['units']})"
                raise BundleError(msg)
            entry: dict[str, Any] = {"op": "dense", "name": lname, "in": width, "out": int(cfg["units"]), "bias": use_bias,
                                     "weight_type": wt.to_dict() if wt else None, "bias_type": None}
            idx = len(entries)
            state[f"body.{idx}.weight"] = kernel.T.copy()
            if use_bias:
                bias, bt = _quantized_weight(w["bias"], bq, f"{where} bias_quantizer")
                entry["bias_type"] = bt.to_dict() if bt else None
                state[f"body.{idx}.bias"] = bias
            entries.append(entry)
            width = int(cfg["units"])
            act = cfg.get("activation")
            for e in _activation_entries(act, lname, f"{where} activation"):
                e["name"] = f"{lname}_activation"
                e["fused_into"] = lname
                entries.append(e)
        else:  # (Q)BatchNormalization
            entries.append(_bn_entry(cfg, weights.get(lname, {}), lname, where, width, state, len(entries)))
    if n_in is None:
        msg = f"{src}: the model has no input layer"
        raise BundleError(msg)
    net = QKerasNetwork(entries, n_in, model_name, input_type=input_type)
    sd = net.state_dict()
    for k, v in state.items():
        sd[k] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
    net.load_state_dict(sd)
    net.source = src
    if strict:
        check_exact(net, src)
    return net


def _bn_entry(cfg: dict[str, Any], w: dict[str, np.ndarray], lname: str, where: str, width: int | None,
              state: dict[str, np.ndarray], idx: int) -> dict[str, Any]:
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in (-1, 1):
        msg = f"{where}: axis {cfg.get('axis')!r}; only the feature axis (-1 or 1) of flat inputs is supported"
        raise UnsupportedLayerError(msg)
    if cfg.get("renorm") or cfg.get("virtual_batch_size"):
        msg = f"{where}: renorm / virtual_batch_size are not supported"
        raise UnsupportedLayerError(msg)
    n = int(width or 0)
    eps = float(np.float32(cfg.get("epsilon", 1e-3)))
    vals = {}
    for key, qkey, default in (("gamma", "gamma_quantizer", 1.0), ("beta", "beta_quantizer", 0.0),
                               ("moving_mean", "mean_quantizer", None), ("moving_variance", "variance_quantizer", None)):
        present = (key != "gamma" or cfg.get("scale", True)) and (key != "beta" or cfg.get("center", True))
        if not present:
            vals[key] = np.full(n, default, dtype=np.float32)
            continue
        if key not in w:
            msg = f"{where}: {key} weights missing from the file"
            raise BundleError(msg)
        vals[key], _ = _quantized_weight(w[key], cfg.get(qkey), f"{where} {qkey}")
    state[f"body.{idx}.weight"] = vals["gamma"]
    state[f"body.{idx}.bias"] = vals["beta"]
    state[f"body.{idx}.running_mean"] = vals["moving_mean"]
    state[f"body.{idx}.running_var"] = vals["moving_variance"]
    return {"op": "bn", "name": lname, "features": n, "eps": eps}
