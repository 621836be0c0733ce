"""The compression report: counted sizes and operations, measured speed, honestly labelled.

For the original and the compressed model it gives

* ``params``: weight/bias values the model computes with;
* ``storage_bits``: counted from the actual stored bits of every tensor
  (:mod:`~simcompress.compress.accounting`: bit widths, scales, sparse encodings, factor sizes);
* ``bundle_bytes``: size of the saved bundle on disk (when a path is given) -- *measured*;
* ``macs`` (dense), ``macs_nonzero`` (weights that are zero skipped) and ``bops``
  (``macs_nonzero * weight_bits * input_bits``) for one sample -- *counted* with forward hooks;
* ``throughput``: *measured* end-to-end showers per second of ``sample()`` at ``batch``
  (default 10,000) on ``threads`` torch threads (default 1), teacher and student interleaved in
  one run, best of ``repeats``. The student runs in the **execution form the deploy path picks**
  (:func:`~simcompress.compress.deploy.choose_form`, the form a bundle records and ``generate``,
  batch runs and sweeps execute: baked float, torch int8, ONNX Runtime int8, sparse layers);
  ``deploy`` names the form, its description, the per-form network rates and the max abs
  difference of its network output to the fake-quantized model. A model that is not a shower
  generator is measured on ``forward`` in the ``baked`` form (:func:`deployable`: parametrizations
  folded into plain tensors, physically smaller layers kept);
* ``onnx`` (optional): the deployable network exported to ONNX and run with ONNX Runtime
  in float32 and, when the compressed model has quantized weights, with ONNX Runtime's
  dynamic int8 operators (``MatMulInteger``) -- measured forwards per second and the
  largest output difference to torch.

Every figure says whether it was ``measured`` or ``counted``; nothing is estimated. The report as
Markdown and HTML: :mod:`~simcompress.compress.report_render`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import ConfigError
from .accounting import count_params, sample_rate, storage_bits, storage_table
from .deploy import DeployChoice, choose_form, deploy
from .modules import TTLinear
from .parametrizations import ActQuant, FakeQuant, bake, clone_model, find_parametrization, parametrizations_of
from .report_render import report_html, report_markdown

__all__ = ["compression_report", "count_ops", "deployable", "dir_bytes", "is_generator", "measure_throughput", "pipeline_coverage", "report_html", "report_markdown"]

log = logging.getLogger(__name__)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def is_generator(model: nn.Module) -> bool:
    """Duck-typed shower generator (``sample``, ``network``, ``condition``, ``latent_dim``)."""
    return all(hasattr(model, a) for a in ("sample", "network", "condition", "latent_dim"))


def deployable(model: nn.Module) -> nn.Module:
    """A copy with every parametrization folded into a plain tensor (LoRA merged,
    masks as zeros, fake-quantized weights as their dequantized values); replacement
    modules (smaller layers, factors) and input quantizers stay."""
    m = clone_model(model)
    for _name, mod in list(m.named_modules()):
        if parametrize.is_parametrized(mod):
            bake(mod)
    return m.eval()


def _bits(mod: nn.Module) -> tuple[int, int]:
    wb = 32
    fq = find_parametrization(mod, FakeQuant, "weight") if parametrize.is_parametrized(mod, "weight") else None
    if fq is not None:
        wb = fq.bits
    elif parametrize.is_parametrized(mod, "weight"):
        for p in parametrizations_of(mod, "weight"):
            ft = getattr(p, "ftype", None)  # fixed-point quantizer (simcompress.compress.fixed_point)
            if ft is not None and hasattr(ft, "width"):
                wb = int(ft.width)
    q = getattr(mod, "input_quantizer", None)
    ab = q.bits if isinstance(q, ActQuant) else 32
    return wb, ab


def count_ops(model: nn.Module, run: Callable[[nn.Module], Any], n_samples: int) -> dict[str, Any]:
    """Count MACs per sample with forward hooks during ``run(model)`` over ``n_samples`` samples."""
    totals = {"macs": 0, "macs_nonzero": 0, "bops": 0}
    per_layer: dict[str, dict[str, int]] = {}
    hooks = []

    def hook(name: str) -> Callable[..., None]:
        def f(mod: Any, args: tuple[Tensor, ...], out: Tensor) -> None:  # a layer of the types hooked below
            x = args[0]
            if isinstance(mod, TTLinear):
                rows = x.numel() // mod.in_features
                macs = mod.macs_per_sample() * rows
                nz = macs
            elif isinstance(mod, nn.Linear):
                rows = x.numel() // mod.in_features
                macs = rows * mod.in_features * mod.out_features
                w = mod.weight.detach()
                fixed = getattr(mod, "mask", None)  # e.g. MADE's MaskedLinear: weight * mask in forward
                if isinstance(fixed, Tensor) and fixed.shape == w.shape:
                    w = w * fixed
                nz = rows * int(torch.count_nonzero(w))
            elif isinstance(mod, _CONV_T):  # every input position scatters into k outputs per output channel
                positions = x.numel() // mod.in_channels
                k = math.prod(mod.kernel_size) * (mod.out_channels // mod.groups)
                macs = positions * mod.in_channels * k
                nz = positions * int(torch.count_nonzero(mod.weight.detach()))
            else:  # Conv1d/2d/3d
                k = math.prod(mod.kernel_size) * (mod.in_channels // mod.groups)
                positions = out.numel() // mod.out_channels
                macs = positions * mod.out_channels * k
                nz = positions * int(torch.count_nonzero(mod.weight.detach()))
            wb, ab = _bits(mod)
            rec = per_layer.setdefault(name, {"macs": 0, "macs_nonzero": 0, "bops": 0, "weight_bits": wb, "input_bits": ab})
            rec["macs"] += macs
            rec["macs_nonzero"] += nz
            rec["bops"] += nz * wb * ab

        return f

    for name, mod in model.named_modules():
        if "parametrizations" in name.split("."):
            continue
        if isinstance(mod, (TTLinear, nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, *_CONV_T)):
            hooks.append(mod.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            run(model)
    finally:
        for h in hooks:
            h.remove()
    for rec in per_layer.values():
        for k in totals:
            totals[k] += rec[k]
    out: dict[str, Any] = {k: v / n_samples for k, v in totals.items()}
    out["per_layer"] = {n: {k: (v / n_samples if k in totals else v) for k, v in r.items()} for n, r in per_layer.items()}
    return out


def measure_throughput(fns: dict[str, Callable[[], Any]], items: int, min_time: float = 0.3, repeats: int = 3) -> dict[str, float]:
    """Items per second of each callable, interleaved across ``repeats`` rounds; best round kept."""
    best = dict.fromkeys(fns, 0.0)
    for f in fns.values():  # warm-up
        f()
    for _ in range(repeats):
        for k, f in fns.items():
            n = 0
            t0 = time.perf_counter()
            while True:
                f()
                n += 1
                dt = time.perf_counter() - t0
                if dt >= min_time:
                    break
            best[k] = max(best[k], n * items / dt)
    return best


def dir_bytes(path: str | os.PathLike[str] | None) -> int | None:
    """Total size of the files in a bundle directory (measured on disk)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _has_quantized_weights(model: nn.Module) -> bool:
    for _n, mod in model.named_modules():
        if parametrize.is_parametrized(mod, "weight"):
            for p in mod.parametrizations["weight"]:
                if isinstance(p, FakeQuant) or hasattr(p, "ftype"):
                    return True
    return False


def _session_call(session: Any, feeds: dict[str, Any]) -> Callable[[], Any]:
    return lambda: session.run(None, feeds)


def _onnx_section(orig: nn.Module, comp: nn.Module, comp_param: nn.Module, args: tuple[Tensor, ...], min_time: float, repeats: int) -> dict[str, Any]:
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return {"measured": False, "reason": "onnxruntime not installed (pip install 'simcompress[deploy]')"}
    names = [f"x{i}" for i in range(len(args))]
    feeds = {n: a.detach().cpu().numpy() for n, a in zip(names, args, strict=False)}
    out: dict[str, Any] = {"measured": True, "unit": "forwards/s of the network on a batch", "batch": int(args[0].shape[0])}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for label, mod in (("original_fp32", orig), ("compressed_fp32", comp)):
            path = Path(tmp) / f"{label}.onnx"
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(mod, args, buf, dynamo=False,  # type: ignore[arg-type]  # the stub omits file objects; export takes them
                                  input_names=names, output_names=["y"],
                                  dynamic_axes={n: {0: "batch"} for n in names})
            path.write_bytes(buf.getvalue())
            sessions[label] = (path, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
        if _has_quantized_weights(comp_param):
            qpath = Path(tmp) / "compressed_int8.onnx"
            logging.getLogger().disabled, was = True, logging.getLogger().disabled
            try:
                quantize_dynamic(str(sessions["compressed_fp32"][0]), str(qpath), weight_type=QuantType.QInt8)
            finally:
                logging.getLogger().disabled = was
            sessions["compressed_int8_dynamic"] = (qpath, ort.InferenceSession(str(qpath), providers=["CPUExecutionProvider"]))
        with torch.no_grad():
            ref = comp(*args).detach().cpu().numpy()
        rates = measure_throughput({k: _session_call(s, feeds) for k, (_, s) in sessions.items()}, 1, min_time, repeats)
        for k, (p, s) in sessions.items():
            y = s.run(None, feeds)[0]
            out[k] = {"forwards_per_s": rates[k], "onnx_bytes": p.stat().st_size,
                      "max_abs_diff_vs_torch_compressed": float(abs(y - ref).max()) if k != "original_fp32" else None}
    if "compressed_int8_dynamic" in out:
        out["int8_helps"] = out["compressed_int8_dynamic"]["forwards_per_s"] > out["compressed_fp32"]["forwards_per_s"]
        out["int8_note"] = ("ONNX Runtime dynamic quantization: int8 weights (per-tensor, its own scales) and int8 activations "
                            "quantized per batch at run time; this is not bit-identical to the fake-quantized torch model")
    return out


def _form(model: nn.Module) -> list[str]:
    kinds = set()
    for _n, mod in model.named_modules():
        cname = type(mod).__name__
        if cname == "Factorized":
            kinds.add("factorized layers as chains of plain smaller layers")
        elif cname == "TTLinear":
            kinds.add("tensor-train layers contracted core by core")
        elif isinstance(mod, ActQuant):
            kinds.add("input fake-quantizers executed in float32")
        if parametrize.is_parametrized(mod, "weight"):
            for p in mod.parametrizations["weight"]:
                pn = type(p).__name__
                if pn == "Mask":
                    kinds.add("pruned weights stored as zeros in dense float32 tensors (no sparse kernel)")
                elif pn in ("FakeQuant", "FixedQuantize"):
                    kinds.add("quantized weights stored as their dequantized float32 values")
    return sorted(kinds) or ["plain float32 layers"]


def _threads(n: int | None) -> contextlib.AbstractContextManager[int]:
    """torch threads set to ``n`` (``None``: as set) for the block; yields the count in use."""

    @contextlib.contextmanager
    def ctx() -> Iterator[int]:
        old = torch.get_num_threads()
        if n:
            torch.set_num_threads(int(n))
        try:
            yield torch.get_num_threads()
        finally:
            torch.set_num_threads(old)

    return ctx()


def _generator_speed(teacher: nn.Module, compressed: nn.Module, choice: DeployChoice | None, batch: int,
                     threads: int | None, seed: int, min_time: float, repeats: int) -> tuple[dict[str, float], dict[str, Any], int]:
    """End-to-end ``sample()`` showers/s of ``teacher`` (as given) and of the student in the execution form the
    deploy path picks (``choice``, else :func:`~simcompress.compress.deploy.choose_form` here), one
    interleaved run: ``(rates, deploy section, threads used)``."""
    with _threads(threads) as used:
        if choice is None:
            choice = choose_form(compressed, batch=batch, threads=used, seed=seed, min_time=min_time, repeats=repeats)
        fast = deploy(compressed, choice.form, sparse_layers=choice.sparse_layers, threads=used)
        rates = sample_rate({"original": teacher, "compressed": fast}, batch, seed=seed,
                            min_time=min_time, repeats=repeats)
    section = {**choice.to_dict(), "max_abs_diff_vs_fake_quantized": choice.max_abs_diff.get(choice.form),
               "rates_unit": "network forwards x batch per second", "sample_showers_per_s": rates,
               "measured_batch": batch, "measured_threads": used}
    return rates, section, used


def compression_report(
    original: nn.Module,
    compressed: nn.Module,
    *,
    example: tuple[Tensor, ...] | None = None,
    n_samples: int = 1024,
    batch: int = 10_000,
    threads: int | None = 1,
    choice: DeployChoice | None = None,
    seed: int = 0,
    min_time: float = 0.3,
    repeats: int = 3,
    onnx: bool = True,
    original_bundle: str | os.PathLike[str] | None = None,
    compressed_bundle: str | os.PathLike[str] | None = None,
    pipeline: dict[str, Any] | None = None,
    fidelity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the report dictionary (JSON-ready). See the module docstring for the fields.

    Args:
        example: inputs of ``forward`` for a non-generator model (a batch; its first
            dimension is the sample count). Generators are driven through
            ``sample``/``network`` with seeded energies and noise.
        n_samples: showers per call when counting operations and in the ONNX section (generators).
        batch: showers per ``sample()`` call of the throughput figure (generators).
        threads: torch (and ONNX Runtime) threads while measuring the throughput; ``None``: as set.
        choice: the execution form already chosen for ``compressed`` (a
            :class:`~simcompress.compress.deploy.DeployChoice`, e.g. the one a bundle records);
            without it :func:`~simcompress.compress.deploy.choose_form` chooses at ``batch``.
    """
    if batch < 1 or (threads is not None and threads < 0):
        msg = f"compression_report: batch must be >= 1 and threads >= 0 (or None), got batch={batch}, threads={threads}"
        raise ConfigError(msg)
    gen = is_generator(original)
    orig: Any = original  # a shower generator when ``gen`` (duck-typed: network, condition, sample, latent_dim)
    comp: Any = compressed
    g = torch.Generator().manual_seed(seed)
    dep_o: Any = deployable(original)
    dep_c: Any = deployable(compressed)
    net_args: tuple[Any, ...]
    if gen:
        lo, hi = (float(v) for v in getattr(original, "energy_range_mev", (1e3, 1e6)))
        energies = torch.exp(torch.empty(n_samples).uniform_(math.log(lo), math.log(hi), generator=g))
        z = torch.randn(n_samples, int(orig.latent_dim), generator=g)
        with torch.no_grad():
            c = orig.condition(energies)
        net_args = (z, c)

        def run_net(m: Any) -> Any:  # a student with a narrower latent reads the first coordinates of the same noise
            return m.network(z[:, : int(m.latent_dim)], c)

        rates, deploy_section, used = _generator_speed(dep_o, compressed, choice, batch, threads, seed, min_time, repeats)
        diff = deploy_section["max_abs_diff_vs_fake_quantized"]
        form_lines = [(f"execution form {deploy_section['form']!r}: {deploy_section['description']}; network output max abs "
                       f"diff vs the fake-quantized model {'n/a' if diff is None else f'{diff:.3g}'}")]
        unit = f"showers/s (sample(), batch {batch}, execution form {deploy_section['form']!r})"
    else:
        if example is None:
            msg = (
                "compression_report needs example=(inputs,) for a model that is not a shower generator "
                             "(or wrap the network as one: simcompress.interop.external.wrap_generator, docs/external-generators.md)"
            )
            raise ValueError(msg)
        if choice is not None:
            msg = "compression_report: choice= (an execution form) is for shower generators; a torch module runs baked"
            raise ConfigError(msg)
        net_args = tuple(example)

        def run_net(m: Any) -> Any:
            return m(*net_args)

        fns = {"original": lambda: dep_o(*net_args), "compressed": lambda: dep_c(*net_args)}
        with _threads(threads) as used, torch.inference_mode():
            rates = measure_throughput(fns, int(net_args[0].shape[0]), min_time, repeats)
            y_b, y_q = dep_c(*net_args), comp(*net_args)
            diff = float((y_b - y_q).detach().float().abs().max()) if isinstance(y_b, Tensor) and isinstance(y_q, Tensor) else None
        # execution forms (compress.deploy) are chosen for shower generators only; a module runs baked
        deploy_section = {"form": "baked", "description": "; ".join(_form(compressed)), "max_abs_diff_vs_fake_quantized": diff,
                          "measured_batch": int(net_args[0].shape[0]), "measured_threads": used,
                          "note": "execution forms are chosen for shower generators (compress.deploy); a torch module is measured baked"}
        form_lines = _form(compressed)
        unit = "samples/s (forward())"
    n_batch = int(net_args[0].shape[0])
    sides: dict[str, dict[str, Any]] = {}
    for label, m, bundle in (("original", orig, original_bundle), ("compressed", comp, compressed_bundle)):
        ops = count_ops(m, run_net, n_batch)
        sized: nn.Module = m.network if gen else m  # a generator samples with its network; its critic is not shipped
        bits = storage_bits(sized)
        sides[label] = {
            "params": count_params(sized),
            "storage_bits": bits,
            "storage_bytes": bits / 8,
            "bundle_bytes": dir_bytes(bundle),
            "macs_per_sample": ops["macs"],
            "macs_nonzero_per_sample": ops["macs_nonzero"],
            "bops_per_sample": ops["bops"],
            "throughput": rates[label],
            "layers_ops": ops["per_layer"],
        }
    o, c_ = sides["original"], sides["compressed"]
    report: dict[str, Any] = {
        "model_kind": "shower generator" if gen else "torch module",
        "throughput_unit": unit,
        "threads": used,
        "deploy": deploy_section,
        "deployable_form": form_lines,
        "original": o,
        "compressed": c_,
        "ratios": {
            "storage": o["storage_bits"] / max(c_["storage_bits"], 1),
            "params": o["params"] / max(c_["params"], 1),
            "macs_nonzero": o["macs_nonzero_per_sample"] / max(c_["macs_nonzero_per_sample"], 1),
            "bops": o["bops_per_sample"] / max(c_["bops_per_sample"], 1),
            "throughput": c_["throughput"] / max(o["throughput"], 1e-300),
            "bundle": (o["bundle_bytes"] / c_["bundle_bytes"]) if o["bundle_bytes"] and c_["bundle_bytes"] else None,
        },
        "provenance": {
            "measured": ["throughput", "bundle_bytes", "deploy.rates", "deploy.max_abs_diff", "onnx.*.forwards_per_s",
                         "onnx.*.max_abs_diff_vs_torch_compressed"],
            "counted": ["params", "storage_bits", "macs_per_sample", "macs_nonzero_per_sample", "bops_per_sample"],
        },
        "sizes_of": "the sampling network (model.network)" if gen else "the whole model",
        "storage_table": [t.to_dict() for t in storage_table(comp.network if gen else compressed)],
    }
    if onnx:
        try:
            net_o = dep_o.network if gen else dep_o
            net_c = dep_c.network if gen else dep_c
            report["onnx"] = _onnx_section(net_o, net_c, compressed, net_args, min_time, repeats)
        except Exception as err:
            report["onnx"] = {"measured": False, "reason": f"{type(err).__name__}: {err}"[:300]}
    if pipeline is not None:
        report["pipeline"] = pipeline
        report["coverage"] = pipeline_coverage(pipeline)
    if fidelity is not None:
        report["fidelity"] = fidelity
    return report


def pipeline_coverage(pipeline: dict[str, Any]) -> list[dict[str, Any]]:
    """Per kept step: which weight layers it changed / left alone, with parameter shares
    (``extra.coverage`` of each step, :mod:`simcompress.compress.coverage`)."""
    out = []
    for s in pipeline.get("steps", []):
        cov = (s.get("extra") or {}).get("coverage")
        if cov is None:
            continue
        out.append({"index": s.get("index"), "method": s.get("method"), "rolled_back": bool(s.get("rolled_back")), **cov})
    return out
