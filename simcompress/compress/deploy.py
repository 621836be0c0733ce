"""The fastest faithful form of a compressed model: what ``generate``, batch runs and
``compress``'s own throughput figure execute.

A compressed model as the methods leave it computes with fake quantizers, masks and
parametrizations (exact, but no faster than the float model). :func:`deploy` turns a copy of
it into an execution form:

* ``baked``: every parametrization folded into a plain float32 tensor (LoRA merged, masks as
  zeros, quantized weights as their dequantized values); replacement modules are already the
  physically smaller form (structured pruning: smaller ``Linear`` layers; SVD: two small
  ``Linear`` layers; tensor train: core-by-core contraction); input fake-quantizers stay, computed
  in place (:class:`FastActQuant`, the same values).
  Bit-identical to the fake-quantized model up to float rounding order.
* ``torch-int8``: every ``Linear`` whose weight carries a symmetric <= 8-bit
  :class:`~simcompress.compress.parametrizations.FakeQuant` runs through torch's quantized
  engine (``torch.ao.nn.quantized.dynamic.Linear``, fbgemm/x86) with the model's **own** int8
  codes and scales; activations are quantized to uint8 per batch at run time.
* ``onnx-int8``: the baked network exported to ONNX and run by ONNX Runtime with its dynamic
  int8 operators (``quantize_dynamic``, per-channel int8 weights).
* in ``baked`` and ``torch-int8``, a pruned ``Linear`` (mask only) runs as a CSR sparse matrix
  product only when that measures faster than the dense product at the deployment batch.

:func:`choose_form` measures every candidate on the network at the deployment batch (one
process, interleaved, best of ``repeats``), checks each against the fake-quantized model
(max abs difference of the network output, relative to the output's scale) and keeps the
fastest faithful one. The choice is recorded in the bundle (``config.json``
``compression.deploy``) and :func:`~simcompress.compress.bundle.load_compressed` rebuilds
that form at load time (from the stored codes; nothing extra is stored).

Fixed-point (``ap_fixed``) networks keep their exact torch emulation (form ``exact``): no
integer kernel reproduces their per-layer casts, and their firmware and QKeras export read
the quantizer structure.
"""

from __future__ import annotations

import io
import logging
import math
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import ConfigError
from .accounting import _time, sample_rate
from .modules import base_type
from .parametrizations import ActQuant, FakeQuant, Mask, bake, clone_model, parametrizations_of, qrange

__all__ = ["FORMS", "DeployChoice", "FastActQuant", "choose_form", "deploy", "is_deployed", "network_inputs", "sample_rate"]

log = logging.getLogger(__name__)

FORMS = ("exact", "baked", "torch-int8", "onnx-int8")
#: a form is faithful when max |y_form - y_fake_quantized| <= RTOL * max |y_fake_quantized| (network output)
RTOL = 0.05


@dataclass
class DeployChoice:
    """The form chosen for a model and the measurements behind the choice."""

    form: str
    description: str
    batch: int
    threads: int
    rates: dict[str, float] = field(default_factory=dict)  # network forwards x batch per second, per form
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # vs the fake-quantized model, per form
    output_scale: float = 0.0
    sparse_layers: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # form -> why not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- execution modules ------------------------------------------------------------------


class _Deployed:
    """Marker of modules that exist only in a deployed (execution) form; never saved."""


class Int8Linear(nn.Module, _Deployed):
    """A ``Linear`` through torch's quantized engine with given int8 codes and scales."""

    def __init__(self, codes: Tensor, scale: Tensor, bias: Tensor | None, axis: int | None) -> None:
        super().__init__()
        from torch.ao.nn.quantized.dynamic import Linear as QLinear

        out_f, in_f = codes.shape
        self.in_features, self.out_features = in_f, out_f
        with warnings.catch_warnings():  # torch 2.13 announces a future removal of quantized tensor creation
            warnings.simplefilter("ignore", UserWarning)
            q = QLinear(in_f, out_f, bias_=bias is not None, dtype=torch.qint8)
            if axis is None:
                w = torch._make_per_tensor_quantized_tensor(codes.to(torch.int8), float(scale.reshape(-1)[0]), 0)
            else:
                s = scale.reshape(-1).to(torch.float64)
                w = torch._make_per_channel_quantized_tensor(codes.to(torch.int8), s, torch.zeros_like(s, dtype=torch.int64), 0)
            q.set_weight_bias(w, None if bias is None else bias.detach().float().clone())
        self.q = q

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        y = self.q(x.reshape(-1, shape[-1]).float().contiguous())
        return y.reshape(*shape[:-1], self.out_features)


class FastActQuant(nn.Module, _Deployed):
    """A layer's calibrated input fake-quantizer for inference: the values of
    :class:`~simcompress.compress.parametrizations.ActQuant` (``x / s``, round half to even,
    ``+ zp``, clamp, ``- zp``, ``* s``, the same operations in the same order) computed in place
    on one temporary instead of seven fresh tensors; the straight-through rounding
    ``x + (round(x) - x)`` of training equals ``round(x)`` exactly for finite ``x`` (an infinite
    input gives the clamp bound instead of NaN). 4-12x faster on a 10,000 x 512 input here.
    """

    scale: Tensor
    zero_point: Tensor

    def __init__(self, q: ActQuant) -> None:
        super().__init__()
        self.register_buffer("scale", q.scale.detach().clone())
        self.register_buffer("zero_point", q.zero_point.detach().clone())
        self.bits, self.signed = q.bits, q.signed
        self.lo, self.hi = qrange(q.bits, q.signed)

    def forward(self, x: Tensor) -> Tensor:
        s, zp = self.scale.to(x.dtype), self.zero_point.to(x.dtype)
        return (x / s).round_().add_(zp).clamp_(self.lo, self.hi).sub_(zp).mul_(s)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}"


class SparseLinear(nn.Module, _Deployed):
    """A pruned ``Linear`` as a CSR sparse matrix product (only where it measures faster)."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            self.w = weight.detach().to_sparse_csr()

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        y = torch.sparse.mm(self.w, x2.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)


class OrtNetwork(nn.Module, _Deployed):
    """A network run by ONNX Runtime (inputs and output as torch tensors)."""

    def __init__(self, onnx_bytes: bytes, n_inputs: int, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(int(threads), 1)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        if len(self.names) != n_inputs:
            msg = f"ONNX network has {len(self.names)} inputs, expected {n_inputs}"
            raise ConfigError(msg)

    def forward(self, *args: Tensor) -> Tensor:
        feeds = {n: a.detach().float().cpu().contiguous().numpy() for n, a in zip(self.names, args, strict=False)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def is_deployed(model: nn.Module) -> bool:
    """Whether ``model`` holds execution-only modules (then it cannot be saved or compressed further)."""
    return any(isinstance(m, _Deployed) for m in model.modules())


# -- helpers ----------------------------------------------------------------------------


def _is_generator(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("sample", "network", "condition", "latent_dim"))


def _has_fixed_point(model: nn.Module) -> bool:
    for m in model.modules():
        if type(m).__name__ == "FixedPointNetwork":
            return True
        for p in (parametrizations_of(m, "weight") if parametrize.is_parametrized(m) else []):
            if hasattr(p, "ftype"):
                return True
    return False


def _int8_weight(mod: nn.Module) -> FakeQuant | None:
    """The weight's FakeQuant when the layer can run on int8 kernels with its own codes."""
    if base_type(mod) is not nn.Linear or not parametrize.is_parametrized(mod, "weight"):
        return None
    plist = parametrizations_of(mod, "weight")
    fq = plist[-1] if plist and isinstance(plist[-1], FakeQuant) else None
    if fq is None or fq.bits > 8 or not fq.signed or not all(isinstance(p, Mask) for p in plist[:-1]):
        return None
    if bool((fq.zero_point != 0).any()) or fq.axis not in (None, 0):
        return None
    return fq


def _mask_only(mod: nn.Module) -> bool:
    if base_type(mod) is not nn.Linear or not parametrize.is_parametrized(mod, "weight"):
        return False
    plist = parametrizations_of(mod, "weight")
    return bool(plist) and all(isinstance(p, Mask) for p in plist)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    old = parent._modules[child]
    q = getattr(old, "input_quantizer", None)
    if isinstance(q, ActQuant):  # the layer's calibrated input fake-quantizer stays in front of it
        from .parametrizations import attach_input_quantizer

        attach_input_quantizer(new, q)
    parent._modules[child] = new


def network_inputs(model: nn.Module, batch: int, seed: int = 0) -> tuple[Tensor, ...]:
    """Seeded network inputs ``(z, c)`` of a generator at log-uniform energies."""
    gm: Any = model  # a shower generator (duck-typed)
    g = torch.Generator().manual_seed(seed)
    lo, hi = (float(v) for v in getattr(gm, "energy_range_mev", (1e3, 1e6)))
    e = torch.exp(torch.empty(batch).uniform_(math.log(lo), math.log(hi), generator=g))
    z = torch.randn(batch, int(gm.latent_dim), generator=g)
    with torch.no_grad():
        c = gm.condition(e)
    return z, c


def _net(model: nn.Module) -> nn.Module:
    gm: Any = model
    return gm.network if _is_generator(model) else model


def _sparse_wins(dense: nn.Linear, batch: int, min_time: float) -> bool:
    """Whether the CSR product beats the dense one for this layer at this batch (measured)."""
    x = torch.randn(batch, dense.in_features, generator=torch.Generator().manual_seed(3))
    sp = SparseLinear(dense.weight, dense.bias)
    with torch.inference_mode():
        d = max(_time(lambda: dense(x), min_time) for _ in range(2))
        s = max(_time(lambda: sp(x), min_time) for _ in range(2))
    return s > 1.1 * d


# -- the forms --------------------------------------------------------------------------


def deploy(model: nn.Module, form: str, *, sparse_layers: list[str] | tuple[str, ...] = (),
           threads: int | None = None) -> nn.Module:
    """A copy of ``model`` in execution ``form`` (see the module docstring).

    ``sparse_layers``: names (in the network) of pruned ``Linear`` layers to run as CSR products.
    The input is never mutated; the result is in eval mode and cannot be saved again.
    """
    if form not in FORMS:
        msg = f"deploy form {form!r} unknown; allowed: {', '.join(FORMS)}"
        raise ConfigError(msg)
    m = clone_model(model).eval()
    if form == "exact":
        return m
    if _has_fixed_point(m):
        msg = f"deploy form {form!r}: a fixed-point network runs only in the 'exact' form"
        raise ConfigError(msg)
    net = _net(m)
    if form == "torch-int8":
        for name, mod in list(net.named_modules()):
            fq = _int8_weight(mod)
            if fq is None:
                continue
            with torch.no_grad():
                w = mod.parametrizations.weight.original.detach()
                for p in parametrizations_of(mod, "weight")[:-1]:
                    w = p(w)
                codes = fq.codes(w)
                bias = mod.bias.detach() if mod.bias is not None else None
            _replace(net, name, Int8Linear(codes, fq.scale.detach(), bias, fq.axis))
    for _n, mod in list(net.named_modules()):
        if parametrize.is_parametrized(mod):
            bake(mod)
    for name in sparse_layers:
        mod = net.get_submodule(name)
        if type(mod) is not nn.Linear:
            msg = f"deploy: sparse layer {name!r} is a {type(mod).__name__}, not a Linear"
            raise ConfigError(msg)
        _replace(net, name, SparseLinear(mod.weight, mod.bias))
    if form != "onnx-int8":  # the ONNX form exports the stored quantizers' graph as it is
        for mod in list(net.modules()):
            q = mod._modules.get("input_quantizer")
            if isinstance(q, ActQuant):
                mod._modules["input_quantizer"] = FastActQuant(q)
    if form == "onnx-int8":
        extra = _other_entry_points(net)
        if extra:
            msg = (
                f"deploy form 'onnx-int8' replaces the whole network, which also serves {', '.join(extra)}; "
                              "use 'torch-int8' or 'baked'"
            )
            raise ConfigError(msg)
        args = network_inputs(m, 8) if _is_generator(m) else None
        if args is None:
            msg = "deploy form 'onnx-int8' is for shower generators (network(z, c))"
            raise ConfigError(msg)
        onnx_bytes = _onnx_int8(net, args)
        ort_net = OrtNetwork(onnx_bytes, len(args), threads or torch.get_num_threads())
        m.network = ort_net
    for param in m.parameters():
        param.requires_grad_(False)
    m._deploy_form = form  # type: ignore[assignment]
    return m.eval()


def _other_entry_points(net: nn.Module) -> list[str]:
    """Methods besides ``forward`` that callers use on a network (a flow's density direction)."""
    return [a for a in ("inverse", "log_prob", "transform") if callable(getattr(net, a, None))]


def _onnx_fp32(net: nn.Module, args: tuple[Tensor, ...]) -> bytes:
    """The network exported to ONNX (inputs ``x0, x1, ...``, output ``y``, dynamic batch)."""
    names = [f"x{i}" for i in range(len(args))]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, buf, dynamo=False,  # type: ignore[arg-type]  # the stub omits file objects; export takes them
                          input_names=names, output_names=["y"],
                          dynamic_axes={n: {0: "batch"} for n in names})
    return buf.getvalue()


def _onnx_int8(net: nn.Module, args: tuple[Tensor, ...]) -> bytes:
    # dynamic activation quantization: static int8 inputs (quantize_static, calibrated on the model's own
    # latent + condition inputs) measured slower and, with 4,096 calibration showers, unfaithful (bench_deploy.py)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(_onnx_fp32(net, args))
        root = logging.getLogger()
        was, root.disabled = root.disabled, True
        try:
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.disabled = was
        return dst.read_bytes()


def _describe(form: str, model: nn.Module, sparse: list[str]) -> str:
    net = _net(model)
    kinds = []
    names = {type(m).__name__ for m in net.modules()} | {type(p).__name__ for m in net.modules() for p in
                                                         (parametrizations_of(m) if parametrize.is_parametrized(m) else [])}
    if form == "exact":
        return "the fake-quantized model as stored (fixed-point casts emulated in torch)" if _has_fixed_point(model) \
            else "the model as stored (parametrizations evaluated at every call)"
    if form == "torch-int8":
        kinds.append("int8 weights (the model's own codes and scales) through torch's quantized engine "
                     f"({torch.backends.quantized.engine}), uint8 activations quantized per batch")
    elif form == "onnx-int8":
        kinds.append("ONNX Runtime with dynamic int8 operators (MatMulInteger; per-channel int8 weights, activations per batch)")
    else:
        kinds.append("parametrizations folded into plain float32 tensors")
    if "Factorized" in names:
        kinds.append("SVD/Tucker factors as chains of small plain Linear layers")
    if "TTLinear" in names:
        kinds.append("tensor-train layers contracted core by core")
    if "Mask" in names:
        kinds.append(f"pruned weights: {len(sparse)} layer(s) as CSR sparse products (measured faster), the rest dense"
                     if sparse else "pruned weights as zeros in dense tensors (sparse kernels measured slower)")
    if "ActQuant" in names:
        kinds.append("calibrated input fake-quantizers kept")
    return "; ".join(kinds)


def choose_form(model: nn.Module, *, batch: int = 10_000, threads: int | None = None, min_time: float = 0.2,
                repeats: int = 3, seed: int = 0, rtol: float = RTOL, forms: tuple[str, ...] | None = None) -> DeployChoice:
    """Measure the candidate forms of ``model``'s network at ``batch`` and pick the fastest faithful one.

    ``threads``: torch/ONNX Runtime threads while measuring (default: as set). A form is faithful
    when its network output differs from the fake-quantized model's by at most ``rtol`` times
    the output's largest magnitude.
    """
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _choose(model, batch, torch.get_num_threads(), min_time, repeats, seed, rtol, forms)
    finally:
        torch.set_num_threads(old_threads)


def _choose(model: nn.Module, batch: int, threads: int, min_time: float, repeats: int, seed: int, rtol: float,
            forms: tuple[str, ...] | None) -> DeployChoice:
    if _has_fixed_point(model):
        return DeployChoice("exact", _describe("exact", model, []), batch, threads,
                            rejected=dict.fromkeys(FORMS[1:], "fixed-point networks keep their exact emulation"))
    gm: Any = model.eval()
    if _is_generator(model):
        args = network_inputs(model, batch, seed)
    else:
        msg = "choose_form: pass a shower generator (network(z, c))"
        raise ConfigError(msg)
    net: nn.Module = gm.network
    with torch.inference_mode():
        ref = net(*args).detach().float()
    scale = float(ref.abs().max()) or 1.0
    # sparse kernels only for pruned layers where they measure faster
    baked_dense = deploy(model, "baked")
    baked_net: Any = baked_dense
    sparse = [n for n, mod in net.named_modules() if _mask_only(mod)
              and _sparse_wins(baked_net.network.get_submodule(n), batch, min_time / 2)]
    has_int8 = any(_int8_weight(mod) is not None for mod in net.modules())
    if not has_int8 and not sparse and not any(parametrize.is_parametrized(m) for m in net.modules()):
        # plain layers only (e.g. a distilled student): every form computes the same; nothing to measure
        return DeployChoice("baked", _describe("baked", model, []), batch, threads, max_abs_diff={"baked": 0.0},
                            output_scale=scale, rejected={"torch-int8": "no quantized weights", "onnx-int8": "no quantized weights"})
    candidates = list(forms or ("exact", "baked", "torch-int8", "onnx-int8"))
    rejected: dict[str, str] = {}
    built: dict[str, Any] = {}
    for f in candidates:
        if f in ("torch-int8", "onnx-int8") and not has_int8:
            rejected[f] = "no <= 8-bit symmetric quantized Linear weights"
            continue
        if f == "onnx-int8" and _other_entry_points(net):
            rejected[f] = f"the network also serves {', '.join(_other_entry_points(net))} (kept in torch)"
            continue
        try:
            built[f] = deploy(model, f, sparse_layers=sparse if f in ("baked", "torch-int8") else (), threads=threads)
        except ImportError as err:
            rejected[f] = f"not available ({err})"
        except Exception as err:
            rejected[f] = f"{type(err).__name__}: {err}"[:200]
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        for f, m in list(built.items()):
            y = m.network(*args).detach().float()
            diffs[f] = float((y - ref).abs().max())
            if not math.isfinite(diffs[f]) or diffs[f] > rtol * scale:
                rejected[f] = f"not faithful: max abs diff {diffs[f]:.3g} > {rtol} x {scale:.3g}"
                del built[f]
        rates = dict.fromkeys(built, 0.0)
        for m in built.values():  # warm-up
            m.network(*args)
        for _ in range(repeats):
            for f, m in built.items():
                rates[f] = max(rates[f], batch * _time(_network_call(m, args), min_time))
    if not rates:
        raise ConfigError("choose_form: no faithful execution form (" + "; ".join(f"{k}: {v}" for k, v in rejected.items()) + ")")
    # 'exact' (parametrizations evaluated at every call) is measured as the reference; 'baked' computes the
    # same values with strictly less work, so 'exact' is chosen only when nothing else is faithful. An int8
    # form must beat the float form by more than the measurement noise (5 %) to be chosen.
    best = "baked" if "baked" in rates else max(rates, key=lambda k: rates[k])
    for f in ("torch-int8", "onnx-int8"):
        if f in rates and rates[f] > 1.05 * rates[best] and rates[f] >= max(rates[k] for k in ("torch-int8", "onnx-int8") if k in rates):
            best = f
    return DeployChoice(best, _describe(best, model, sparse if best in ("baked", "torch-int8") else []), batch, threads,
                        rates=rates, max_abs_diff=diffs, output_scale=scale,
                        sparse_layers=sparse if best in ("baked", "torch-int8") else [], rejected=rejected)


def _network_call(model: Any, args: tuple[Tensor, ...]) -> Callable[[], Any]:
    return lambda: model.network(*args)
