"""The report's figures, each a base64 PNG: CaloChallenge-style histogram grids, profiles, images.

Reference filled, candidates as lines, ratio panels below; layer energies are drawn as
E_layer / E_inc and energies on log bins, so the discrete ds1 incident energies draw no comb.
matplotlib (Agg) and mplhep are imported when a figure is drawn.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

from .features import VOXEL_LOG10_EDGES, FeatureTable

__all__ = [
    "MAX_FEATURE_FIGURES",
    "histogram_grid_figure",
    "image_figure",
    "longitudinal_figure",
    "radial_figure",
    "voxel_spectrum_figure",
]


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
