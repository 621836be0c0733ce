"""ONNX file -> JSON graph description plus weights (read with the ``onnx`` package).

:func:`convert_onnx` walks the ONNX graph once, maps every supported operator (:data:`SUPPORTED`)
to a layer spec or a tensor operation of :class:`~.network.OnnxNetwork`, and folds the
shape arithmetic of constant subgraphs (``x.view(x.size(0), ...)``) into constants.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...errors import ConfigError, UnsupportedLayerError

__all__ = ["SUPPORTED", "convert_onnx"]

_INT64_MAX = 2**63 - 1
_ACTS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Exp": "exp", "Abs": "abs", "Softplus": "softplus"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
_BATCH = "batch"  # marker of the batch dimension inside a constant-folded shape


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        msg = "ONNX import needs the 'onnx' package: pip install 'simcompress[deploy]'"
        raise ConfigError(msg) from None
    return onnx


def _attrs(node: Any) -> dict[str, Any]:
    onnx = _onnx()
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif hasattr(v, "dims"):  # a tensor attribute (Constant)
            v = onnx.numpy_helper.to_array(v)
        elif isinstance(v, (list, tuple)):
            v = [x.decode() if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _module_name(node: Any, index: int, used: set[str]) -> str:
    """``/fc1/Gemm`` -> ``fc1``; ``/net/net.0/Conv`` -> ``net_0``; unique, valid identifiers."""
    parts = [p for p in (node.name or "").split("/") if p]
    base = parts[-2] if len(parts) >= 2 else f"{node.op_type.lower()}"
    base = re.sub(r"\W", "_", base).strip("_") or f"{node.op_type.lower()}_{index}"
    if base[0].isdigit():
        base = f"layer_{base}"
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


def convert_onnx(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """ONNX file -> (graph description for :class:`~.network.OnnxNetwork`, its state dict)."""
    onnx = _onnx()
    p = Path(path)
    try:
        model = onnx.load(str(p))
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as err:
        msg = f"{p}: not a readable ONNX model ({type(err).__name__}: {err})"
        raise ConfigError(msg) from None
    g = model.graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    ranks: dict[str, int] = {}
    dims: dict[str, list[Any]] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            ranks[vi.name] = len(tt.shape.dim)
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    inputs = [i.name for i in g.input if i.name not in inits]
    if not 1 <= len(inputs) <= 2:
        msg = f"{p}: the graph has {len(inputs)} inputs ({inputs}); a generator takes (z, c) or one concatenated input"
        raise UnsupportedLayerError(msg)
    # value kinds: tensors computed from the inputs ("data"), numpy constants, folded shapes (lists with _BATCH)
    const: dict[str, Any] = dict(inits)
    data: set[str] = set(inputs)
    ops: list[dict[str, Any]] = []
    state: dict[str, Tensor] = {}
    used: set[str] = set()
    n_buf = 0

    def buffer(value: np.ndarray) -> str:
        nonlocal n_buf
        name = f"const_{n_buf}"
        n_buf += 1
        state[name] = torch.from_numpy(np.array(value, dtype=np.float32))
        return name

    def cst(name: str, what: str, node: Any) -> Any:
        if name not in const:
            msg = f"{p}: node {node.name or node.op_type} ({node.op_type}): {what} must be a constant"
            raise UnsupportedLayerError(msg)
        return const[name]

    for i, node in enumerate(g.node):
        op, a = node.op_type, _attrs(node)
        ins = list(node.input)
        out = node.output[0]
        tag = f"{p}: node {node.name or i} ({op})"
        if op == "Constant":
            const[out] = np.asarray(a.get("value", a.get("value_float", a.get("value_ints"))))
            continue
        if not any(x in data for x in ins if x):
            # constant folding of shape arithmetic (Shape/Gather/Unsqueeze/Concat/Cast on constants)
            const[out] = _fold(op, a, [const.get(x) for x in ins], tag)
            continue
        if op == "Shape":
            d = dims.get(ins[0])
            if d is None or any(v is None for v in d[1:]):
                msg = f"{tag}: shape of {ins[0]} not known statically"
                raise UnsupportedLayerError(msg)
            const[out] = [_BATCH] + [int(v) for v in d[1:]]
            continue
        data.add(out)
        rec: dict[str, Any] = {"op": op, "inputs": [x for x in ins if x in data], "output": out}
        if op == "Gemm":
            if ins[0] not in data or a.get("transA", 0):
                msg = f"{tag}: only Gemm(x, W, b) with a constant W is supported"
                raise UnsupportedLayerError(msg)
            w = cst(ins[1], "B", node).astype(np.float32)
            w = (w.T if not a.get("transB", 0) else w) * float(a.get("alpha", 1.0))
            b = cst(ins[2], "C", node).astype(np.float32) * float(a.get("beta", 1.0)) if len(ins) > 2 and ins[2] else None
            name = _module_name(node, i, used)
            rec.update(module=name, spec={"type": "Linear", "in": int(w.shape[1]), "out": int(w.shape[0]), "bias": b is not None})
            state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
            if b is not None:
                state[f"{name}.bias"] = torch.from_numpy(np.broadcast_to(b, (w.shape[0],)).copy())
        elif op == "MatMul":
            w = cst(ins[1], "the second operand", node).astype(np.float32)
            if w.ndim != 2:
                msg = f"{tag}: MatMul weight must be 2-D"
                raise UnsupportedLayerError(msg)
            name = _module_name(node, i, used)
            rec.update(module=name, spec={"type": "Linear", "in": int(w.shape[0]), "out": int(w.shape[1]), "bias": False})
            state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(w.T))
        elif op in ("Conv", "ConvTranspose"):
            w = cst(ins[1], "W", node).astype(np.float32)
            nd = w.ndim - 2
            pads = list(a.get("pads", [0] * (2 * nd)))
            if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or pads[:nd] != pads[nd:]:
                msg = f"{tag}: asymmetric or automatic padding is not supported (pads={pads})"
                raise UnsupportedLayerError(msg)
            if "output_shape" in a:
                msg = f"{tag}: ConvTranspose with output_shape is not supported; export with output_padding"
                raise UnsupportedLayerError(msg)
            group = int(a.get("group", 1))
            b = cst(ins[2], "B", node).astype(np.float32) if len(ins) > 2 and ins[2] else None
            k = list(a.get("kernel_shape", w.shape[2:]))
            if op == "Conv":
                in_c, out_c = w.shape[1] * group, w.shape[0]
            else:
                in_c, out_c = w.shape[0], w.shape[1] * group
            name = _module_name(node, i, used)
            rec.update(module=name, spec={
                "type": f"{op}{nd}d", "in": int(in_c), "out": int(out_c), "kernel": [int(x) for x in k],
                "stride": [int(x) for x in a.get("strides", [1] * nd)], "padding": [int(x) for x in pads[:nd]],
                "dilation": [int(x) for x in a.get("dilations", [1] * nd)], "groups": group, "bias": b is not None,
                **({"output_padding": [int(x) for x in a.get("output_padding", [0] * nd)]} if op == "ConvTranspose" else {}),
            })
            state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
            if b is not None:
                state[f"{name}.bias"] = torch.from_numpy(b.copy())
        elif op == "BatchNormalization":
            if a.get("training_mode", 0):
                msg = f"{tag}: training-mode batch norm is not supported"
                raise UnsupportedLayerError(msg)
            scale, bias, mean, var = (cst(x, "statistics", node).astype(np.float32) for x in ins[1:5])
            rank = ranks.get(ins[0], 4)
            name = _module_name(node, i, used)
            rec.update(module=name, spec={"type": f"BatchNorm{max(rank - 2, 1)}d", "n": int(scale.shape[0]), "eps": float(a.get("epsilon", 1e-5))})
            state.update({f"{name}.weight": torch.from_numpy(scale.copy()), f"{name}.bias": torch.from_numpy(bias.copy()),
                          f"{name}.running_mean": torch.from_numpy(mean.copy()), f"{name}.running_var": torch.from_numpy(var.copy()),
                          f"{name}.num_batches_tracked": torch.tensor(0)})
        elif op in _ACTS or op in ("LeakyRelu", "Elu"):
            name = _module_name(node, i, used)
            if op == "LeakyRelu":
                rec.update(module=name, spec={"type": "LeakyReLU", "alpha": float(a.get("alpha", 0.01))})
            elif op == "Elu":
                rec.update(module=name, spec={"type": "ELU", "alpha": float(a.get("alpha", 1.0))})
            elif op in ("Relu", "Tanh", "Sigmoid", "Softplus"):
                rec.update(module=name, spec={"type": {"Relu": "ReLU"}.get(op, op)})
            else:
                used.discard(name)
                rec.update(fn=_ACTS[op])
        elif op in ("Identity", "Dropout"):
            rec.update(fn="identity")
        elif op == "Reshape":
            shape = cst(ins[1], "shape", node)
            shape = [-1 if v == _BATCH else int(v) for v in (shape.tolist() if isinstance(shape, np.ndarray) else shape)]
            if shape.count(-1) > 1 and shape[0] == -1:
                d = dims.get(ins[0])
                known = [v for v in shape[1:] if v != -1]
                if d is None or any(v is None for v in d[1:]) or shape[1:].count(-1) != 1:
                    msg = f"{tag}: reshape to {shape} needs the input's static shape"
                    raise UnsupportedLayerError(msg)
                shape[shape.index(-1, 1)] = math.prod(d[1:]) // max(math.prod(known), 1)
            rec.update(fn="reshape", shape=[int(v) for v in shape])
        elif op == "Flatten":
            axis = int(a.get("axis", 1))
            if axis != 1:
                msg = f"{tag}: Flatten axis={axis}; only axis=1 is supported"
                raise UnsupportedLayerError(msg)
            rec.update(fn="flatten")
        elif op == "Slice":
            starts = np.asarray(cst(ins[1], "starts", node)).tolist()
            ends = np.asarray(cst(ins[2], "ends", node)).tolist()
            axes = np.asarray(cst(ins[3], "axes", node)).tolist() if len(ins) > 3 and ins[3] else list(range(len(starts)))
            steps = np.asarray(cst(ins[4], "steps", node)).tolist() if len(ins) > 4 and ins[4] else [1] * len(starts)
            s_rank = ranks.get(ins[0])
            if s_rank is None:
                msg = f"{tag}: rank of the sliced tensor unknown"
                raise UnsupportedLayerError(msg)
            sl: list[list[int | None]] = [[None, None, None] for _ in range(s_rank)]
            for s, e, ax, st in zip(starts, ends, axes, steps, strict=False):
                ax = int(ax) % s_rank
                if ax == 0:
                    msg = f"{tag}: slicing the batch dimension is not supported"
                    raise UnsupportedLayerError(msg)
                sl[ax] = [int(s), None if abs(int(e)) >= _INT64_MAX // 2 else int(e), int(st)]
            rec.update(fn="slice", slices=sl)
        elif op == "Concat":
            if not all(x in data for x in ins):
                msg = f"{tag}: concatenation with a constant tensor is not supported"
                raise UnsupportedLayerError(msg)
            rec.update(fn="cat", axis=int(a["axis"]))
        elif op in ("Unsqueeze", "Squeeze"):
            axes = a.get("axes")
            if axes is None and len(ins) > 1 and ins[1]:
                axes = np.asarray(cst(ins[1], "axes", node)).tolist()
            if axes is None:
                msg = f"{tag}: {op} without axes is not supported"
                raise UnsupportedLayerError(msg)
            rec.update(fn=op.lower(), axes=[int(x) for x in axes])
        elif op == "Transpose":
            perm = [int(x) for x in a["perm"]]
            if perm[0] != 0:
                msg = f"{tag}: transposing the batch dimension is not supported"
                raise UnsupportedLayerError(msg)
            rec.update(fn="permute", perm=perm)
        elif op == "Softmax":
            rec.update(fn="softmax", axis=int(a.get("axis", -1)))
        elif op == "Gather":
            idx = np.asarray(cst(ins[1], "indices", node))
            axis = int(a.get("axis", 0))
            if axis == 0 or (ranks.get(ins[0]) is not None and axis % ranks[ins[0]] == 0):
                msg = f"{tag}: gathering along the batch dimension is not supported"
                raise UnsupportedLayerError(msg)
            rec.update(fn="select" if idx.ndim == 0 else "index", axis=axis, index=idx.tolist())
        elif op in _BINARY:
            x0, x1 = ins[0], ins[1]
            if x0 in data and x1 in data:
                rec.update(fn=_BINARY[op])
            else:
                c = cst(x1 if x0 in data else x0, "one operand", node)
                rec.update(fn=_BINARY[op], const=buffer(np.asarray(c)), const_first=x0 not in data)
        elif op in ("Resize", "Upsample"):
            mode = a.get("mode", "nearest")
            if mode != "nearest":
                msg = f"{tag}: mode={mode!r}; only nearest upsampling is supported"
                raise UnsupportedLayerError(msg)
            if op == "Resize":
                ctm = a.get("coordinate_transformation_mode", "half_pixel")
                nm = a.get("nearest_mode", "round_prefer_floor")
                if not (ctm == "asymmetric" and nm == "floor"):
                    msg = f"{tag}: nearest Resize with {ctm}/{nm}; torch's nearest is asymmetric/floor"
                    raise UnsupportedLayerError(msg)
                scales = const.get(ins[2]) if len(ins) > 2 and ins[2] else None
                if scales is None or np.asarray(scales).size == 0:
                    msg = f"{tag}: Resize needs constant scales"
                    raise UnsupportedLayerError(msg)
            else:
                scales = cst(ins[1], "scales", node)
            sc = [float(v) for v in np.asarray(scales).tolist()]
            if sc[:2] != [1.0, 1.0]:
                msg = f"{tag}: scaling the batch or channel dimension is not supported"
                raise UnsupportedLayerError(msg)
            rec.update(fn="upsample", scale=sc[2:])
        else:
            raise UnsupportedLayerError(f"{tag}: ONNX operator {op!r} is not supported; supported: " + ", ".join(SUPPORTED))
        ops.append(rec)
    outputs = [o.name for o in g.output]
    if len(outputs) != 1 or outputs[0] not in data:
        msg = f"{p}: the graph must have one output computed from its inputs, got {outputs}"
        raise UnsupportedLayerError(msg)
    in_sizes = []
    for name in inputs:
        d = dims.get(name)
        if d is None or len(d) != 2 or d[1] is None:
            msg = f"{p}: input {name!r} must be 2-D (batch, features), got shape {d}"
            raise UnsupportedLayerError(msg)
        in_sizes.append(int(d[1]))
    graph = {"format_version": 1, "inputs": inputs, "input_sizes": in_sizes, "output": outputs[0], "ops": ops,
             "buffers": {k: list(v.shape) for k, v in state.items() if k.startswith("const_")}}
    return graph, state


SUPPORTED = ("Gemm", "MatMul", "Conv", "ConvTranspose", "BatchNormalization", "Relu", "LeakyRelu", "Elu", "Tanh", "Sigmoid",
             "Softplus", "Exp", "Abs", "Identity", "Dropout", "Reshape", "Flatten", "Slice", "Concat", "Squeeze", "Unsqueeze",
             "Transpose", "Add", "Sub", "Mul", "Div", "Resize", "Upsample", "Softmax", "Gather", "Constant", "Shape")


def _fold(op: str, a: dict[str, Any], vals: list[Any], tag: str) -> Any:
    """Evaluate an operator on constants (shape arithmetic; ``_BATCH`` stays symbolic)."""
    def arr(v: Any) -> Any:
        return v if isinstance(v, list) else np.asarray(v)

    if any(v is None for v in vals[:1]):
        msg = f"{tag}: input not available for constant folding"
        raise UnsupportedLayerError(msg)
    x = vals[0]
    if op in ("Cast", "Identity"):
        return x
    if op == "Gather":
        idx = np.asarray(vals[1]).tolist()
        seq = x if isinstance(x, list) else np.asarray(x).tolist()
        return [seq[j] for j in idx] if isinstance(idx, list) else seq[idx]
    if op == "Unsqueeze":
        return [x] if not isinstance(x, list) and np.ndim(x) == 0 else (x if isinstance(x, list) else np.expand_dims(x, 0))
    if op == "Concat":
        out: list[Any] = []
        for v in vals:
            out += v if isinstance(v, list) else np.asarray(v).reshape(-1).tolist()
        return out
    if op == "Squeeze":
        return x
    if op in _BINARY and not any(isinstance(v, list) for v in vals):
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](arr(vals[0]), arr(vals[1]))
    if op == "Reshape" and not isinstance(x, list):
        return np.asarray(x).reshape(np.asarray(vals[1]).tolist())
    msg = f"{tag}: cannot fold {op} on constants"
    raise UnsupportedLayerError(msg)
