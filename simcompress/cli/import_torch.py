"""``simcompress import-torch``: a user's PyTorch generator (class + state dict) as a simcompress bundle."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import ConfigError
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

__all__ = ["import_torch_cmd"]


@app.command("import-torch")
def import_torch_cmd(
    architecture: str = typer.Argument(..., help="Import path of the network class: 'package.module:Class' or 'path/to/file.py:Class'."),
    weights: Path = typer.Option(..., "--weights", "-w", help="State dict: .safetensors, or a .pt/.pth read with torch.load(weights_only=True)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output generator bundle directory."),
    geometry: str = typer.Option(..., "--geometry", "-g", help="Geometry name or YAML of the produced showers."),
    latent_dim: int = typer.Option(..., "--latent-dim", help="Noise width."),
    kwargs: str = typer.Option("{}", "--kwargs", help="Constructor arguments as a JSON object."),
    input_mode: str = typer.Option("z,c", "--input", help="'z,c' (forward(z, c)) or 'concat' (forward(cat([z, c], 1)))."),
    condition: str = CONDITION_OPT,
    unit: str = UNIT_OPT,
    cond_scale: float = CONDITION_SCALE_OPT,
    cond_offset: float = CONDITION_OFFSET_OPT,
    latent: str = LATENT_OPT,
    output: str = POSTPROCESS_OPT,
    output_scale: float = OUTPUT_SCALE_OPT,
    multiply_by_energy: bool = MULTIPLY_BY_ENERGY_OPT,
    energy_range: str | None = ENERGY_RANGE_OPT,
) -> None:
    """Import a PyTorch generator from its class (import path + JSON kwargs) and a state dict."""
    from ..generators import save_generator
    from ..interop.external import DEFAULT_ENERGY_RANGE_MEV, _build_network, load_state_file, wrap_generator

    try:
        kw = json.loads(kwargs)
    except json.JSONDecodeError as err:
        msg = f"--kwargs: not JSON ({err})"
        raise ConfigError(msg) from None
    if not isinstance(kw, dict):
        msg = "--kwargs: expected a JSON object"
        raise ConfigError(msg)
    if input_mode not in ("z,c", "concat"):
        msg = f"--input: {input_mode!r}; allowed: z,c, concat"
        raise ConfigError(msg)
    from ..interop.external import ExternalSpec, LatentSpec

    probe = ExternalSpec(source="import", model=architecture, kwargs=kw, latent=LatentSpec(dim=latent_dim))
    net = _build_network(probe)
    load_state_file(net, weights)
    cond, post = wrap_specs(condition, unit, cond_scale, cond_offset, output, output_scale, multiply_by_energy)
    gen = wrap_generator(net, geometry=geometry, latent_dim=latent_dim, model=architecture, kwargs=kw, input=input_mode,  # type: ignore[arg-type]
                         latent=latent, condition=cond, postprocess=post,  # type: ignore[arg-type]
                         energy_range_mev=parse_energy_range(energy_range) or DEFAULT_ENERGY_RANGE_MEV)
    save_generator(gen, out, card={"source": {"architecture": architecture, "kwargs": kw, "weights_file": str(weights)}})
    console.print(f"wrote {out} ({architecture}, {sum(p.numel() for p in gen.network.parameters()):,} parameters, kind 'external')")
