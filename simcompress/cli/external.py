"""``simcompress import-onnx`` / ``import-torch``: a user's own generator as a simcompress bundle."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import ConfigError
from ._app import app, console

_CONDITIONS = "log10-energy, log-energy, energy, scaled-log-energy"


def _energy_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        msg = f"--energy-range: expected 'LOW,HIGH' in MeV, got {text!r}"
        raise ConfigError(msg) from None
    return lo, hi


def _specs(condition: str, unit: str, scale: float, offset: float, output: str, output_scale: float,
           multiply_by_energy: bool) -> tuple[dict, dict]:
    cond = {"kind": condition, "unit": unit, "scale": scale, "offset": offset}
    if ":" in condition:
        cond = {"function": condition}
    post = {"output": output, "scale": output_scale, "multiply_by_energy": multiply_by_energy, "unit": unit}
    if ":" in output:
        post = {"function": output}
    return cond, post


_COND_HELP = f"How E becomes the condition: {_CONDITIONS}, or an import path 'pkg.mod:fn' (fn(E_MeV) -> (N, 1))."
_POST_HELP = "Output transform: identity, relu, exp, abs, or an import path 'pkg.mod:fn' (fn(y, E_MeV) -> showers MeV)."


@app.command("import-onnx")
def import_onnx_cmd(
    model: Path = typer.Argument(..., help="ONNX generator network (inputs (z, c) or one concatenated input cat(z, c))."),
    out: Path = typer.Option(..., "--out", "-o", help="Output generator bundle directory."),
    geometry: str = typer.Option(..., "--geometry", "-g", help="Geometry name or YAML of the produced showers."),
    latent_dim: int = typer.Option(..., "--latent-dim", help="Noise width (the first latent_dim features of a concatenated input)."),
    condition: str = typer.Option("log10-energy", "--condition", help=_COND_HELP),
    unit: str = typer.Option("MeV", "--unit", help="Energy unit of the condition and of --multiply-by-energy (keV, MeV, GeV, TeV)."),
    cond_scale: float = typer.Option(1.0, "--condition-scale", help="c = (f(E) - offset) / scale."),
    cond_offset: float = typer.Option(0.0, "--condition-offset", help="c = (f(E) - offset) / scale."),
    latent: str = typer.Option("normal", "--latent", help="Noise distribution: normal or uniform (on [-1, 1])."),
    output: str = typer.Option("identity", "--postprocess", help=_POST_HELP),
    output_scale: float = typer.Option(1.0, "--output-scale", help="Showers = scale * output(y) [* E/unit]."),
    multiply_by_energy: bool = typer.Option(False, "--multiply-by-energy", help="The network outputs energy fractions: multiply by E/unit."),
    energy_range: str | None = typer.Option(None, "--energy-range", help="Trained range 'LOW,HIGH' in MeV (default 256,4194304)."),
    tolerance: float = typer.Option(1e-6, "--tolerance", help="Refuse when max |torch - ONNX Runtime| exceeds this times max |output|."),
) -> None:
    """Import an ONNX generator: convert it to torch layers, check it against ONNX Runtime, write a bundle."""
    from .._provenance import sha256_file
    from ..generators import save_generator
    from ..interop.onnx import import_onnx

    cond, post = _specs(condition, unit, cond_scale, cond_offset, output, output_scale, multiply_by_energy)
    gen, check = import_onnx(model, geometry=geometry, latent_dim=latent_dim, condition=cond, postprocess=post, latent=latent,
                             energy_range_mev=_energy_range(energy_range), tolerance=tolerance)
    card = {"source": {"onnx_file": str(model), "onnx_sha256": sha256_file(model)}, "onnxruntime_check": check}
    save_generator(gen, out, card=card)
    console.print(f"converted {model} ({len(gen.spec.graph['ops'])} operations, {sum(p.numel() for p in gen.parameters()):,} parameters)")
    console.print(f"ONNX Runtime check on {check['n_inputs']} seeded inputs: max |diff| {check['max_abs_diff']:.3g}, "
                  f"relative {check['max_rel_diff']:.3g} (tolerance {tolerance:g})")
    console.print(f"wrote {out} (kind 'external', load with simcompress.load_generator or any --model option)")


@app.command("import-torch")
def import_torch_cmd(
    architecture: str = typer.Argument(..., help="Import path of the network class: 'package.module:Class' or 'path/to/file.py:Class'."),
    weights: Path = typer.Option(..., "--weights", "-w", help="State dict: .safetensors, or a .pt/.pth read with torch.load(weights_only=True)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output generator bundle directory."),
    geometry: str = typer.Option(..., "--geometry", "-g", help="Geometry name or YAML of the produced showers."),
    latent_dim: int = typer.Option(..., "--latent-dim", help="Noise width."),
    kwargs: str = typer.Option("{}", "--kwargs", help="Constructor arguments as a JSON object."),
    input_mode: str = typer.Option("z,c", "--input", help="'z,c' (forward(z, c)) or 'concat' (forward(cat([z, c], 1)))."),
    condition: str = typer.Option("log10-energy", "--condition", help=_COND_HELP),
    unit: str = typer.Option("MeV", "--unit", help="Energy unit of the condition (keV, MeV, GeV, TeV)."),
    cond_scale: float = typer.Option(1.0, "--condition-scale", help="c = (f(E) - offset) / scale."),
    cond_offset: float = typer.Option(0.0, "--condition-offset", help="c = (f(E) - offset) / scale."),
    latent: str = typer.Option("normal", "--latent", help="Noise distribution: normal or uniform (on [-1, 1])."),
    output: str = typer.Option("identity", "--postprocess", help=_POST_HELP),
    output_scale: float = typer.Option(1.0, "--output-scale", help="Showers = scale * output(y) [* E/unit]."),
    multiply_by_energy: bool = typer.Option(False, "--multiply-by-energy", help="The network outputs energy fractions."),
    energy_range: str | None = typer.Option(None, "--energy-range", help="Trained range 'LOW,HIGH' in MeV (default 256,4194304)."),
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
    cond, post = _specs(condition, unit, cond_scale, cond_offset, output, output_scale, multiply_by_energy)
    gen = wrap_generator(net, geometry=geometry, latent_dim=latent_dim, model=architecture, kwargs=kw, input=input_mode,  # type: ignore[arg-type]
                         latent=latent, condition=cond, postprocess=post,  # type: ignore[arg-type]
                         energy_range_mev=_energy_range(energy_range) or DEFAULT_ENERGY_RANGE_MEV)
    save_generator(gen, out, card={"source": {"architecture": architecture, "kwargs": kw, "weights_file": str(weights)}})
    console.print(f"wrote {out} ({architecture}, {sum(p.numel() for p in gen.network.parameters()):,} parameters, kind 'external')")
