"""Quick physics fidelity figures for training monitors and model cards (numpy only).

Per incident energy (the discrete ds1 energies, or ``n_bins`` log bins for a continuous
spectrum): mean response ``<E_dep / E_inc>``, resolution ``std / mean`` of the response, and
mean energy fraction per layer. :func:`compare_response` puts a generated sample next to a
reference one. The full validation suite (KS, W1, classifier tests) lives in
:mod:`simcompress.validation`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["compare_response", "energy_bins", "response_table"]


def energy_bins(incident: np.ndarray, max_discrete: int = 30, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(bin index per event, representative energy per bin)``.

    Discrete spectra (at most ``max_discrete`` distinct values) use one bin per value,
    others ``n_bins`` log-spaced bins.
    """
    e = np.asarray(incident, dtype=np.float64)
    values = np.unique(e)
    if len(values) <= max_discrete:
        return np.searchsorted(values, e), values
    edges = np.geomspace(e.min(), e.max() * (1 + 1e-9), n_bins + 1)
    idx = np.clip(np.searchsorted(edges, e, side="right") - 1, 0, n_bins - 1)
    return idx, np.sqrt(edges[:-1] * edges[1:])


def response_table(
    incident: np.ndarray, showers: np.ndarray, layer_offsets: np.ndarray, bins: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Per-energy-bin ``n``, ``mean_response``, ``resolution`` and ``layer_fraction`` (bins, L)."""
    idx, centres = bins if bins is not None else energy_bins(incident)
    s = np.asarray(showers, dtype=np.float64)
    tot = s.sum(axis=1)
    r = tot / np.asarray(incident, dtype=np.float64)
    layers = np.add.reduceat(s, np.asarray(layer_offsets)[:-1], axis=1)
    frac = layers / np.where(tot > 0, tot, 1.0)[:, None]
    nb = len(centres)
    n = np.bincount(idx, minlength=nb).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(idx, r, minlength=nb) / n
        var = np.bincount(idx, r * r, minlength=nb) / n - mean**2
        res = np.sqrt(np.clip(var, 0, None)) / mean
        lf = np.stack([np.bincount(idx, frac[:, j], minlength=nb) / n for j in range(frac.shape[1])], axis=1)
    return {"energy_mev": centres, "n": n, "mean_response": mean, "resolution": res, "layer_fraction": lf}


def compare_response(
    ref_incident: np.ndarray, ref_showers: np.ndarray, gen_incident: np.ndarray, gen_showers: np.ndarray, layer_offsets: np.ndarray
) -> dict[str, Any]:
    """Generated vs reference per-energy response, resolution and layer fractions.

    Returns JSON-ready lists plus the summary figures ``max_abs_mean_dev_pct`` (worst per-energy
    deviation of the mean response, %), ``max_abs_resolution_dev_pct`` (worst relative
    deviation of the resolution, %) and ``max_abs_layer_fraction_dev`` (worst absolute
    deviation of a mean layer fraction).
    """
    ref_idx, centres = energy_bins(ref_incident)
    if len(centres) == len(np.unique(ref_incident)):
        gen_idx = np.searchsorted(centres, np.asarray(gen_incident, dtype=np.float64))
        gen_idx = np.clip(gen_idx, 0, len(centres) - 1)
    else:
        edges = np.geomspace(np.min(ref_incident), np.max(ref_incident) * (1 + 1e-9), len(centres) + 1)
        gen_idx = np.clip(np.searchsorted(edges, gen_incident, side="right") - 1, 0, len(centres) - 1)
    ref = response_table(ref_incident, ref_showers, layer_offsets, (ref_idx, centres))
    gen = response_table(gen_incident, gen_showers, layer_offsets, (gen_idx, centres))
    ok = (ref["n"] > 1) & (gen["n"] > 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_dev = 100.0 * (gen["mean_response"] / ref["mean_response"] - 1.0)
        res_dev = 100.0 * (gen["resolution"] / ref["resolution"] - 1.0)
    lf_dev = gen["layer_fraction"] - ref["layer_fraction"]

    def _l(a: np.ndarray) -> list[Any]:
        return np.round(np.where(np.isfinite(a), a, np.nan), 6).tolist()

    return {
        "energy_mev": _l(centres),
        "n_reference": ref["n"].astype(int).tolist(),
        "n_generated": gen["n"].astype(int).tolist(),
        "reference_mean_response": _l(ref["mean_response"]),
        "generated_mean_response": _l(gen["mean_response"]),
        "mean_response_dev_pct": _l(mean_dev),
        "reference_resolution": _l(ref["resolution"]),
        "generated_resolution": _l(gen["resolution"]),
        "resolution_dev_pct": _l(res_dev),
        "reference_layer_fraction": _l(ref["layer_fraction"]),
        "generated_layer_fraction": _l(gen["layer_fraction"]),
        "max_abs_mean_dev_pct": float(np.nanmax(np.abs(mean_dev[ok]))) if ok.any() else float("nan"),
        "max_abs_resolution_dev_pct": float(np.nanmax(np.abs(res_dev[ok]))) if ok.any() else float("nan"),
        "max_abs_layer_fraction_dev": float(np.nanmax(np.abs(lf_dev[ok]))) if ok.any() else float("nan"),
    }
