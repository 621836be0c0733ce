"""Option definitions shared by several commands (spelled once, so they read the same everywhere)."""

from __future__ import annotations

from typing import Any

import typer

from ..errors import ConfigError

__all__ = [
    "CALIBRATION_EVENTS_OPT",
    "CONDITION_OFFSET_OPT",
    "CONDITION_OPT",
    "CONDITION_SCALE_OPT",
    "ENERGY_BRANCH_OPT",
    "ENERGY_RANGE_OPT",
    "ENERGY_UNIT_OPT",
    "FINETUNE_EVENTS_OPT",
    "LATENT_OPT",
    "MEASURE_SECONDS_OPT",
    "MULTIPLY_BY_ENERGY_OPT",
    "OUTPUT_SCALE_OPT",
    "POSTPROCESS_OPT",
    "PROGRESS_OPT",
    "TREE_OPT",
    "UNIT_OPT",
    "VOXELS_OPT",
    "VOXEL_UNIT_OPT",
    "parse_energy_range",
    "read_options",
    "wrap_specs",
]

#: ``--progress/--no-progress`` of every command with a progress bar
PROGRESS_OPT = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")

# Options naming where the showers are in a user's file (simcompress.showers.layout.ReadOptions);
# every command that reads shower files takes them.
TREE_OPT = typer.Option(None, "--tree", help="TTree/RNTuple holding the showers (default: 'showers' or the file's only tree).")
ENERGY_BRANCH_OPT = typer.Option(
    None, "--energy-branch", help="Incident-energy branch/dataset (default: incident_energy, TotalEnergy, energy, E0, ...)."
)
VOXELS_OPT = typer.Option(
    None, "--voxels",
    help="Voxel branches/datasets: comma-separated names or glob patterns, e.g. cells | 'cell_*' | layer_0,layer_1,layer_2.",
)
ENERGY_UNIT_OPT = typer.Option(None, "--energy-unit", help="Unit of the incident energy in the file: eV, keV, MeV (default), GeV, TeV.")
VOXEL_UNIT_OPT = typer.Option(None, "--voxel-unit", help="Unit of the voxel energies in the file (default MeV).")


def read_options(
    tree: str | None = None,
    energy_branch: str | None = None,
    voxels: str | None = None,
    energy_unit: str | None = None,
    voxel_unit: str | None = None,
) -> Any:
    """The CLI's file-layout options as a ``ReadOptions``."""
    from ..showers.layout import ReadOptions

    return ReadOptions.make(tree=tree, energy_branch=energy_branch, voxels=voxels, energy_unit=energy_unit,
                            voxel_unit=voxel_unit)


def parse_energy_range(text: str | None) -> tuple[float, float] | None:
    """``--energy-range 'LOW,HIGH'`` (MeV) as a pair; ``None`` when not given."""
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        msg = f"--energy-range: expected 'LOW,HIGH' in MeV, got {text!r}"
        raise ConfigError(msg) from None
    return lo, hi


# compress and sweep: the same measurement settings
FINETUNE_EVENTS_OPT = typer.Option(20_000, "--finetune-events", help="Reference showers used for fine-tuning.")
CALIBRATION_EVENTS_OPT = typer.Option(2048, "--calibration-events", help="Samples for quantizer calibration.")
MEASURE_SECONDS_OPT = typer.Option(0.3, "--measure-seconds", help="Minimum seconds per timed round (3 rounds, best kept).")


# import-onnx and import-torch: how the wrapped network meets energies and showers
_CONDITIONS = "log10-energy, log-energy, energy, scaled-log-energy"
CONDITION_OPT = typer.Option(
    "log10-energy", "--condition",
    help=f"How E becomes the condition: {_CONDITIONS}, or an import path 'pkg.mod:fn' (fn(E_MeV) -> (N, 1)).",
)
UNIT_OPT = typer.Option("MeV", "--unit", help="Energy unit of the condition and of --multiply-by-energy (keV, MeV, GeV, TeV).")
CONDITION_SCALE_OPT = typer.Option(1.0, "--condition-scale", help="c = (f(E) - offset) / scale.")
CONDITION_OFFSET_OPT = typer.Option(0.0, "--condition-offset", help="c = (f(E) - offset) / scale.")
LATENT_OPT = typer.Option("normal", "--latent", help="Noise distribution: normal or uniform (on [-1, 1]).")
POSTPROCESS_OPT = typer.Option(
    "identity", "--postprocess",
    help="Output transform: identity, relu, exp, abs, or an import path 'pkg.mod:fn' (fn(y, E_MeV) -> showers MeV).",
)
OUTPUT_SCALE_OPT = typer.Option(1.0, "--output-scale", help="Showers = scale * output(y) [* E/unit].")
MULTIPLY_BY_ENERGY_OPT = typer.Option(
    False, "--multiply-by-energy", help="The network outputs energy fractions: multiply by E/unit."
)
ENERGY_RANGE_OPT = typer.Option(None, "--energy-range", help="Trained range 'LOW,HIGH' in MeV (default 256,4194304).")


def wrap_specs(condition: str, unit: str, scale: float, offset: float, output: str, output_scale: float,
               multiply_by_energy: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``condition`` and ``postprocess`` specs of an external generator from the options above."""
    cond: dict[str, Any] = {"kind": condition, "unit": unit, "scale": scale, "offset": offset}
    if ":" in condition:
        cond = {"function": condition}
    post: dict[str, Any] = {"output": output, "scale": output_scale, "multiply_by_energy": multiply_by_energy, "unit": unit}
    if ":" in output:
        post = {"function": output}
    return cond, post
