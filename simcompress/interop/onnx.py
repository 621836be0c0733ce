"""ONNX generators in: convert an ONNX graph into plain torch layers, checked against ONNX Runtime.

:func:`convert_onnx` reads an ``.onnx`` file (with the ``onnx`` package) and returns a JSON graph
description plus the weights; :class:`OnnxNetwork` rebuilds the torch network from that
description alone (``Linear``, ``ConvNd``, ``ConvTransposeNd``, ``BatchNormNd`` and activation
modules; reshapes, crops and concatenations as tensor operations), so a bundle holds JSON +
safetensors and no ONNX file or pickle. The forward is a static sequence of operations, so
``torch.fx`` traces it and every compression method sees ordinary layers.

Supported operators (the ones ``torch.onnx.export`` writes for MLP and (transposed-)
convolutional generators): Gemm, MatMul (constant weight), Conv, ConvTranspose,
BatchNormalization, Relu, LeakyRelu, Elu, Tanh, Sigmoid, Softplus, Exp, Abs, Identity, Dropout,
Reshape (constant shape, or the ``Shape -> Gather -> Unsqueeze -> Concat`` chain of
``x.view(x.size(0), ...)``), Flatten, Slice, Concat, Squeeze/Unsqueeze, Transpose, Add / Sub /
Mul / Div, Resize/Upsample (nearest), Softmax, Constant. Anything else raises
:class:`~simcompress.errors.UnsupportedLayerError` naming the node and operator.

:func:`import_onnx` converts, wraps the network as an
:class:`~simcompress.interop.external.ExternalGenerator` and compares the torch network with ONNX
Runtime on seeded random inputs; a max |difference| above ``tolerance`` relative to the largest
|output| refuses the import.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, UnsupportedLayerError

__all__ = ["OnnxNetwork", "compare_with_onnxruntime", "convert_onnx", "import_onnx"]

_INT64_MAX = 2**63 - 1
_ACTS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Exp": "exp", "Abs": "abs", "Softplus": "softplus"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
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
    """ONNX file -> (graph description for :class:`OnnxNetwork`, its state dict)."""
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
            rank = ranks.get(ins[0])
            if rank is None:
                msg = f"{tag}: rank of the sliced tensor unknown"
                raise UnsupportedLayerError(msg)
            sl = [[None, None, None] for _ in range(rank)]
            for s, e, ax, st in zip(starts, ends, axes, steps, strict=False):
                ax = int(ax) % rank
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


class OnnxNetwork(nn.Module):
    """A torch network rebuilt from :func:`convert_onnx`'s graph description (no ONNX needed)."""

    def __init__(self, graph: dict[str, Any]) -> None:
        super().__init__()
        if graph.get("format_version") != 1 or "ops" not in graph:
            msg = "onnx graph description: format_version 1 with 'ops' expected"
            raise ConfigError(msg)
        self.graph = graph
        self.input_names = list(graph["inputs"])
        self.output_name = str(graph["output"])
        for rec in graph["ops"]:
            if "module" in rec:
                self.add_module(rec["module"], _build(rec["spec"]))
        for b, shape in graph.get("buffers", {}).items():
            self.register_buffer(b, torch.zeros(tuple(shape)))

    def forward(self, x0: Tensor, x1: Tensor | None = None) -> Tensor:
        env: dict[str, Tensor] = {self.input_names[0]: x0}
        if len(self.input_names) > 1:
            if x1 is None:
                msg = f"this network takes {len(self.input_names)} inputs"
                raise ConfigError(msg)
            env[self.input_names[1]] = x1
        for rec in self.graph["ops"]:
            xs = [env[n] for n in rec["inputs"]]
            y = getattr(self, rec["module"])(xs[0]) if "module" in rec else _apply(self, rec, xs)
            env[rec["output"]] = y
        return env[self.graph["output"]]


def _build(spec: dict[str, Any]) -> nn.Module:
    t = spec["type"]
    if t == "Linear":
        return nn.Linear(spec["in"], spec["out"], bias=spec["bias"])
    if t.startswith("ConvTranspose"):
        nd = int(t[-2])
        return _CONVT[nd](spec["in"], spec["out"], tuple(spec["kernel"]), stride=tuple(spec["stride"]), padding=tuple(spec["padding"]),
                          output_padding=tuple(spec["output_padding"]), dilation=tuple(spec["dilation"]), groups=spec["groups"], bias=spec["bias"])
    if t.startswith("Conv"):
        nd = int(t[-2])
        return _CONV[nd](spec["in"], spec["out"], tuple(spec["kernel"]), stride=tuple(spec["stride"]), padding=tuple(spec["padding"]),
                         dilation=tuple(spec["dilation"]), groups=spec["groups"], bias=spec["bias"])
    if t.startswith("BatchNorm"):
        return _BN[int(t[-2])](spec["n"], eps=spec["eps"])
    if t == "LeakyReLU":
        return nn.LeakyReLU(spec["alpha"])
    if t == "ELU":
        return nn.ELU(spec["alpha"])
    simple = {"ReLU": nn.ReLU, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "Softplus": nn.Softplus}
    if t in simple:
        return simple[t]()
    msg = f"onnx graph description: unknown layer type {t!r}"
    raise ConfigError(msg)


def _apply(net: OnnxNetwork, rec: dict[str, Any], xs: list[Tensor]) -> Tensor:
    fn = rec["fn"]
    x = xs[0]
    if fn == "identity":
        return x
    if fn in ("tanh", "sigmoid", "exp", "abs"):
        return getattr(torch, fn)(x)
    if fn == "softplus":
        return F.softplus(x)
    if fn == "reshape":
        return x.reshape(*rec["shape"])
    if fn == "flatten":
        return x.flatten(1)
    if fn == "slice":
        return x[tuple(slice(*s) for s in rec["slices"])]
    if fn == "cat":
        return torch.cat(xs, dim=rec["axis"])
    if fn == "unsqueeze":
        for ax in sorted(rec["axes"]):
            x = x.unsqueeze(ax)
        return x
    if fn == "squeeze":
        for ax in sorted(rec["axes"], reverse=True):
            x = x.squeeze(ax)
        return x
    if fn == "permute":
        return x.permute(*rec["perm"])
    if fn == "select":
        return x.select(rec["axis"], rec["index"])
    if fn == "index":
        return x.index_select(rec["axis"], torch.tensor(rec["index"], dtype=torch.long, device=x.device))
    if fn == "softmax":
        return torch.softmax(x, dim=rec["axis"])
    if fn == "upsample":
        return F.interpolate(x, scale_factor=tuple(rec["scale"]), mode="nearest")
    if fn in ("add", "sub", "mul", "div"):
        if "const" in rec:
            c = getattr(net, rec["const"])
            a, b = (c, x) if rec.get("const_first") else (x, c)
        else:
            a, b = xs[0], xs[1]
        return getattr(torch, fn)(a, b)
    msg = f"onnx graph description: unknown operation {fn!r}"
    raise ConfigError(msg)


def compare_with_onnxruntime(path: str | Path, network: nn.Module, input_sizes: list[int], n: int = 256, seed: int = 0,
                             inputs: list[np.ndarray] | None = None) -> dict[str, float]:
    """Max |torch - ONNX Runtime| on seeded standard-normal inputs (and relative to max |ONNX Runtime|)."""
    try:
        import onnxruntime as ort
    except ImportError:
        msg = "the ONNX check needs onnxruntime: pip install 'simcompress[deploy]'"
        raise ConfigError(msg) from None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    if inputs is None:
        rng = np.random.default_rng(seed)
        inputs = [rng.standard_normal((n, s)).astype(np.float32) for s in input_sizes]
    ref = sess.run(None, dict(zip(names, inputs, strict=False)))[0]
    network.eval()
    with torch.no_grad():
        got = network(*[torch.from_numpy(x) for x in inputs]).numpy()
    if got.shape != ref.shape:
        msg = f"{path}: converted network returns shape {got.shape}, ONNX Runtime {ref.shape}"
        raise ConfigError(msg)
    diff = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()) if ref.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return {"max_abs_diff": diff, "max_abs_output": scale, "max_rel_diff": diff / scale if scale > 0 else diff, "n_inputs": len(inputs[0])}


def import_onnx(
    path: str | Path,
    *,
    geometry: Any,
    latent_dim: int,
    condition: Any = None,
    postprocess: Any = None,
    latent: Any = "normal",
    energy_range_mev: tuple[float, float] | None = None,
    tolerance: float = 1e-6,
    n_check: int = 256,
    seed: int = 0,
) -> tuple[Any, dict[str, float]]:
    """Convert ``path`` into an ``ExternalGenerator`` (source ``"onnx"``); returns it and the ONNX Runtime check.

    The input layout follows the graph: two inputs are ``(z, c)``, one is ``cat([z, c], 1)``
    (``latent_dim`` noise features first). Raises ConfigError when the torch network differs from
    ONNX Runtime by more than ``tolerance`` x max |output|.
    """
    from ..showers.geometry import Geometry
    from .external import (
        DEFAULT_ENERGY_RANGE_MEV,
        ConditionSpec,
        ExternalGenerator,
        ExternalSpec,
        LatentSpec,
        PostprocessSpec,
        _as_spec,
    )

    p = Path(path)
    if not p.is_file():
        msg = f"{p}: ONNX file not found"
        raise ConfigError(msg)
    graph, state = convert_onnx(p)
    sizes = graph["input_sizes"]
    cond = _as_spec(condition, ConditionSpec, "condition")
    if len(sizes) == 2:
        mode = "z,c"
        if sizes[0] != latent_dim or sizes[1] != cond.n_cond:
            msg = f"{p}: inputs have {sizes[0]} and {sizes[1]} features; --latent-dim {latent_dim} and {cond.n_cond} condition value(s) expected"
            raise ConfigError(msg)
    else:
        mode = "concat"
        if sizes[0] != latent_dim + cond.n_cond:
            msg = (
                f"{p}: input has {sizes[0]} features, --latent-dim {latent_dim} + {cond.n_cond} condition value(s) = "
                              f"{latent_dim + cond.n_cond} expected"
            )
            raise ConfigError(msg)
    lat = {"distribution": latent} if isinstance(latent, str) else dict(latent)
    spec = ExternalSpec(source="onnx", graph=graph, input=mode, latent=LatentSpec(dim=latent_dim, **lat), condition=cond,
                        postprocess=_as_spec(postprocess, PostprocessSpec, "postprocess"))
    geo = geometry if isinstance(geometry, Geometry) else Geometry.from_name(geometry)
    gen = ExternalGenerator(geo, spec, tuple(energy_range_mev or DEFAULT_ENERGY_RANGE_MEV))
    net = gen.network.inner if mode == "concat" else gen.network
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        msg = f"{p}: converted weights do not fit the rebuilt network (missing {missing[:3]}, unexpected {unexpected[:3]})"
        raise ConfigError(msg)
    gen.eval()
    check = compare_with_onnxruntime(p, net, sizes, n=n_check, seed=seed)
    check["tolerance_rel"] = tolerance
    if not math.isfinite(check["max_rel_diff"]) or check["max_rel_diff"] > tolerance:
        msg = (
            f"{p}: the converted network differs from ONNX Runtime by max |diff| {check['max_abs_diff']:.3g} "
                          f"({check['max_rel_diff']:.3g} relative to max |output| {check['max_abs_output']:.3g}), above {tolerance:g}; refusing"
        )
        raise ConfigError(msg)
    from .external import check_generator

    check_generator(gen)
    return gen, check
