"""The torch side of an ONNX import: :class:`OnnxNetwork`, the ONNX Runtime check, :func:`import_onnx`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from .convert import convert_onnx

__all__ = ["OnnxNetwork", "compare_with_onnxruntime", "import_onnx"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


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
    conv: Any  # the ConvNd classes take an int or a tuple per dimension
    if t == "Linear":
        return nn.Linear(spec["in"], spec["out"], bias=spec["bias"])
    if t.startswith("ConvTranspose"):
        nd = int(t[-2])
        conv = _CONVT[nd]
        return conv(spec["in"], spec["out"], tuple(spec["kernel"]), stride=tuple(spec["stride"]), padding=tuple(spec["padding"]),
                          output_padding=tuple(spec["output_padding"]), dilation=tuple(spec["dilation"]), groups=spec["groups"], bias=spec["bias"])
    if t.startswith("Conv"):
        nd = int(t[-2])
        conv = _CONV[nd]
        return conv(spec["in"], spec["out"], tuple(spec["kernel"]), stride=tuple(spec["stride"]), padding=tuple(spec["padding"]),
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
    from ...showers.geometry import Geometry
    from ..external import (
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
    lo, hi = energy_range_mev or DEFAULT_ENERGY_RANGE_MEV
    gen = ExternalGenerator(geo, spec, (lo, hi))
    net: Any = gen.network.inner if mode == "concat" else gen.network
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
    from ..external import check_generator

    check_generator(gen)
    return gen, check
