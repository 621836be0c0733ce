"""``simcompress firmware``: fixed-point compressed generator -> hls4ml trigger IP folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from ._app import GateFailed, app, console

__all__ = ["firmware_command"]


@app.command("firmware")
def firmware_command(
    model: str = typer.Option(..., "--model", "-m", help="Compressed bundle directory with precision.json (fixed_point / qat_fixed_point)."),
    config: Path = typer.Option(..., "--config", "-c", help="Firmware target YAML (configs/firmware/<target>.yaml)."),
    out: Path = typer.Option(..., "--out", "-o", help="IP folder to create (written atomically)."),
    samples: int | None = typer.Option(
        None, "--samples", "-n", help="Random inputs for the bit-exactness check (default: config check.n_samples)."
    ),
    reference: Path | None = typer.Option(
        None, "--reference", "-r", help="Reference shower file: validate showers generated through the C simulation."
    ),
    physics_events: int = typer.Option(5000, "--physics-events", help="Showers generated through the C simulation for --reference."),
    gate: str = typer.Option("default", "--gate", help="Validation gate preset or YAML for --reference."),
    rtl: bool | None = typer.Option(
        None, "--rtl/--no-rtl", help="Also run da4ml -> Verilog -> Verilator (default: config rtl.enabled)."
    ),
    synth: bool = typer.Option(False, "--synth", help="Run the vendor HLS synthesis (needs vitis_hls/vivado_hls on PATH)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Build the hls4ml IP of a fixed-point generator and prove it bit-exact with the emulation.

    Writes the hls4ml project, co-simulation vectors, firmware.json (precisions, reuse factors,
    resource/latency estimates, bit-exactness) and a README. Exit 1 if the C simulation and the
    emulation disagree on any output; exit 2 on bad input or when --synth finds no vendor tool
    (the project is still written).
    """
    from ..errors import ConfigError
    from ..firmware import export_firmware, load_firmware_config
    from ..firmware.export import SynthesisUnavailableError

    cfg = load_firmware_config(config)
    if samples is not None and samples < 1:
        msg = f"--samples must be >= 1, got {samples}"
        raise ConfigError(msg)
    if reference is not None and not reference.exists():
        msg = f"--reference {reference}: file not found"
        raise ConfigError(msg)
    synth_error: SynthesisUnavailableError | None = None
    try:
        res = export_firmware(model, cfg, out, n_samples=samples, synth=synth, rtl=rtl, overwrite=overwrite,
                              keep_model=reference is not None)
    except SynthesisUnavailableError as err:
        synth_error = err
        res = None
    report = json.loads((out / "firmware.json").read_text())
    if res is not None and reference is not None:
        report["physics"] = _physics(res, reference, physics_events, gate, out)
        tmp = out / "firmware.json.tmp"
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        os.replace(tmp, out / "firmware.json")
    _summary(report, out)
    if synth_error is not None:
        raise synth_error
    if not report["bit_exactness"]["passed"]:
        msg = f"{report['bit_exactness']['mismatches']} mismatches between emulation and C simulation"
        raise GateFailed(msg)
    if report.get("rtl") and report["rtl"]["mismatches"]:
        msg = f"{report['rtl']['mismatches']} mismatches between emulation and Verilator"
        raise GateFailed(msg)
    if report.get("physics") and not report["physics"]["passed"]:
        msg = (
            f"physics of the C-simulated showers fails the '{gate}' gate (float network with the same "
                         f"noise: {'passes' if report['physics']['float_passed'] else 'fails too'}; see {out / 'validation'})"
        )
        raise GateFailed(msg)


def _physics(res: Any, reference: Path, n_events: int, gate: str, out: Path) -> dict[str, Any]:
    """Showers generated through the C simulation, and through the float network with the same noise,
    vs the reference (simcompress.validation): what the firmware costs in physics, separately from the model."""
    import numpy as np
    import torch

    from ..errors import ConfigError
    from ..firmware.export import csim_showers, float_network
    from ..firmware.graph import resolve
    from ..showers.data import ShowerSet
    from ..showers.io import open_showers

    try:
        from ..validation import validate
    except ImportError:  # older layout: the function lives in validation.core
        from ..validation.core import validate

    gen = res.model
    if not all(hasattr(gen, a) for a in ("condition", "postprocess", "latent_dim", "geometry")):
        msg = f"--reference needs a shower generator bundle; {type(gen).__name__} is not one"
        raise ConfigError(msg)
    reader = open_showers(str(reference))
    energies = reader.incident_energy()[:n_events].astype(np.float32)
    showers = csim_showers(gen, res.hls_model, res.graph, energies, seed=0)
    e = torch.from_numpy(energies)
    z = torch.randn(len(e), int(gen.latent_dim), generator=torch.Generator().manual_seed(0))  # as csim_showers
    with torch.no_grad():
        net, _ = resolve(gen)
        y = float_network(net)(z, gen.condition(e).reshape(len(e), -1))
        showers_float = gen.postprocess(y, e).cpu().numpy().astype(np.float32)
    cands = {"csim": ShowerSet(energies, showers, gen.geometry, {"source": "hls4ml C simulation"}),
             "float": ShowerSet(energies, showers_float, gen.geometry, {"source": "float network, same noise"})}
    vres = validate(str(reference), cands, gate, out_dir=out / "validation", progress=False)
    d = vres.to_dict().get("candidates", {})

    def feats(name: str) -> dict[str, Any]:
        return {k: {m: v for m, v in f.items() if m in ("ks", "w1", "sp")}
                for k, f in d.get(name, {}).get("features", {}).items() if isinstance(f, dict)}

    return {"n_events": len(energies), "reference": str(reference), "gate": gate,
            "passed": bool(vres.passed_for("csim")), "float_passed": bool(vres.passed_for("float")),
            "report": "validation/ (metrics.json, report.html)", "features": feats("csim"),
            "features_float_same_noise": feats("float")}


def _summary(report: dict[str, Any], out: Path) -> None:
    b = report["bit_exactness"]
    t = report["estimate"]["total"]
    dev = report["deviation_from_float"]
    console.print(f"[bold]{out}[/bold]: hls4ml project, vectors, firmware.json, README.md")
    status = "[green]bit-exact[/green]" if b["passed"] else "[red]NOT bit-exact[/red]"
    console.print(f"emulation vs C simulation: {b['mismatches']} mismatches on {b['n_samples']} inputs ({status})")
    console.print(f"max |fixed - float| = {dev['max_abs']:.4g} (mean {dev['mean_abs']:.3g}, float output std {dev['float_output_std']:.3g})")
    console.print(f"estimate ({report['target']['part']}): {t['dsp']} DSP, {t['lut']} LUT, {t['latency_cycles']} cycles "
                  f"({t['latency_ns']:.0f} ns), II {t['initiation_interval_cycles']}")
    tm = report["timings"]
    console.print(f"convert {tm['convert_s']:.1f} s, compile {tm['compile_s']:.1f} s, C sim {tm['csim_samples_per_s']:.0f} samples/s")
    if report.get("rtl"):
        r = report["rtl"]
        console.print(f"RTL (da4ml -> Verilator): {r['mismatches']} mismatches on {r['n_samples']} inputs, "
                      f"{r.get('yosys', {}).get('luts', 'n/a')} yosys LUTs")
    if report.get("physics"):
        ph = report["physics"]
        console.print(f"physics vs reference ({ph['n_events']} showers): C simulation {'passed' if ph['passed'] else 'FAILED'}, "
                      f"float network (same noise) {'passed' if ph['float_passed'] else 'FAILED'} the '{ph['gate']}' gate (see validation/)")
