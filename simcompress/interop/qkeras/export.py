"""Writing simcompress fixed-point MLPs as QKeras ``.h5`` files, and mapping precision records to QKeras.

:func:`export_qkeras` writes a :class:`~.network.QKerasNetwork` (or a generator built on one,
or a model quantized by ``compress``' ``fixed_point`` method) through the format layer
(:mod:`.h5`); :func:`network_from_precision` builds the network from a plain MLP and its
precision record (:class:`~simcompress.compress.fixed_point.record.PrecisionRecord`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...compress.fixed_point.record import PrecisionRecord, find_precision_network
from ...compress.fixed_point.types import FixedType
from ...errors import ConfigError, UnsupportedLayerError
from .h5 import bn_layer, dense_layer, functional_config, quant_layer, write_keras_h5
from .network import QKerasNetwork
from .quantizers import fixed_to_quantizer

__all__ = ["export_qkeras", "network_from_fixed_point", "network_from_precision"]


def export_qkeras(model: Any, path: str | os.PathLike[str], *, extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write a :class:`QKerasNetwork` (or a generator whose ``network`` is one) as a QKeras ``.h5``.

    ``model`` may also be any generator or module quantized by ``compress``' ``fixed_point``
    method (:func:`network_from_fixed_point`). The file loads with
    ``qkeras.utils.load_qmodel(path, compile=False)`` under TensorFlow 2.14 and computes exactly
    what the network computes. Generator metadata
    (geometry, latent size, energy range, postprocessing) is stored in the root attribute
    ``simcompress`` (JSON), which Keras ignores and :func:`load_qkeras_generator` reads back.

    Raises:
        UnsupportedLayerError: a type without a QKeras equivalent (see :func:`fixed_to_quantizer`).
    """
    meta = dict(extra_metadata or {})
    net = model
    if not isinstance(net, QKerasNetwork):
        inner = getattr(model, "network", None)
        net = inner if isinstance(inner, QKerasNetwork) else network_from_fixed_point(model)
        if hasattr(model, "qkeras_metadata"):
            meta = {**model.qkeras_metadata(), **meta}
        elif all(hasattr(model, a) for a in ("geometry", "latent_dim", "energy_range_mev", "kind")):
            meta = {"kind": "qkeras-mlp", "source_kind": model.kind, "latent_dim": int(model.latent_dim),
                    "energy_range_mev": list(model.energy_range_mev), "geometry": model.geometry.to_dict(),
                    "input_order": "cat(z, c)", **meta}
    layers: list[dict[str, Any]] = [{"class_name": "InputLayer", "config": {
        "batch_input_shape": [None, net.n_in], "dtype": "float32", "sparse": False, "ragged": False, "name": "input"}}]
    weights: dict[str, list[tuple[str, np.ndarray]]] = {"input": []}
    used = {"input"}
    i = 0
    entries = net.layers
    while i < len(entries):
        e = entries[i]
        mod: Any = net.body[i]
        name = e["name"]
        if name in used:
            msg = f"layer name {name!r} appears twice; Keras layer names must be unique"
            raise UnsupportedLayerError(msg)
        if e["op"] == "quant":
            layers.append(quant_layer(name, fixed_to_quantizer(mod.fixed_type, mod.qkeras, f"layer {name!r}")))
            weights[name] = []
        elif e["op"] == "relu":
            layers.append({"class_name": "Activation", "config": {"name": name, "trainable": True, "dtype": "float32",
                                                                  "activation": "relu"}})
            weights[name] = []
        elif e["op"] == "dense":
            wt = FixedType.from_dict(e["weight_type"]) if e.get("weight_type") else None
            bt = FixedType.from_dict(e["bias_type"]) if e.get("bias_type") else None
            w = mod.weight.detach().to(torch.float32).numpy()
            b = mod.bias.detach().to(torch.float32).numpy() if mod.bias is not None else None
            for arr, t, what in ((w, wt, "weight"), (b, bt, "bias")):
                if arr is not None and t is not None and not np.array_equal(t.quantize(arr.astype(np.float64)), arr.astype(np.float64)):
                    msg = f"layer {name!r}: {what} values are not on the grid of {t.to_hls()}"
                    raise UnsupportedLayerError(msg)
            kq = _weight_quantizer(wt, f"layer {name!r} weight")
            bq = _weight_quantizer(bt, f"layer {name!r} bias")
            act: Any = "linear"
            nxt = entries[i + 1] if i + 1 < len(entries) else None
            if nxt is not None and nxt["op"] == "quant" and nxt.get("fused_into") == name:
                cast: Any = net.body[i + 1]
                act = fixed_to_quantizer(cast.fixed_type, cast.qkeras, f"layer {nxt['name']!r}")
                i += 1
                used.add(nxt["name"])
            layers.append(dense_layer(name, e["out"], b is not None, kq, bq, act))
            ws = [(f"{name}/kernel:0", np.ascontiguousarray(w.T))]
            if b is not None:
                ws.append((f"{name}/bias:0", b))
            weights[name] = ws
        elif e["op"] == "bn":
            layers.append(bn_layer(name, float(e["eps"])))
            weights[name] = [(f"{name}/{k}:0", getattr(mod, attr).detach().to(torch.float32).numpy()) for k, attr in
                             (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                              ("moving_variance", "running_var"))]
        used.add(name)
        i += 1
    return write_keras_h5(path, functional_config(net.model_name, layers), weights, meta)


def _weight_quantizer(t: FixedType | None, where: str) -> dict[str, Any] | None:
    """QKeras quantizer for stored weights: any rounding works (the values are on the grid), only the range matters."""
    if t is None:
        return None
    if t.overflow not in ("SAT", "SAT_SYM") or t.rounding != "RND_CONV":
        t = t.replace(rounding="RND_CONV", overflow="SAT")  # identity on on-grid values
    need = int(t.signed)
    if t.integer < need:  # QKeras cannot run negative 'integer': widen, same grid, same stored values
        t = t.replace(width=t.width + need - t.integer, integer=need)
    return fixed_to_quantizer(t, "quantized_bits", where)


def _chain_modules(module: nn.Module) -> tuple[list[tuple[str, nn.Module]], int]:
    """The module chain of ``forward(*inputs) = chain(cat(inputs))`` (torch.fx), and the number of inputs."""
    import torch.fx

    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as err:
        msg = f"{type(module).__name__}: torch.fx cannot trace the network ({err})"
        raise UnsupportedLayerError(msg) from None
    modules = dict(module.named_modules())
    chain: list[tuple[str, nn.Module]] = []
    placeholders: list[Any] = []
    cur = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            placeholders.append(node)
            cur = node if len(placeholders) == 1 else None
        elif node.op == "call_function" and node.target in (torch.cat, torch.concat):
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            if list(node.args[0]) != placeholders or dim not in (1, -1) or chain:
                msg = f"{node.name}: only a torch.cat of all inputs (dim=1) at the start is supported"
                raise UnsupportedLayerError(msg)
            cur = node
        elif node.op == "call_module" and cur is not None and node.args[0] is cur:
            chain.append((str(node.target), modules[str(node.target)]))
            cur = node
        elif node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu) and node.args[0] is cur:
            chain.append((node.name, nn.ReLU()))
            cur = node
        elif node.op == "output" and node.args[0] is cur:
            continue
        else:
            msg = (
                f"{node.name}: {node.op} {getattr(node.target, '__name__', node.target)!s} is not part of a single "
                "Linear/ReLU chain; QKeras export supports feed-forward MLPs only"
            )
            raise UnsupportedLayerError(
                msg
            )
    return chain, len(placeholders)


def network_from_precision(module: nn.Module, precision: PrecisionRecord | dict[str, Any],
                           name: str = "simcompress_mlp") -> QKerasNetwork:
    """Build a :class:`QKerasNetwork` from a fixed-point MLP and its ``compress`` precision record.

    ``module`` computes ``chain(cat(inputs))`` (or ``chain(x)``) with ``nn.Linear``, ``nn.ReLU``
    (``nn.LeakyReLU(0)``), ``nn.Identity`` (folded batch norm) and ``nn.Dropout`` modules;
    ``precision`` is the record of the ``fixed_point`` method (a
    :class:`~simcompress.compress.fixed_point.record.PrecisionRecord` or its JSON form
    ``{"input": type, "layers": {module_name: {"weight", "bias", "result"}}}``, types as dicts
    or ``ap_fixed<...>`` strings). Weights must lie on their grids (a parametrized ``Linear``
    returns its quantized weight). Each ``result`` cast becomes a QKeras quantizer, so it must
    round half to even and saturate (``RND_CONV`` + ``SAT``/``SAT_SYM``; set ``rounding: RND_CONV``
    in the ``fixed_point`` config); a cast that can never round or overflow (it holds the exact
    accumulator) is dropped.

    Raises:
        UnsupportedLayerError: another layer type, or a type QKeras cannot express.
    """
    def ftype(v: Any, where: str) -> FixedType | None:
        if v is None:
            return None
        if isinstance(v, FixedType):
            return v
        try:
            return FixedType.from_dict(v, source=where)
        except ConfigError as err:
            raise UnsupportedLayerError(str(err)) from None

    if isinstance(precision, PrecisionRecord):
        precision = precision.to_dict()
    if not isinstance(precision, dict) or "input" not in precision:
        msg = "network_from_precision: the precision record needs an 'input' type"
        raise UnsupportedLayerError(msg)
    rec_layers = precision.get("layers", {})
    inp = ftype(precision["input"], "precision.input")
    if inp is None:
        msg = "network_from_precision: the precision record needs an 'input' type"
        raise UnsupportedLayerError(msg)
    chain, _ = _chain_modules(module)
    entries: list[dict[str, Any]] = [{"op": "quant", "name": "input_quant", "type": inp.to_dict(), "qkeras": "quantized_bits"}]
    tensors: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    n_in: int | None = None
    for lname, m in chain:
        safe = lname.replace(".", "_")
        rec = rec_layers.get(lname, {})
        rt = ftype(rec.get("result"), f"precision.layers.{lname}.result")
        if isinstance(m, nn.Linear):
            n_in = m.in_features if n_in is None else n_in
            wt, bt = ftype(rec.get("weight"), f"{lname}.weight"), ftype(rec.get("bias"), f"{lname}.bias")
            tensors[len(entries)] = (m.weight.detach().clone(), m.bias.detach().clone() if m.bias is not None else None)
            entries.append({"op": "dense", "name": safe, "in": m.in_features, "out": m.out_features,
                            "bias": m.bias is not None, "weight_type": wt.to_dict() if wt else None,
                            "bias_type": bt.to_dict() if bt else None})
            if rt is not None:
                entries.append({"op": "quant", "name": f"{safe}_result", "type": rt.to_dict(), "qkeras": "quantized_bits",
                                "_optional": True})
        elif isinstance(m, nn.ReLU) or (isinstance(m, nn.LeakyReLU) and float(m.negative_slope) == 0.0):
            if rt is not None:  # relu then an unsigned saturating cast is quantized_relu alone
                entries.append({"op": "relu", "name": safe})
                entries.append({"op": "quant", "name": f"{safe}_quant", "type": rt.to_dict(),
                                "qkeras": "quantized_bits" if rt.signed else "quantized_relu"})
            else:
                entries.append({"op": "relu", "name": safe})
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            continue
        else:
            msg = (
                f"layer {lname!r} ({type(m).__name__}) has no exact QKeras equivalent; supported: Linear, ReLU, "
                "LeakyReLU(0), Identity, Dropout (QKeras' leaky quantized_relu needs a power-of-two slope)"
            )
            raise UnsupportedLayerError(
                msg
            )
    if n_in is None:
        msg = "network_from_precision: the module has no nn.Linear layer"
        raise UnsupportedLayerError(msg)
    # a relu directly followed by an unsigned cast: the cast alone (quantized_relu) is the same function
    merged: list[dict[str, Any]] = []
    for e in entries:
        if (e["op"] == "quant" and merged and merged[-1]["op"] == "relu" and not FixedType.from_dict(e["type"]).signed):
            merged.pop()
        merged.append(e)
    net = _build(merged, n_in, name, inp, tensors, entries)
    # drop result casts that can never round or overflow (they hold the exact accumulator)
    ranges = net._ranges()[0]
    keep = []
    for i, e in enumerate(net.layers):
        acc = ranges[i - 1] if e.get("_optional") else None
        if acc is not None:
            t = FixedType.from_dict(e["type"])
            if acc.frac <= t.frac and t.min_value <= acc.lo and acc.hi <= t.max_value:
                continue
        keep.append(i)
    clean = [{k: v for k, v in e.items() if k != "_optional"} for e in net.layers]
    out = QKerasNetwork([clean[i] for i in keep], n_in, name, input_type=inp)
    with torch.no_grad():
        for new_i, old_i in enumerate(keep):
            out.body[new_i].load_state_dict(net.body[old_i].state_dict())
    return out


def _build(merged: list[dict[str, Any]], n_in: int, name: str, inp: FixedType,
           tensors: dict[int, tuple[torch.Tensor, torch.Tensor | None]], entries: list[dict[str, Any]]) -> QKerasNetwork:
    net = QKerasNetwork(merged, n_in, name, input_type=inp)
    pos = {id(e): i for i, e in enumerate(merged)}
    with torch.no_grad():
        for idx, (w, b) in tensors.items():
            lin: Any = net.body[pos[id(entries[idx])]]
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)
    return net


def network_from_fixed_point(model: nn.Module, name: str = "simcompress_mlp") -> QKerasNetwork:
    """The :class:`QKerasNetwork` of a model quantized by ``compress``' ``fixed_point``/``qat_fixed_point``.

    Raises:
        UnsupportedLayerError: no fixed-point network inside, or a layer/type QKeras cannot express.
    """
    found = find_precision_network(model)
    if found is None:
        msg = (
            f"{type(model).__name__} has no fixed-point network; quantize it first with the 'fixed_point' method "
            "(rounding: RND_CONV, overflow: SAT, as QKeras quantizers)"
        )
        raise UnsupportedLayerError(
            msg
        )
    _, inner, record = found
    return network_from_precision(inner, record, name)
