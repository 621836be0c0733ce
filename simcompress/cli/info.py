"""``simcompress info``: describe shower files (geometry, events, energies, layout, provenance)."""

from __future__ import annotations

import json
from typing import Any

import typer

from .._progress import progress_bar
from ._app import app, console
from ._options import ENERGY_BRANCH_OPT, ENERGY_UNIT_OPT, TREE_OPT, VOXEL_UNIT_OPT, VOXELS_OPT, read_options

__all__ = ["describe_file", "file_statistics", "info_command"]


def _layer_shapes(geometry: Any) -> str:
    """``"3x96 12x12 12x6"``, or ``"25 x 25x25"`` when all layers match; empty for cylinders."""
    if geometry.kind != "cartesian":
        return ""
    shapes = [f"{a}x{b}" for a, b in (layer.shape for layer in geometry.layers)]
    return f"{len(shapes)} x {shapes[0]}" if len(set(shapes)) == 1 and len(shapes) > 2 else " ".join(shapes)


def describe_file(path: str, geometry: str | None = None, options: Any = None) -> dict[str, Any]:
    """Summary of a shower file (or folder/glob): geometry, events, energy range, layout, provenance."""
    from ..showers.io import open_showers

    r = open_showers(path, geometry=geometry, options=options)
    e = r.incident_energy()
    m = r.metadata
    return {
        "path": str(path),
        "files": [str(f) for f in r.files],
        "format": ",".join(r.formats),
        "layout": r.layout,
        "source": r.source_layout,
        "geometry": r.geometry.name,
        "geometry_fingerprint": r.geometry.fingerprint,
        "n_layers": r.geometry.n_layers,
        "geometry_kind": r.geometry.kind,
        "layer_shapes": _layer_shapes(r.geometry),
        "n_voxels": r.geometry.n_voxels,
        "n_events": r.n_events,
        "incident_energy_mev": {"min": float(e.min()), "max": float(e.max()), "mean": float(e.mean())},
        "n_distinct_energies": len(set(e[: min(len(e), 1_000_000)].tolist())),
        "provenance": m,
    }


def file_statistics(path: str, progress: bool = False, geometry: str | None = None, options: Any = None) -> dict[str, Any]:
    """Stream a shower file once: mean and spread of E_dep/E_inc and the mean energy fraction per layer."""
    import numpy as np

    from ..showers.io import open_showers

    r = open_showers(path, geometry=geometry, options=options)
    n = 0
    s1 = s2 = 0.0
    layer_sum = np.zeros(r.geometry.n_layers)
    total = 0.0
    nonzero = 0
    with progress_bar("reading", r.n_events, enabled=progress, transient=True) as bar:
        for chunk in r.iterate():
            ratio = chunk.total_energy / chunk.incident_energy
            n += len(chunk)
            s1 += float(ratio.sum())
            s2 += float((ratio**2).sum())
            layer_sum += chunk.layer_energies().sum(axis=0)
            total += float(chunk.total_energy.sum())
            nonzero += int(np.count_nonzero(chunk.showers))
            bar.advance(len(chunk))
    mean = s1 / n
    return {
        "e_dep_over_e_inc_mean": mean,
        "e_dep_over_e_inc_std": float(np.sqrt(max(s2 / n - mean**2, 0.0))),
        "layer_energy_fraction": {
            str(layer.id): float(x / total) if total > 0 else 0.0 for layer, x in zip(r.geometry.layers, layer_sum, strict=False)
        },
        "voxel_occupancy": nonzero / (n * r.geometry.n_voxels),
    }


@app.command("info")
def info_command(
    files: list[str] = typer.Argument(..., help="Shower files (.root, .h5), folders or glob patterns."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
    full: bool = typer.Option(False, "--full", help="Print the complete provenance (software versions, config)."),
    stats: bool = typer.Option(False, "--stats", help="Also read all showers: E_dep/E_inc, layer fractions, occupancy."),
    geometry: str | None = typer.Option(
        None, "--geometry", "-g", help="Geometry of files that do not record one (name or YAML/XML path)."
    ),
    tree: str | None = TREE_OPT,
    energy_branch: str | None = ENERGY_BRANCH_OPT,
    voxels: str | None = VOXELS_OPT,
    energy_unit: str | None = ENERGY_UNIT_OPT,
    voxel_unit: str | None = VOXEL_UNIT_OPT,
) -> None:
    """Describe shower files: geometry, event count, energy range, layout and provenance.

    Files written by other tools are read too: name the tree, branches and units with
    --tree, --energy-branch, --voxels, --energy-unit, --voxel-unit (see docs/showers.md).
    """
    opts = read_options(tree, energy_branch, voxels, energy_unit, voxel_unit)
    summaries = [describe_file(f, geometry, opts) for f in files]
    if stats:
        for s in summaries:
            s["statistics"] = file_statistics(s["path"], progress=not as_json, geometry=geometry, options=opts)
    if as_json:
        console.print_json(json.dumps(summaries if len(summaries) > 1 else summaries[0], default=str))
        return
    for s in summaries:
        prov = s["provenance"]
        e = s["incident_energy_mev"]
        lines = [
            f"[bold]{s['path']}[/bold]" + (f" ({len(s['files'])} files)" if len(s["files"]) > 1 else ""),
            f"  format      {s['format']} ({s['layout']})",
            "  read from   " + ", ".join(f"{k} {v}" for k, v in s["source"].items()),
            f"  geometry    {s['geometry']}: {s['n_layers']} layers, {s['n_voxels']} voxels (fingerprint {s['geometry_fingerprint']})"
            + (f", Cartesian {s['layer_shapes']}" if s.get("layer_shapes") else ""),
            f"  events      {s['n_events']}",
            f"  E_inc       {e['min']:.6g} .. {e['max']:.6g} MeV (mean {e['mean']:.6g}, {s['n_distinct_energies']} distinct)",
        ]
        if prov:
            for key in ("generator", "seed", "energies", "created", "content_hash"):
                if key in prov:
                    lines.append(f"  {key:<11} {prov[key]}")
            soft = prov.get("software", {})
            if soft:
                lines.append("  software    " + ", ".join(f"{k} {v}" for k, v in soft.items() if k in ("simcompress", "numpy", "uproot")))
            if full:
                lines.append("  provenance  " + json.dumps(prov, indent=2, sort_keys=True, default=str).replace("\n", "\n  "))
        else:
            lines.append("  provenance  (none: plain CaloChallenge file, geometry inferred from the voxel count)")
        if "statistics" in s:
            st = s["statistics"]
            lines.append(
                f"  E_dep/E_inc {st['e_dep_over_e_inc_mean']:.4f} +- {st['e_dep_over_e_inc_std']:.4f} (std), "
                f"voxel occupancy {st['voxel_occupancy']:.3f}"
            )
            lines.append(
                "  layers      " + ", ".join(f"{k}: {v:.3f}" for k, v in st["layer_energy_fraction"].items())
            )
        console.print("\n".join(lines), highlight=False, soft_wrap=True)
