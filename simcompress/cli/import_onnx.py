"""``simcompress import-onnx``: a user's ONNX generator as a simcompress bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, console
from ._options import (
    CONDITION_OFFSET_OPT,
    CONDITION_OPT,
    CONDITION_SCALE_OPT,
    ENERGY_RANGE_OPT,
    LATENT_OPT,
    MULTIPLY_BY_ENERGY_OPT,
    OUTPUT_SCALE_OPT,
    POSTPROCESS_OPT,
    UNIT_OPT,
    parse_energy_range,
    wrap_specs,
)

__all__ = ["import_onnx_cmd"]


@app.command("import-onnx")
def import_onnx_cmd(
    model: Path = typer.Argument(..., help="ONNX generator network (inputs (z, c) or one concatenated input cat(z, c))."),
    out: Path = typer.Option(..., "--out", "-o", help="Output generator bundle directory."),
    geometry: str = typer.Option(..., "--geometry", "-g", help="Geometry name or YAML of the produced showers."),
    latent_dim: int = typer.Option(..., "--latent-dim", help="Noise width (the first latent_dim features of a concatenated input)."),
    condition: str = CONDITION_OPT,
    unit: str = UNIT_OPT,
    cond_scale: float = CONDITION_SCALE_OPT,
    cond_offset: float = CONDITION_OFFSET_OPT,
    latent: str = LATENT_OPT,
    output: str = POSTPROCESS_OPT,
    output_scale: float = OUTPUT_SCALE_OPT,
    multiply_by_energy: bool = MULTIPLY_BY_ENERGY_OPT,
    energy_range: str | None = ENERGY_RANGE_OPT,
    tolerance: float = typer.Option(1e-6, "--tolerance", help="Refuse when max |torch - ONNX Runtime| exceeds this times max |output|."),
) -> None:
    """Import an ONNX generator: convert it to torch layers, check it against ONNX Runtime, write a bundle."""
    from .._provenance import sha256_file
    from ..generators import save_generator
    from ..interop.onnx import import_onnx

    cond, post = wrap_specs(condition, unit, cond_scale, cond_offset, output, output_scale, multiply_by_energy)
    gen, check = import_onnx(model, geometry=geometry, latent_dim=latent_dim, condition=cond, postprocess=post, latent=latent,
                             energy_range_mev=parse_energy_range(energy_range), tolerance=tolerance)
    card = {"source": {"onnx_file": str(model), "onnx_sha256": sha256_file(model)}, "onnxruntime_check": check}
    save_generator(gen, out, card=card)
    console.print(f"converted {model} ({len(gen.spec.graph['ops'])} operations, {sum(p.numel() for p in gen.parameters()):,} parameters)")
    console.print(f"ONNX Runtime check on {check['n_inputs']} seeded inputs: max |diff| {check['max_abs_diff']:.3g}, "
                  f"relative {check['max_rel_diff']:.3g} (tolerance {tolerance:g})")
    console.print(f"wrote {out} (kind 'external', load with simcompress.load_generator or any --model option)")
