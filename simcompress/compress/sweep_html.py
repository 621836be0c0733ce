"""The HTML page of a sweep: Pareto plots of each damage figure against storage ratio and
speed-up, and the table of points linking to their validation reports (self-contained, plots
embedded as PNG)."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

__all__ = ["DAMAGE_AXES", "FIGURES", "sweep_html"]

#: figures of a point (pick conditions, plots); higher is better for ratios and speed, lower for damage
FIGURES: dict[str, str] = {
    "storage_ratio": "teacher / student storage bits of the sampling network (counted)",
    "bundle_ratio": "teacher / student bytes of config.json + weights.safetensors (measured)",
    "params_ratio": "teacher / student parameters (counted)",
    "bops_ratio": "teacher / student bit-operations per shower (counted)",
    "speedup": "student / teacher end-to-end sample() showers/s, same run (measured)",
    "showers_per_s": "student end-to-end sample() showers/s (measured)",
    "auc_vs_teacher": "classifier AUC, student versus teacher showers (high-level features)",
    "auc_floor": "the same classifier, teacher versus teacher",
    "w1_over_floor_max": "largest W1 / teacher-versus-teacher floor over the features",
    "sp_over_floor_max": "largest separation power / floor over the features",
    "fpd": "FPD student versus teacher",
    "fpd_floor": "FPD teacher versus teacher",
    "kpd": "KPD student versus teacher",
    "checks_failed": "gate checks failed against the teacher",
}
DAMAGE_AXES = ("auc_vs_teacher", "w1_over_floor_max", "fpd")

def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _group(point: dict[str, Any]) -> str:
    """Legend entry of a point: its method, after the methods of its fixed ``before`` steps."""
    return " + ".join([*(str(b.get("method")) for b in point.get("before") or []), str(point["method"])])


def _plot(table: dict[str, Any], damage: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = table["points"]
    picked = (table.get("pick") or {}).get("picked")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = sorted({_group(p) for p in pts})
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, gain, xlabel in ((axes[0], "storage_ratio", "storage ratio (teacher / student bits)"),
                             (axes[1], "speedup", "end-to-end speed-up (showers/s, student / teacher)")):
        for m in methods:
            sel = [p for p in pts if _group(p) == m and _num(p.get(gain)) and _num(p.get(damage))]
            ax.scatter([p[gain] for p in sel], [p[damage] for p in sel], color=colors[m], label=m, s=30, zorder=3)
            for p in sel:
                ax.annotate(" ".join(f"{v}" for v in p["values"].values()), (p[gain], p[damage]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        front = [next(p for p in pts if p["id"] == i) for i in table["pareto"][f"{damage}_vs_{gain}"]]
        if front:
            ax.step([p[gain] for p in front], [p[damage] for p in front], where="post", color="0.4", lw=1, zorder=2,
                    label="Pareto front")
        if picked:
            p = next(p for p in pts if p["id"] == picked)
            if _num(p.get(gain)) and _num(p.get(damage)):
                ax.scatter([p[gain]], [p[damage]], marker="*", s=260, facecolor="none", edgecolor="red", lw=1.6,
                           zorder=4, label="picked")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(FIGURES[damage].split(",")[0] if damage != "auc_vs_teacher" else "AUC student vs teacher")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def sweep_html(table: dict[str, Any]) -> str:
    """Self-contained page: the Pareto plots (each damage figure) and the table with links."""
    e = html.escape
    picked = (table.get("pick") or {}).get("picked")
    parts = [f"<h1>Sweep {e(table['name'])}: {e(table['model'])}</h1>", f"<p>{e(table.get('description') or '')}</p>"]
    if table.get("pick"):
        parts.append(f"<p>Pick: <code>{e(str(table['pick']['condition']))}</code>, by {e(table['pick']['by'])}: "
                     + (f"<b>{e(picked)}</b> (bundle in <code>picked/</code>)" if picked else "<b>no point satisfies it</b>") + "</p>")
    for d in DAMAGE_AXES:
        if any(_num(p.get(d)) for p in table["points"]):
            parts.append(f"<h2>{e(d)}: {e(FIGURES[d])}</h2><img alt='{e(d)}' src='data:image/png;base64,{_plot(table, d)}'>")
    cols = ["label", "deploy_form", "storage_ratio", "bundle_ratio", "bops_ratio", "speedup", "auc_vs_teacher", "auc_floor",
            "w1_over_floor_max", "sp_over_floor_max", "fpd", "fpd_floor", "checks_failed"]

    def cell(p: dict[str, Any], c: str) -> str:
        v = p.get(c)
        if c == "label":
            return f"<a href='{e(p['validation_report'])}'>{e(str(v))}</a>"
        if isinstance(v, float):
            return f"{v:.4g}"
        return e("" if v is None else str(v))

    rows = "".join(
        f"<tr{' class=picked' if p['id'] == picked else ''}>" + "".join(f"<td>{cell(p, c)}</td>" for c in cols) + "</tr>"
        for p in table["points"])
    parts.append("<h2>Points</h2><table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + f"</tr></thead><tbody>{rows}</tbody></table>")
    parts.append("<p>" + "<br>".join(f"<b>{e(k)}</b>: {e(v)}" for k, v in FIGURES.items()) + "</p>")
    css = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}tr.picked{background:#fdd}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Sweep {e(table['name'])}</title>"
            f"<style>{css}</style></head><body>{''.join(parts)}</body></html>\n")
