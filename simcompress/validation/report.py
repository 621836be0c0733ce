"""Validation report: self-contained HTML (Jinja2, base64 PNG figures, no network) and ``metrics.json``.

The page leads with the answer: the verdict per candidate (with its worst check), then the
feature matrix (each feature's W1 and separation power in units of the reference-versus-reference
noise floor, coloured by the gate), then CaloChallenge-style histogram grids (reference filled,
candidates as lines, ratio panels; layer energies as E_layer / E_inc and energies on log bins, so
the discrete ds1 incident energies draw no comb), then the multivariate metrics, per-energy-bin
table, profiles and average images; the failed-check table and the detailed distances are
collapsed below. Several candidates appear side by side everywhere. :func:`report_section`
returns the same content as an HTML fragment, so other reports (e.g. the compression report) can
embed a validation section.
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .features import VOXEL_LOG10_EDGES, FeatureTable

if TYPE_CHECKING:  # pragma: no cover
    from .core import ValidationResult

__all__ = ["MAX_FEATURE_FIGURES", "render_html", "report_section", "write_report"]

#: histogram panels drawn at most (the rest are in the tables); ds2/ds3 have hundreds of features.
MAX_FEATURE_FIGURES = 80

_COLORS = ["#e42536", "#5790fc", "#f89c20", "#964a8b", "#9c9ca1", "#7a21dd", "#2ca02c", "#8c564b"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, dpi: int = 72, tight: bool = False) -> str:
    plt = _plt()
    buf = io.BytesIO()
    # bbox_inches="tight" draws every figure twice; the layouts below leave room for labels instead
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _style() -> Any:
    import mplhep as hep

    plt = _plt()
    return plt.style.context(hep.style.CMS)


def _label(ax: Any, rlabel: str) -> None:
    # plain text: mplhep's exp_label costs ~1 s per figure (font metrics), this costs nothing
    ax.text(0.0, 1.01, "simcompress", transform=ax.transAxes, fontsize=14, fontweight="bold", va="bottom")
    ax.text(0.24, 1.01, "Validation", transform=ax.transAxes, fontsize=12, style="italic", va="bottom")
    ax.text(1.0, 1.01, rlabel, transform=ax.transAxes, fontsize=12, ha="right", va="bottom")


def _ratio_panel(rax: Any, centers: np.ndarray, ref: np.ndarray, ref_err: np.ndarray, cands: list[tuple[str, np.ndarray, np.ndarray, str]]) -> None:
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(ref > 0, ref_err / ref, np.nan)
        rax.fill_between(centers, 1 - rel, 1 + rel, step="mid", color="0.8", label="ref. stat.")
        for _, y, e, col in cands:
            r = np.where(ref > 0, y / ref, np.nan)
            re = np.where(ref > 0, e / ref, np.nan)
            rax.errorbar(centers, r, yerr=re, fmt="o", ms=3, color=col)
    rax.axhline(1.0, color="k", lw=1)
    rax.set_ylim(0.5, 1.5)
    rax.set_ylabel("cand./ref.", fontsize=16)


def _plot_edges(ref: np.ndarray, cands: list[np.ndarray], fallback: np.ndarray, n: int = 50) -> np.ndarray:
    """Equal-width plotting bins over the central 99.8 % (log-spaced for positive features spanning decades)."""
    allv = np.concatenate([ref, *cands])
    lo, hi = np.quantile(allv, [0.001, 0.999])
    if not hi > lo:
        return fallback
    if lo > 0 and hi / lo > 100:
        return np.geomspace(lo, hi, n + 1)
    uniq = np.unique(allv)
    if uniq.size <= n:  # discrete feature (sparsity): one bin per value
        mids = 0.5 * (uniq[:-1] + uniq[1:])
        step = np.min(np.diff(uniq)) if uniq.size > 1 else 1.0
        return np.concatenate([[uniq[0] - step / 2], mids, [uniq[-1] + step / 2]])
    return np.linspace(lo, hi, n + 1)


def _unit(name: str) -> str:
    if name.endswith("/ E_inc"):
        return ""
    if name.startswith(("E_tot", "E_layer")):
        return "MeV"
    if name.startswith(("EC_", "width_")):
        return "mm"
    return ""


def _hist_edges(name: str, ref: np.ndarray, cands: list[np.ndarray], n: int = 40) -> tuple[np.ndarray, bool]:
    """Plotting bins and whether they are logarithmic.

    Energies (``E_tot``, ``E_layer``) span the 15 discrete ds1 incident energies, so linear bins
    would draw a comb: they get log bins over their positive values (zeros are counted apart).
    """
    allv = np.concatenate([ref, *cands])
    if name.startswith(("E_tot", "E_layer")):
        pos = allv[allv > 0]
        if pos.size:
            lo, hi = float(np.quantile(pos, 0.0005)), float(pos.max())
            if hi > lo > 0:
                return np.geomspace(lo, hi * 1.0001, n + 1), True
    edges = _plot_edges(allv[: ref.size], [allv[ref.size :]], np.array([allv.min() - 0.5, allv.max() + 0.5]), n)
    return edges, False


def _hist_panel(ax: Any, rax: Any, name: str, ref: np.ndarray, cands: dict[str, np.ndarray], legend: bool) -> None:
    """One CaloChallenge-style panel: reference filled, candidates as step lines, ratio below."""
    edges, logx = _hist_edges(name, ref, list(cands.values()))
    widths = np.diff(edges)
    centers = np.sqrt(edges[:-1] * edges[1:]) if logx else 0.5 * (edges[:-1] + edges[1:])

    def dens(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # log bins: fraction of events per bin (a density per MeV would fall by decades across the plot)
        h, _ = np.histogram(x, edges)
        norm = max(len(x), 1) * (1.0 if logx else widths)
        return h / norm, np.sqrt(h) / norm

    r, re = dens(ref)
    ax.stairs(r, edges, fill=True, alpha=0.35, color="0.4", label="Reference")
    ax.set_ylabel("fraction per bin" if logx else "density", fontsize=8)
    rows = []
    for i, (cname, x) in enumerate(cands.items()):
        col = _COLORS[i % len(_COLORS)]
        y, ye = dens(x)
        ax.stairs(y, edges, color=col, lw=1.6, label=cname)
        rows.append((cname, y, ye, col))
    pos = r[r > 0]
    if pos.size and pos.max() / max(pos.min(), 1e-300) > 50:
        ax.set_yscale("log")
    nz = float(np.mean(ref <= 0)) if logx else 0.0
    ax.set_title(name + (f" ({nz:.0%} at 0)" if nz >= 0.005 else ""), fontsize=10)
    ax.tick_params(labelsize=8, labelbottom=False)
    if legend:
        ax.legend(fontsize=8)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(r > 0, re / r, np.nan)
        rax.fill_between(centers, 1 - rel, 1 + rel, step="mid", color="0.8")
        for _, y, _e, col in rows:
            rax.step(centers, np.where(r > 0, y / r, np.nan), where="mid", color=col, lw=1.2)
    rax.axhline(1.0, color="k", lw=0.8)
    rax.set_ylim(0.5, 1.5)
    rax.tick_params(labelsize=8)
    rax.set_xlabel(f"{name} [{_unit(name)}]" if _unit(name) else name, fontsize=9)
    if logx:
        ax.set_xscale("log")
        rax.set_xscale("log")
    for a in (ax, rax):  # minor ticks of log axes are hundreds of artists per panel: the grid's main cost
        a.minorticks_off()


def histogram_grid_figure(names: list[str], ref: FeatureTable, cands: dict[str, FeatureTable], ncol: int = 4) -> str:
    """A grid of feature histograms (one panel plus ratio per feature), CaloChallenge style."""
    plt = _plt()
    ncol = min(ncol, len(names))
    nrow = math.ceil(len(names) / ncol)
    h_in = 3.4 * nrow
    fig = plt.figure(figsize=(3.6 * ncol, h_in))
    outer = fig.add_gridspec(nrow, ncol, hspace=0.42, wspace=0.3, left=0.06, right=0.99, top=1 - 0.3 / h_in, bottom=0.5 / h_in)
    for k, f in enumerate(names):
        rr, cc = divmod(k, ncol)
        inner = outer[rr, cc].subgridspec(2, 1, height_ratios=(3, 1), hspace=0.06)
        ax = fig.add_subplot(inner[0])
        rax = fig.add_subplot(inner[1], sharex=ax)
        rv, cv, label = _grid_values(f, ref, cands)
        _hist_panel(ax, rax, label, rv, cv, legend=k == 0)
    return _png(fig)


def _grid_values(f: str, ref: FeatureTable, cands: dict[str, FeatureTable]) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """What a grid panel shows: layer energies as E_layer / E_inc (continuous; E_layer itself follows the
    15 discrete ds1 incident energies and draws a comb even on log bins), every other feature as it is."""
    if f.startswith("E_layer_"):
        return (
            ref[f].astype(np.float64) / ref.incident_energy,
            {n: t[f].astype(np.float64) / t.incident_energy for n, t in cands.items()},
            f"{f} / E_inc",
        )
    return ref[f].astype(np.float64), {n: t[f].astype(np.float64) for n, t in cands.items()}, f


def _grid_groups(names: list[str], cap: int) -> tuple[list[tuple[str, list[str]]], int]:
    """Features grouped for the grid (overall energies first, then one group per family); at most ``cap`` panels."""
    fam: dict[str, list[str]] = {}
    for f in names:
        head, _, tail = f.rpartition("_")
        fam.setdefault(head if tail.isdigit() else "overall", []).append(f)
    order = ["overall", "E_layer", "frac_layer", "EC_r", "width_r", "EC_x", "EC_y", "width_x", "width_y", "sparsity"]
    keys = [k for k in order if k in fam] + [k for k in fam if k not in order]
    groups, used = [], 0
    for k in keys:
        take = fam[k][: max(cap - used, 0)]
        if take:
            groups.append((k, take))
            used += len(take)
    return groups, len(names) - used


def longitudinal_figure(ref: FeatureTable, cands: dict[str, FeatureTable]) -> str:
    plt = _plt()
    with _style():
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(7, 7), sharex=True, gridspec_kw={"height_ratios": (3, 1), "hspace": 0.05})
        fig.subplots_adjust(left=0.19, right=0.96, top=0.93, bottom=0.13)
        x = np.arange(ref.geometry.n_layers)
        m, e = ref.longitudinal_profile(normalised=True)
        ax.bar(x, m, width=0.8, color="0.4", alpha=0.35, label="Reference")
        rows = []
        for i, (n, t) in enumerate(cands.items()):
            col = _COLORS[i % len(_COLORS)]
            cm, ce = t.longitudinal_profile(normalised=True)
            ax.errorbar(x, cm, yerr=ce, fmt="o", color=col, label=n)
            rows.append((n, cm, ce, col))
        ax.set_yscale("log")
        ax.set_ylabel(r"mean $E_\mathrm{layer} / E_\mathrm{inc}$", fontsize=16)
        ax.legend(fontsize=10)
        _label(ax, "longitudinal profile")
        _ratio_panel(rax, x.astype(float), m, e, rows)
        rax.set_xticks(x, [str(layer.id) for layer in ref.geometry.layers])
        rax.set_xlabel("layer id")
        return _png(fig)


def radial_figure(ref: FeatureTable, cands: dict[str, FeatureTable], max_layers: int = 12) -> str:
    plt = _plt()
    g = ref.geometry
    layers = list(range(g.n_layers))
    if len(layers) > max_layers:
        layers = sorted(set(np.linspace(0, g.n_layers - 1, max_layers).round().astype(int).tolist()))
    ncol = min(3, len(layers))
    nrow = math.ceil(len(layers) / ncol)
    with _style():
        fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 4 * nrow), squeeze=False)
        for k, li in enumerate(layers):
            ax = axes[k // ncol][k % ncol]
            edges, m, _e = ref.radial_profile(li, normalised=True)
            centers = 0.5 * (edges[:-1] + edges[1:])
            ax.stairs(m, edges, fill=True, alpha=0.35, color="0.4", label="Reference")
            for i, (n, t) in enumerate(cands.items()):
                _, cm, ce = t.radial_profile(li, normalised=True)
                ax.errorbar(centers, cm, yerr=ce, fmt="o", ms=3, color=_COLORS[i % len(_COLORS)], label=n)
            if np.any(m > 0):
                ax.set_yscale("log")
            ax.set_title(f"layer {g.layers[li].id}", fontsize=12)
            ax.set_xlabel("x [mm]" if g.kind == "cartesian" else "r [mm]", fontsize=11)
            ax.set_ylabel(r"mean $E_\mathrm{bin} / E_\mathrm{inc}$", fontsize=11)
            ax.tick_params(labelsize=9)
            if k == 0:
                ax.legend(fontsize=8)
        for k in range(len(layers), nrow * ncol):
            axes[k // ncol][k % ncol].axis("off")
        fig.tight_layout()
        return _png(fig)


def image_figure(ref: FeatureTable, cands: dict[str, FeatureTable], max_layers: int = 8) -> str:
    """Average shower image per layer (polar, log colour) for the reference and each candidate."""
    from matplotlib.colors import LogNorm

    plt = _plt()
    g = ref.geometry
    layers = list(range(g.n_layers))
    if len(layers) > max_layers:
        layers = sorted(set(np.linspace(0, g.n_layers - 1, max_layers).round().astype(int).tolist()))
    samples = {"Reference": ref, **cands}
    if g.kind == "cartesian":  # grid layers: cell images (simcompress.showers.plots)
        from ..showers.plots import layer_images_figure

        return _png(layer_images_figure({n: t.mean_image for n, t in samples.items()}, g, layers), tight=True)
    nrow, ncol = len(samples), len(layers)
    fig = plt.figure(figsize=(2.6 * ncol, 2.6 * nrow))
    imgs = {n: t.mean_image for n, t in samples.items()}
    pos = np.concatenate([v[v > 0] for v in imgs.values()]) if imgs else np.array([1.0])
    vmin = max(float(np.quantile(pos, 0.01)) if pos.size else 1e-3, 1e-6)
    vmax = float(pos.max()) if pos.size else 1.0
    norm = LogNorm(vmin=vmin, vmax=max(vmax, vmin * 10))
    mesh = None
    for r_i, (n, img) in enumerate(imgs.items()):
        for c_i, li in enumerate(layers):
            layer = g.layers[li]
            ax = fig.add_subplot(nrow, ncol, r_i * ncol + c_i + 1, projection="polar")
            # each alpha bin drawn as several angular steps: polar quads have straight edges, and a
            # single bin spanning 2 pi would otherwise collapse to a line
            sub = max(1, 64 // layer.n_alpha)
            a_edges = np.linspace(-np.pi, np.pi, layer.n_alpha * sub + 1)
            r_edges = np.asarray(layer.r_edges_mm, dtype=float)
            # log-like radius axis (CaloChallenge draws ds1 with a log radius): r -> log1p(r)
            view = np.repeat(img[g.layer_slices[li]].reshape(layer.n_alpha, layer.n_r), sub, axis=0)
            mesh = ax.pcolormesh(a_edges, np.log1p(r_edges), np.clip(view.T, vmin, None), norm=norm, cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if r_i == 0:
                ax.set_title(f"layer {layer.id}", fontsize=9)
            if c_i == 0:
                ax.text(-0.15, 0.5, n, transform=ax.transAxes, rotation=90, va="center", ha="right", fontsize=9)
    if mesh is not None:
        cb = fig.colorbar(mesh, ax=fig.axes, shrink=0.8)
        cb.set_label("mean energy per voxel [MeV]", fontsize=9)
    return _png(fig, tight=True)


def voxel_spectrum_figure(ref: FeatureTable, cands: dict[str, FeatureTable]) -> str:
    edges = 10.0**VOXEL_LOG10_EDGES
    nz = np.nonzero(ref.voxel_hist + sum((t.voxel_hist for t in cands.values()), np.zeros_like(ref.voxel_hist)))[0]
    lo, hi = (nz[0], nz[-1] + 1) if nz.size else (0, len(edges) - 1)
    e = edges[lo : hi + 1]
    plt = _plt()
    with _style():
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(7, 7), sharex=True, gridspec_kw={"height_ratios": (3, 1), "hspace": 0.05})
        fig.subplots_adjust(left=0.19, right=0.96, top=0.93, bottom=0.13)
        centers = np.sqrt(e[:-1] * e[1:])
        r = ref.voxel_hist[lo:hi] / ref.n_events
        re = np.sqrt(ref.voxel_hist[lo:hi]) / ref.n_events
        ax.stairs(r, e, fill=True, alpha=0.35, color="0.4", label="Reference")
        rows = []
        for i, (n, t) in enumerate(cands.items()):
            col = _COLORS[i % len(_COLORS)]
            y = t.voxel_hist[lo:hi] / t.n_events
            ye = np.sqrt(t.voxel_hist[lo:hi]) / t.n_events
            ax.errorbar(centers, y, yerr=ye, fmt="o", ms=3, color=col, label=n)
            rows.append((n, y, ye, col))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("voxels per shower per bin", fontsize=16)
        ax.axvline(max(ref.threshold_mev, 1e-12), color="k", ls="--", lw=1, label=f"threshold {ref.threshold_mev:.4g} MeV")
        ax.legend(fontsize=10)
        _label(ax, "voxel energies")
        _ratio_panel(rax, centers, r, re, rows)
        rax.set_xlabel("voxel energy [MeV]")
        return _png(fig)


# ------------------------------------------------------------------ tables and HTML


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return _html.escape(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _html.escape(str(v))
    if not math.isfinite(f):
        return "–"
    return f"{f:.{digits}g}"


def _worst(chks: list[Any]) -> str:
    """The check closest to (or furthest over) its threshold, as one phrase."""
    scored = [(k.value / k.threshold if k.threshold > 0 else (0.0 if k.value <= 0 else math.inf), k) for k in chks]
    if not scored:
        return ""
    r, k = max(scored, key=lambda rk: rk[0])
    where = f" in {k.energy_bin}" if k.energy_bin else ""
    return f"{k.metric}({k.target}){where} at {_fmt(r, 3)}× its threshold"


def _check_index(result: ValidationResult) -> dict[tuple[str, str, str, str], Any]:
    return {(c.candidate, c.metric, c.target, c.energy_bin): c for c in result.checks}


def _metric_cell(result: ValidationResult, idx: dict[Any, Any], cand: str, metric: str, feat: str, key: str, m: dict[str, Any], ebin: str = "") -> str:
    chk = idx.get((cand, metric, feat, ebin))
    cls = "" if chk is None else ("pass" if chk.passed else "fail")
    err = m.get(f"{key}_err")
    fl = m["floor"][key]
    title = f"floor {_fmt(fl)} ± {_fmt(m['floor'][key + '_std'])}"
    if chk is not None:
        title += f"; threshold {_fmt(chk.threshold)}"
    txt = _fmt(m[key]) + (f" ± {_fmt(err, 2)}" if err is not None and math.isfinite(float(err)) else "")
    ratio = m[key] / fl if fl > 0 else (0.0 if m[key] == 0 else math.inf)
    return f'<td class="{cls}" title="{_html.escape(title)}">{txt}<br><span class="floor">{_fmt(ratio, 3)}× floor</span></td>'


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:1.5em;color:#222;max-width:1500px}
h1{font-size:1.6em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f0f0f0}td.name{text-align:left;font-family:monospace}
td.pass{background:#d9f2d9}td.fail{background:#f8d0d0;font-weight:bold}
.floor{color:#666;font-size:.8em}
.verdict{display:inline-block;padding:.3em .8em;border-radius:.3em;color:#fff;font-weight:bold}
.verdict.pass{background:#2e8b3d}.verdict.fail{background:#c0392b}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:.6em;margin:.5em 0}
.fig{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start;margin-bottom:1.2em}
.fig img{max-width:640px;border:1px solid #eee}
details{margin:.5em 0}code{background:#f4f4f4;padding:0 .2em}
.verdicts{display:flex;flex-wrap:wrap;gap:.8em;margin:.4em 0}
.vcard{border:2px solid #ccc;border-radius:.4em;padding:.5em .8em}.vcard.pass{border-color:#2e8b3d}.vcard.fail{border-color:#c0392b}
.vcard .verdict{font-size:1.25em}.vline{font-size:.9em;margin-top:.3em;color:#444}
table.matrix td{text-align:center;min-width:7em}td.m0{background:#e3f5e3}td.m1{background:#c6ebc6}td.m2{background:#a5dca5}
td.m3{background:#f8d0d0;font-weight:bold}td.m4{background:#ec9a9a;font-weight:bold}
.fig.grid img{max-width:100%}summary{cursor:pointer;font-weight:bold}
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>simcompress validation: {{ title }}</title>
<style>{{ css }}</style></head><body>
<h1>simcompress validation report</h1>
{{ section }}
<footer><p class="floor">created {{ created }} · simcompress {{ version }} · all figures embedded; no network needed.</p></footer>
</body></html>
"""

_SECTION = """<section class="simcompress-validation">
<div class="answer" id="verdict">
<h2>Verdict</h2>
<div class="verdicts">{% for c in cands %}<div class="vcard {{ 'pass' if c.passed else 'fail' }}"><span class="verdict {{ 'pass' if c.passed else 'fail' }}">{{ c.name }}: {{ 'PASS' if c.passed else 'FAIL' }}</span>
<div class="vline">{{ c.n_failed }} of {{ c.n_checks }} checks failed{% if c.worst %}; worst {{ c.worst }}{% endif %}</div></div>{% endfor %}</div>
<p class="gate">Gate <b>{{ spec.name }}</b>{% if spec.description %}: {{ spec.description }}{% endif %}</p>
{% if false_alarm %}<p class="floor">{{ false_alarm }}</p>{% endif %}
{% for w in warnings %}<div class="warn">⚠ {{ w }}</div>{% endfor %}
</div>
<h2>Feature matrix: distance in units of the noise floor</h2>
<p class="floor">Each cell: W1 / floor and separation power / floor of one feature for one candidate (the floor is the same metric
between halves of the reference, rescaled to the candidate's size). Green: every check of the cell passes, the darker the closer to
its threshold; red: a check fails. Hover for values and thresholds.</p>
<table class="matrix"><tr><th>feature</th>{% for c in cands %}<th>{{ c.name }}</th>{% endfor %}</tr>
{% for row in matrix %}<tr><td class="name"><a href="#g-{{ row.group }}">{{ row.name }}</a></td>{% for cell in row.cells %}{{ cell }}{% endfor %}</tr>{% endfor %}
</table>
<h2>Histograms</h2>
<p class="floor">Reference filled, candidates as lines, candidate / reference below (grey band: reference statistical error). Energies use
logarithmic bins so that the discrete incident energies do not draw a comb.{% if n_skipped_figs %} {{ n_skipped_figs }} further features are in the tables only (figure cap {{ max_figs }}).{% endif %}</p>
{% for g in grid_figs %}<div class="fig grid" id="g-{{ g.group }}"><img alt="histograms {{ g.group }}" src="data:image/png;base64,{{ g.png }}"></div>{% endfor %}
<h2>Multivariate metrics</h2>
<table><tr><th>candidate</th>{% for k in mv_keys %}<th>{{ k }}</th>{% endfor %}</tr>
<tr><td class="name">reference vs reference (floor)</td>{% for k in mv_keys %}<td>{{ mv_floor[k] }}</td>{% endfor %}</tr>
{% for c in cands %}<tr><td class="name">{{ c.name }}</td>{% for k in mv_keys %}{{ c.mv[k] }}{% endfor %}</tr>{% endfor %}
</table>
<p class="floor">FPD/KPD: JetNet definitions (arXiv:2211.10295) on the CaloChallenge high-level vector; FPD ×10³ and KPD ×10³ as in the CaloChallenge tables.
Classifier: held-out AUC / JSD = (ln2 − BCE)/ln2.</p>
{% if bin_rows %}<h2>Per incident-energy bin (worst feature per bin)</h2>
<table><tr><th>bin</th>{% for c in cands %}<th>{{ c.name }}: worst W1 / floor</th>{% endfor %}</tr>
{% for row in bin_rows %}<tr><td class="name">{{ row.label }}</td>{% for cell in row.cells %}{{ cell }}{% endfor %}</tr>{% endfor %}
</table>{% endif %}
<h2>Profiles and images</h2>
{% for f in profile_figs %}<div class="fig"><img alt="{{ f.alt }}" src="data:image/png;base64,{{ f.png }}"></div>{% endfor %}
<h2>Details</h2>
{% if failed %}<details id="failed"><summary>Failed checks ({{ failed|length }})</summary><table>
<tr><th>candidate</th><th>metric</th><th>target</th><th>energy bin</th><th>value</th><th>threshold</th><th>detail</th></tr>
{% for f in failed %}<tr><td class="name">{{ f.candidate }}</td><td class="name">{{ f.metric }}</td><td class="name">{{ f.target }}</td>
<td class="name">{{ f.energy_bin }}</td><td class="fail">{{ fmt(f.value) }}</td><td>{{ fmt(f.threshold) }}</td><td class="name">{{ f.detail }}</td></tr>{% endfor %}
</table></details>{% else %}<p>No check failed.</p>{% endif %}
<details><summary>Per-feature distances with bootstrap errors (W1, KS, separation power)</summary>
<table><tr><th rowspan="2">feature</th><th rowspan="2">ref. mean</th>{% for c in cands %}<th colspan="3">{{ c.name }}</th>{% endfor %}</tr>
<tr>{% for c in cands %}<th>W1</th><th>KS</th><th>sep. power</th>{% endfor %}</tr>
{% for row in feat_rows %}<tr><td class="name">{{ row.name }}</td><td>{{ row.ref_mean }}</td>{% for cell in row.cells %}{{ cell }}{% endfor %}</tr>{% endfor %}
</table></details>
<details><summary>Samples</summary>
<table><tr><th>sample</th><th>source</th><th>events</th><th>checks failed</th><th>E_inc KS D (p)</th></tr>
<tr><td class="name">reference</td><td class="name">{{ ref.source }}</td><td>{{ ref.n }}</td><td></td><td></td></tr>
{% for c in cands %}<tr><td class="name">{{ c.name }}</td><td class="name">{{ c.source }}</td><td>{{ c.n }}</td>
<td class="{{ 'pass' if c.passed else 'fail' }}">{{ c.n_failed }} / {{ c.n_checks }}</td><td>{{ c.einc }}</td></tr>{% endfor %}
</table>
<p>Geometry <code>{{ ref.geometry }}</code>, voxel threshold {{ ref.threshold }} MeV. Noise floor: each metric between disjoint
halves of the reference ({{ ref.n_splits }} random splits of {{ ref.n_half }} events each), rescaled to each candidate's sample
sizes; a distance is read against it ("× floor").{% if ref.cache %} Reference: {{ ref.cache }}.{% endif %}</p></details>
</section>
"""


def _env() -> Any:
    import jinja2

    return jinja2.Environment(autoescape=jinja2.select_autoescape(default=True, default_for_string=True), undefined=jinja2.StrictUndefined)


def report_section(result: ValidationResult, *, max_feature_figures: int | None = None, progress: bool = False) -> str:
    """The validation report as an HTML fragment (``<section>``), for embedding in other reports.

    ``max_feature_figures`` caps the per-feature figures (default :data:`MAX_FEATURE_FIGURES`).
    """
    if max_feature_figures is None:
        max_feature_figures = MAX_FEATURE_FIGURES
    from markupsafe import Markup

    ref = result.reference
    rt = ref.features
    ctabs = {n: c.sample.features for n, c in result.candidates.items() if c.sample is not None}
    idx = _check_index(result)
    cands = []
    for n, c in result.candidates.items():
        chks = [k for k in result.checks if k.candidate == n]
        mv = {}
        for key in ("fpd", "kpd"):
            m = c.multivariate.get(key)
            chk = idx.get((n, key, key, ""))
            cls = "" if chk is None else ("pass" if chk.passed else "fail")
            if m is None:
                mv[key] = Markup("<td>–</td>")
            elif "skipped" in m:
                mv[key] = Markup(f'<td title="{_html.escape(m["skipped"])}">skipped</td>')
            else:
                mv[key] = Markup(f'<td class="{cls}">{_fmt(m["value"] * 1e3)} ± {_fmt(m["err"] * 1e3, 2)}</td>')
        for kind, m in c.classifier.items():
            chk = idx.get((n, "auc", f"classifier:{kind}", ""))
            cls = "" if chk is None else ("pass" if chk.passed else "fail")
            if "skipped" in m:
                mv[f"AUC ({kind})"] = Markup(f'<td title="{_html.escape(m["skipped"])}">skipped</td>')
            else:
                mv[f"AUC ({kind})"] = Markup(f'<td class="{cls}">{_fmt(m["auc"], 3)} / JSD {_fmt(m["jsd"], 2)}</td>')
        e = c.incident_energy
        cands.append(
            {
                "name": n,
                "source": c.source,
                "n": c.n_events,
                "passed": all(k.passed for k in chks),
                "n_failed": sum(not k.passed for k in chks),
                "n_checks": len(chks),
                "einc": f"{_fmt(e['ks'], 3)} ({_fmt(e['pvalue'], 2)})" + (" ⚠" if e["mismatch"] else ""),
                "worst": _worst(chks),
                "mv": mv,
            }
        )
    mv_keys = ["fpd", "kpd"] + [f"AUC ({k})" for k in result.spec.classifier.inputs if result.spec.classifier.enabled]
    mv_floor: dict[str, str] = {}
    for key in ("fpd", "kpd"):
        fl = ref.multivariate_floor.get(key)
        mv_floor[key] = "–" if not fl else (fl.get("skipped", "") and "skipped") or f"{_fmt(fl['value'] * 1e3)} ± {_fmt(fl['err'] * 1e3, 2)}"
    for k in result.spec.classifier.inputs:
        fl = ref.classifier_floor.get(k)
        mv_floor[f"AUC ({k})"] = "–" if not fl else ("skipped" if "skipped" in fl else f"{_fmt(fl['auc'], 3)}")
    for c in cands:
        for k in mv_keys:
            c["mv"].setdefault(k, Markup("<td>–</td>"))

    names = rt.names
    feat_rows = []
    for f in names:
        cells = []
        for n, c in result.candidates.items():
            m = c.features[f]
            cells += [Markup(_metric_cell(result, idx, n, met, f, key, m)) for met, key in (("w1", "w1"), ("ks", "ks"), ("separation_power", "sp"))]
        feat_rows.append({"name": f, "ref_mean": _fmt(float(np.mean(rt[f]))), "cells": cells})

    bin_rows = []
    for b in ref.bins:
        cells = []
        for n, c in result.candidates.items():
            fm = c.per_energy_bin.get(b.label, {})
            if "_skipped" in fm or not fm:
                why = fm.get("_skipped", {}).get("skipped", "not computed") if fm else "not computed"
                cells.append(Markup(f'<td title="{_html.escape(why)}">skipped</td>'))
                continue
            worst = max(fm.items(), key=lambda kv: kv[1]["w1"] / kv[1]["floor"]["w1"] if kv[1]["floor"]["w1"] > 0 else 0.0)
            wf, wm = worst
            chk = idx.get((n, "w1", wf, b.label))
            cls = "" if chk is None else ("pass" if chk.passed else "fail")
            ratio = wm["w1"] / wm["floor"]["w1"] if wm["floor"]["w1"] > 0 else 0.0
            cells.append(Markup(f'<td class="{cls}">{_html.escape(wf)}: {_fmt(ratio, 3)}×</td>'))
        bin_rows.append({"label": b.label, "cells": cells})

    profile_figs = []
    if ctabs:
        profile_figs.append({"alt": "longitudinal profile", "png": longitudinal_figure(rt, ctabs)})
        profile_figs.append({"alt": "radial profiles", "png": radial_figure(rt, ctabs)})
        profile_figs.append({"alt": "voxel-energy spectrum", "png": voxel_spectrum_figure(rt, ctabs)})
        profile_figs.append({"alt": "average shower images", "png": image_figure(rt, ctabs)})

    matrix = []
    groups, n_skipped = _grid_groups(names, max_feature_figures)
    group_of = {f: g for g, fs in groups for f in fs}
    for f in names:
        cells = [Markup(_matrix_cell(idx, n, f, c.features[f])) for n, c in result.candidates.items()]
        matrix.append({"name": f, "group": group_of.get(f, "none"), "cells": cells})

    grid_figs = []
    ctx = task = None
    if progress:
        from rich.progress import Progress

        ctx = Progress(transient=True)
        ctx.start()
        task = ctx.add_task("figures", total=len(groups))
    try:
        for g, fs in groups:
            if ctabs:
                grid_figs.append({"group": g, "png": histogram_grid_figure(fs, rt, ctabs)})
            if ctx is not None:
                ctx.advance(task)
    finally:
        if ctx is not None:
            ctx.stop()

    false_alarm = ""
    try:
        from .gate import false_alarm_summary

        false_alarm = str(false_alarm_summary(result.spec, ref).get("sentence", ""))
    except (ImportError, ValueError, KeyError):  # a gate module without false-alarm control, or no calibration
        false_alarm = ""
    ci = ref.cache_info or {}
    cache_txt = {"loaded": "loaded from the cached reference", "written": "computed and cached"}.get(ci.get("status", ""), "")
    warnings_ = [w for c in result.candidates.values() for w in c.warnings] + list(ref.notes)
    tmpl = _env().from_string(_SECTION)
    return tmpl.render(
        spec=result.spec,
        cands=cands,
        ref={
            "source": ref.sample.source,
            "n": ref.n_events,
            "geometry": ref.geometry.name,
            "threshold": _fmt(rt.threshold_mev),
            "n_splits": result.spec.noise_floor.n_splits,
            "n_half": ref.floor.n_half,
            "cache": (f"{cache_txt} ({ci['path']})" if cache_txt and ci.get("path") else cache_txt),
        },
        warnings=warnings_,
        false_alarm=false_alarm,
        failed=result.failed_checks(),
        fmt=_fmt,
        mv_keys=mv_keys,
        mv_floor=mv_floor,
        feat_rows=feat_rows,
        matrix=matrix,
        bin_rows=bin_rows,
        profile_figs=profile_figs,
        grid_figs=grid_figs,
        n_skipped_figs=n_skipped,
        max_figs=max_feature_figures,
    )


def _matrix_cell(idx: dict[Any, Any], cand: str, feat: str, m: dict[str, Any]) -> str:
    """W1 and separation power in units of the floor, coloured by the gate (m0-m2 pass, m3-m4 fail)."""
    parts, titles, worst = [], [], 0.0
    failed = False
    for metric, key, short in (("w1", "w1", "W1"), ("separation_power", "sp", "SP")):
        fl = m["floor"][key]
        v = m[key]
        ratio = v / fl if fl > 0 else (0.0 if v == 0 else math.inf)
        parts.append(f"{_fmt(ratio, 2)}")
        chk = idx.get((cand, metric, feat, ""))
        t = f"{short} {_fmt(v)} = {_fmt(ratio, 3)}× floor {_fmt(fl)}"
        if chk is not None:
            t += f", threshold {_fmt(chk.threshold)} ({'pass' if chk.passed else 'FAIL'})"
            failed |= not chk.passed
            if chk.threshold > 0:
                worst = max(worst, chk.value / chk.threshold)
        titles.append(t)
    cls = ("m4" if worst > 2 else "m3") if failed else "m2" if worst > 0.7 else "m1" if worst > 0.35 else "m0"
    return f'<td class="{cls}" title="{_html.escape("; ".join(titles))}">{" / ".join(parts)}</td>'


def render_html(result: ValidationResult, **kwargs: Any) -> str:
    """The complete self-contained HTML page."""
    from markupsafe import Markup

    from .. import __version__ as version

    section = report_section(result, **kwargs)
    return _env().from_string(_TEMPLATE).render(
        title=", ".join(result.candidates), css=Markup(_CSS), section=Markup(section), created=result.created, version=version
    )


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        Path(tmp).chmod(0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(
    result: ValidationResult,
    out_dir: str | os.PathLike[str],
    *,
    html: bool = True,
    progress: bool = False,
    max_feature_figures: int | None = None,
) -> Path:
    """Write ``metrics.json`` and (optionally) ``report.html`` into ``out_dir``; each file atomically.

    Both are rendered in memory first, so a failure leaves no partial output.
    """
    out = Path(out_dir)
    js = result.to_json()
    page = render_html(result, progress=progress, max_feature_figures=max_feature_figures) if html else None
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "metrics.json", js + "\n")
    if page is not None:
        _atomic_write(out / "report.html", page)
    return out
