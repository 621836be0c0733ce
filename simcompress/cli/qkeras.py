"""``simcompress qkeras-import`` / ``qkeras-export``: QKeras generators in and out of the suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ..errors import ConfigError
from ._app import GateFailed, app, console
from ._options import parse_energy_range

__all__ = ["qkeras_export", "qkeras_import"]


@app.command("qkeras-import")
def qkeras_import(
    model: Path = typer.Argument(..., help="QKeras model saved as .h5 (model.save('gen.h5'))."),
    out: Path = typer.Option(..., "--out", "-o", help="Output generator bundle directory."),
    geometry: str | None = typer.Option(None, "--geometry", "-g", help="Geometry name or YAML (default: from the file's simcompress metadata)."),
    latent_dim: int | None = typer.Option(None, "--latent-dim", help="Noise width; the model input is latent_dim + 1 (noise, then the condition)."),
    energy_range: str | None = typer.Option(None, "--energy-range", help="Conditioning range 'LOW,HIGH' in MeV."),
    postprocess: str | None = typer.Option(None, "--postprocess", help="factorised (1+layers+voxels outputs) or energy_fraction (voxels outputs)."),
    strict: bool = typer.Option(True, "--strict/--no-strict", help="Refuse models whose float32 arithmetic is not provably exact."),
    firmware: Path | None = typer.Option(None, "--firmware", help="Also build the hls4ml firmware IP folder here (bit-exactness checked)."),
    firmware_config: Path | None = typer.Option(None, "--firmware-config", help="Firmware target YAML (configs/firmware/*.yaml); default target if omitted."),
) -> None:
    """Import a QKeras generator as a simcompress bundle (exact fixed-point twin; validate/compress/firmware it)."""
    from ..generators import save_generator
    from ..interop.generator import load_qkeras_generator

    gen = load_qkeras_generator(model, geometry, latent_dim=latent_dim, energy_range_mev=parse_energy_range(energy_range),
                                postprocess=postprocess, strict=strict)
    save_generator(gen, out, card={"imported_from": str(model), "importer": "simcompress.interop.qkeras"})
    net: Any = gen.network  # a QKerasNetwork
    rec = net.precision_record()
    console.print(f"imported {model} -> {out} (kind qkeras-mlp, {net.n_in} -> {net.n_out}, "
                  f"float32 exact: {net.float32_exact})")
    console.print(f"input {rec['input']['hls'] if rec['input'] else 'float'}")
    for name, info in rec["layers"].items():
        w = info.get("weight") or {}
        console.print(f"  {name}: weight {w.get('hls', '-')}, accum {info['accum']['hls'] if info.get('accum') else '-'}, "
                      f"result {info['result']['hls'] if info.get('result') else '-'}")
    if firmware is not None:
        from ..firmware import export_firmware, load_firmware_config
        from ..firmware.config import FirmwareConfig
        from ..interop.firmware import as_fixed_point_generator

        cfg = load_firmware_config(firmware_config) if firmware_config else FirmwareConfig()
        res = export_firmware(as_fixed_point_generator(gen), cfg, firmware)
        bx = res.report["bit_exactness"]
        console.print(f"firmware -> {firmware}: {bx['mismatches']} mismatches in {bx['n_outputs']} outputs "
                      f"(emulation vs C simulation)")
        if bx["mismatches"]:
            msg = f"firmware of {model} is not bit-exact: {bx['mismatches']} mismatches"
            raise GateFailed(msg)


@app.command("qkeras-export")
def qkeras_export(
    bundle: str = typer.Argument(..., help="Generator bundle: qkeras-mlp, or any generator quantized by the fixed_point method."),
    out: Path = typer.Option(..., "--out", "-o", help="Output QKeras .h5 file."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Write a fixed-point generator network as an equivalent QKeras .h5 (load it with qkeras.utils.load_qmodel)."""
    from ..generators import load_generator
    from ..interop.qkeras import export_qkeras

    if out.suffix not in (".h5", ".hdf5"):
        msg = f"--out {str(out)!r}: QKeras 0.9.0 reloads only the .h5 format; use a .h5 file name"
        raise ConfigError(msg)
    gen = load_generator(bundle)
    path = export_qkeras(gen, out)
    summary = {"bundle": bundle, "out": str(path), "kind": getattr(gen, "kind", type(gen).__name__)}
    if json_out:
        console.print_json(json.dumps(summary))
    else:
        console.print(f"exported {bundle} -> {path}")
