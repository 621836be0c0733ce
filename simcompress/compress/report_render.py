"""The compression report as Markdown (``report.md``) and as a self-contained HTML page (``report.html``)."""

from __future__ import annotations

import html as _h
from typing import Any

__all__ = ["report_html", "report_markdown"]



def _ungated(pipe: dict[str, Any]) -> str:
    """The gate cell of a step no gate evaluated: a recipe with ``gate_at: last`` gates its final model only."""
    return "not gated (gate_at: last)" if (pipe.get("recipe") or {}).get("gate_at") == "last" else "n/a"

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


def _forms_line(dep: dict[str, Any] | None) -> str:
    """One sentence: the execution forms measured for the choice, their rates and differences, those rejected."""
    if not dep or not dep.get("rates"):
        return ""
    rated = ", ".join(f"{k} {_fmt(float(v))}/s (max abs diff {_fmt(dep.get('max_abs_diff', {}).get(k))})"
                      for k, v in dep["rates"].items())
    rej = "; ".join(f"{k}: {v}" for k, v in (dep.get("rejected") or {}).items())
    return (f"Execution forms measured on the network at batch {dep.get('batch')}, {dep.get('threads')} thread(s): {rated}; "
            f"chosen {dep['form']!r}" + (f". Not used: {rej}." if rej else "."))


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
    forms = _forms_line(report.get("deploy"))
    if forms:
        lines += [forms, ""]
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
            gate = _ungated(pipe) if s["gate"] is None else ("pass" if s["gate"]["passed"] else "FAIL") + (f" ({s['gate']['summary']})" if s["gate"]["summary"] else "")
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
    forms = _forms_line(report.get("deploy"))
    if forms:
        parts.append(f"<p>{_h.escape(forms)}</p>")
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
        srows = [[s["index"], s["method"], _ungated(pipe) if s["gate"] is None else ("pass" if s["gate"]["passed"] else "FAIL: " + s["gate"]["summary"]),
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
