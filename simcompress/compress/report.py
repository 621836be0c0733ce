"""The compression report: counted sizes and operations, measured speed, honestly labelled.

For the original and the compressed model it gives

* ``params``: weight/bias values the model computes with;
* ``storage_bits``: counted from the actual stored bits of every tensor
  (:mod:`~simcompress.compress.accounting`: bit widths, scales, sparse encodings, factor sizes);
* ``bundle_bytes``: size of the saved bundle on disk (when a path is given) -- *measured*;
* ``macs`` (dense), ``macs_nonzero`` (weights that are zero skipped) and ``bops``
  (``macs_nonzero * weight_bits * input_bits``) for one sample -- *counted* with forward hooks;
* ``throughput``: *measured* showers per second (``sample``) for a shower generator, or
  samples per second of ``forward`` otherwise, for both models in the same run,
  interleaved, best of ``repeats``, on the **deployable form**
  (:func:`deployable`: parametrizations folded into plain tensors, physically smaller
  layers kept, masks stored as zeros in dense tensors);
* ``onnx`` (optional): the deployable network exported to ONNX and run with ONNX Runtime
  in float32 and, when the compressed model has quantized weights, with ONNX Runtime's
  dynamic int8 operators (``MatMulInteger``) -- measured forwards per second and the
  largest output difference to torch.

Every figure says whether it was ``measured`` or ``counted``; nothing is estimated.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .accounting import count_params, storage_bits, storage_table
from .modules import TTLinear
from .parametrizations import ActQuant, FakeQuant, bake, clone_model, find_parametrization

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
        for p in mod.parametrizations["weight"]:
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
        def f(mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
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
                torch.onnx.export(mod, args, buf, dynamo=False, input_names=names, output_names=["y"],
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
        rates = measure_throughput({k: (lambda s=s: s.run(None, feeds)) for k, (_, s) in sessions.items()}, 1, min_time, repeats)
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


def compression_report(
    original: nn.Module,
    compressed: nn.Module,
    *,
    example: tuple[Tensor, ...] | None = None,
    n_samples: int = 1024,
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
        n_samples: showers per measured ``sample`` call (generators).
    """
    gen = is_generator(original)
    g = torch.Generator().manual_seed(seed)
    dep_o, dep_c = deployable(original), deployable(compressed)
    if gen:
        lo, hi = (float(v) for v in getattr(original, "energy_range_mev", (1e3, 1e6)))
        energies = torch.exp(torch.empty(n_samples).uniform_(math.log(lo), math.log(hi), generator=g))
        z = torch.randn(n_samples, int(original.latent_dim), generator=g)
        with torch.no_grad():
            c = original.condition(energies)
        net_args = (z, c)

        def run_net(m: nn.Module) -> Any:
            return m.network(*net_args)

        fns = {
            "original": lambda: dep_o.sample(energies, generator=torch.Generator().manual_seed(seed)),
            "compressed": lambda: dep_c.sample(energies, generator=torch.Generator().manual_seed(seed)),
        }
        unit = "showers/s (sample())"
        items = n_samples
    else:
        if example is None:
            msg = (
                "compression_report needs example=(inputs,) for a model that is not a shower generator "
                             "(or wrap the network as one: simcompress.interop.external.wrap_generator, docs/external-generators.md)"
            )
            raise ValueError(msg)
        net_args = tuple(example)

        def run_net(m: nn.Module) -> Any:
            return m(*net_args)

        fns = {"original": lambda: dep_o(*net_args), "compressed": lambda: dep_c(*net_args)}
        unit = "samples/s (forward())"
        items = int(net_args[0].shape[0])
    n_batch = int(net_args[0].shape[0])
    with torch.inference_mode():
        rates = measure_throughput(fns, items, min_time, repeats)
    sides: dict[str, dict[str, Any]] = {}
    for label, m, _dep, bundle in (("original", original, dep_o, original_bundle), ("compressed", compressed, dep_c, compressed_bundle)):
        ops = count_ops(m, run_net, n_batch)
        sized = m.network if gen else m  # a generator samples with its network; its critic is not shipped
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
        "threads": torch.get_num_threads(),
        "deployable_form": _form(compressed),
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
            "measured": ["throughput", "bundle_bytes", "onnx.*.forwards_per_s", "onnx.*.max_abs_diff_vs_torch_compressed"],
            "counted": ["params", "storage_bits", "macs_per_sample", "macs_nonzero_per_sample", "bops_per_sample"],
        },
        "sizes_of": "the sampling network (model.network)" if gen else "the whole model",
        "storage_table": [t.to_dict() for t in storage_table(compressed.network if gen else compressed)],
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


def _coverage_markdown(items: list[dict[str, Any]]) -> list[str]:
    from .coverage import coverage_lines

    lines = ["## Coverage", "",
             ("Which weight layers each step changed and which it left alone; shares are of all parameters of the "
             "sampling network (the headline ratios above are over the whole network too)."), ""]
    for c in items:
        head = f"### Step {c['index']}: {c['method']}" + (" (rolled back)" if c["rolled_back"] else "")
        if c.get("replaced"):
            lines += [head, "", "Replaced the whole architecture (distillation).", ""]
            continue
        gaps = [r for r in c["left_alone"] if r["reason"] == "not handled"]
        summary = (f"changed {100 * c['changed_share']:.1f} % of the parameters in {len(c['changed'])} weight layer(s); "
                   f"left alone {len(c['left_alone'])}" + (f", {len(gaps)} NOT HANDLED ({100 * c['not_handled_share']:.1f} %)" if gaps else ""))
        lines += [head, "", summary + ".", "", *coverage_lines(c), ""]
    return lines


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.{digits}e}"
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def report_markdown(report: dict[str, Any], title: str = "Compression report") -> str:
    """A readable Markdown summary of :func:`compression_report` output."""
    o, c, r = report["original"], report["compressed"], report["ratios"]
    lines = [f"# {title}", ""]
    lines += [f"Model: {report['model_kind']}; throughput in {report['throughput_unit']} on {report['threads']} thread(s).", ""]
    lines += ["| quantity | original | compressed | ratio | how |", "|---|---|---|---|---|"]
    rows = [
        ("parameters", "params", "params", "counted"),
        ("storage (bytes, from actual bits)", "storage_bytes", "storage", "counted"),
        ("bundle on disk (bytes)", "bundle_bytes", "bundle", "measured"),
        ("MACs / sample (dense)", "macs_per_sample", None, "counted"),
        ("MACs / sample (non-zero weights)", "macs_nonzero_per_sample", "macs_nonzero", "counted"),
        ("bit-operations / sample", "bops_per_sample", "bops", "counted"),
        ("throughput", "throughput", "throughput", "measured"),
    ]
    for label, key, rkey, how in rows:
        ratio = _fmt(r.get(rkey)) + ("x" if rkey and r.get(rkey) is not None else "") if rkey else ""
        lines.append(f"| {label} | {_fmt(o[key])} | {_fmt(c[key])} | {ratio} | {how} |")
    lines += ["", "Ratios are original/compressed for sizes and operations, compressed/original for throughput.", ""]
    lines += ["Deployable form measured: " + "; ".join(report["deployable_form"]) + ".", ""]
    onnx = report.get("onnx")
    if onnx:
        if onnx.get("measured"):
            lines += [f"ONNX Runtime ({onnx['unit']}, batch {onnx['batch']}):", ""]
            lines += ["| form | forwards/s | ONNX bytes | max abs diff vs torch |", "|---|---|---|---|"]
            for k in ("original_fp32", "compressed_fp32", "compressed_int8_dynamic"):
                if k in onnx:
                    v = onnx[k]
                    lines.append(f"| {k} | {_fmt(v['forwards_per_s'])} | {_fmt(v['onnx_bytes'])} | {_fmt(v['max_abs_diff_vs_torch_compressed'])} |")
            if "int8_helps" in onnx:
                lines += ["", f"int8 kernels {'help' if onnx['int8_helps'] else 'do not help'} here. {onnx['int8_note']}."]
        else:
            lines += [f"ONNX Runtime not measured: {onnx.get('reason')}"]
        lines.append("")
    pipe = report.get("pipeline")
    if pipe:
        lines += ["## Steps", "", "| # | method | gate | rolled back | seconds |", "|---|---|---|---|---|"]
        for s in pipe["steps"]:
            gate = "n/a" if s["gate"] is None else ("pass" if s["gate"]["passed"] else "FAIL") + (f" ({s['gate']['summary']})" if s["gate"]["summary"] else "")
            lines.append(f"| {s['index']} | {s['method']} | {gate} | {'yes' if s['rolled_back'] else 'no'} | {s['seconds']:.2f} |")
        lines += ["", f"Pipeline passed: {'yes' if pipe['passed'] else 'NO'}.", ""]
    if report.get("coverage"):
        lines += _coverage_markdown(report["coverage"])
    fid = report.get("fidelity")
    if fid:
        lines += ["## Fidelity", "", "```", *[f"{k}: {v}" for k, v in fid.items() if not isinstance(v, (dict, list))], "```", ""]
    return "\n".join(lines)


def report_html(report: dict[str, Any], title: str = "Compression report", validation_section: str | None = None) -> str:
    """Self-contained HTML page: the compression tables, then (optionally) a validation section
    (an HTML fragment, e.g. :func:`simcompress.validation.report.report_section`, passed in by the
    caller so that ``compress`` does not import ``validation``)."""
    import html as _h

    def table(header: list[str], rows: list[list[Any]]) -> str:
        head = "".join(f"<th>{_h.escape(str(c))}</th>" for c in header)
        body = "".join("<tr>" + "".join(f"<td>{_h.escape(_fmt(c) if not isinstance(c, str) else c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    o, c, r = report["original"], report["compressed"], report["ratios"]
    rows = [
        ["parameters", o["params"], c["params"], r["params"], "counted"],
        ["storage (bytes, from actual bits)", o["storage_bytes"], c["storage_bytes"], r["storage"], "counted"],
        ["bundle on disk (bytes)", o["bundle_bytes"], c["bundle_bytes"], r.get("bundle"), "measured"],
        ["MACs / sample (non-zero weights)", o["macs_nonzero_per_sample"], c["macs_nonzero_per_sample"], r["macs_nonzero"], "counted"],
        ["bit-operations / sample", o["bops_per_sample"], c["bops_per_sample"], r["bops"], "counted"],
        [f"throughput ({report['throughput_unit']})", o["throughput"], c["throughput"], r["throughput"], "measured"],
    ]
    parts = [f"<h1>{_h.escape(title)}</h1>", table(["quantity", "original", "compressed", "ratio", "how"], rows),
             "<p>Deployable form measured: " + _h.escape("; ".join(report["deployable_form"])) + ".</p>"]
    onnx = report.get("onnx") or {}
    if onnx.get("measured"):
        orows = [[k, v["forwards_per_s"], v["onnx_bytes"], v["max_abs_diff_vs_torch_compressed"]]
                 for k, v in onnx.items() if isinstance(v, dict) and "forwards_per_s" in v]
        parts += [f"<h2>ONNX Runtime ({_h.escape(onnx['unit'])}, batch {onnx['batch']})</h2>",
                  table(["form", "forwards/s", "ONNX bytes", "max abs diff vs torch"], orows)]
        if "int8_note" in onnx:
            parts.append(f"<p>{_h.escape(onnx['int8_note'])}.</p>")
    pipe = report.get("pipeline")
    if pipe:
        srows = [[s["index"], s["method"], "n/a" if s["gate"] is None else ("pass" if s["gate"]["passed"] else "FAIL: " + s["gate"]["summary"]),
                  "yes" if s["rolled_back"] else "no", s["seconds"]] for s in pipe["steps"]]
        parts += ["<h2>Steps</h2>", table(["#", "method", "gate", "rolled back", "seconds"], srows)]
    for c in report.get("coverage") or []:
        if c.get("replaced"):
            continue
        crows = [[r["name"], r["type"], r["params"], f"{100 * r['share']:.1f} %", f"changed: {r['how']}"] for r in c["changed"]]
        crows += [[r["name"], r["type"], r["params"], f"{100 * r['share']:.1f} %", f"left alone ({r['reason']}): {r['note']}"]
                  for r in c["left_alone"]]
        parts += [f"<h2>Coverage of step {c['index']} ({_h.escape(str(c['method']))})</h2>",
                  table(["layer", "type", "params", "share", "status"], crows)]
    if validation_section:
        parts += ["<h2>Validation against the reference</h2>", validation_section]
    css = "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_h.escape(title)}</title><style>{css}</style></head><body>{''.join(parts)}</body></html>\n"
