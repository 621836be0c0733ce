"""``simcompress firmware``: fixed-point compressed generator -> hls4ml trigger IP folder (:func:`simcompress.workflows.firmware.build_firmware`)."""

from __future__ import annotations

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
        None, "--rtl/--no-rtl", help="Also run alkaid -> Verilog -> Verilator (default: config rtl.enabled)."
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
    from ..firmware import load_firmware_config
    from ..workflows.firmware import build_firmware

    cfg = load_firmware_config(config)
    run = build_firmware(model, cfg, out, n_samples=samples, synth=synth, rtl=rtl, overwrite=overwrite,
                         reference=reference, physics_events=physics_events, gate=gate)
    report = run.report
    _summary(report, out)
    if run.synth_error is not None:
        raise run.synth_error
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


def _summary(report: dict[str, Any], out: Path) -> None:
    b = report["bit_exactness"]
    t = report["estimate"]["total"]
    dev = report["deviation_from_float"]
    alkaid = report.get("route") == "alkaid"
    sim = "alkaid interpreter" if alkaid else "C simulation"
    console.print(f"[bold]{out}[/bold]: {'alkaid Verilog (rtl/)' if alkaid else 'hls4ml project'}, vectors, firmware.json, README.md")
    status = "[green]bit-exact[/green]" if b["passed"] else "[red]NOT bit-exact[/red]"
    console.print(f"emulation vs {sim}: {b['mismatches']} mismatches on {b['n_samples']} inputs ({status})")
    console.print(f"max |fixed - float| = {dev['max_abs']:.4g} (mean {dev['mean_abs']:.3g}, float output std {dev['float_output_std']:.3g})")
    console.print(f"estimate ({report['target']['part']}): {t['dsp']} DSP, {t['lut']} LUT, {t['latency_cycles']} cycles "
                  f"({t['latency_ns']:.0f} ns), II {t['initiation_interval_cycles']}")
    tm = report["timings"]
    console.print(f"convert {tm['convert_s']:.1f} s, compile {tm['compile_s']:.1f} s, {sim} {tm['csim_samples_per_s']:.0f} samples/s")
    if report.get("rtl"):
        r = report["rtl"]
        console.print(f"RTL (alkaid -> Verilator): {r['mismatches']} mismatches on {r['n_samples']} inputs, "
                      f"{r.get('yosys', {}).get('luts', 'n/a')} yosys LUTs")
    if report.get("physics"):
        ph = report["physics"]
        console.print(f"physics vs reference ({ph['n_events']} showers): {sim} {'passed' if ph['passed'] else 'FAILED'}, "
                      f"float network (same noise) {'passed' if ph['float_passed'] else 'FAILED'} the '{ph['gate']}' gate (see validation/)")
