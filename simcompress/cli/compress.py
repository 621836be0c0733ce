"""``simcompress compress``: run a compression recipe on a shower generator.

Wires together the generators (model, fine-tuning), the validation package (the
fidelity gate and the validation report) and the compression library.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import typer

from ..workflows.generator_hooks import generator_calibration as make_calibration
from ..workflows.generator_hooks import generator_finetune as make_finetune
from ._app import GateFailed, app, console

log = logging.getLogger(__name__)

#: subfolder of ``--out`` holding the student of a recipe that failed the gate
REJECTED_DIR = "rejected-student"


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sampling_bytes(bundle: Path) -> int | None:
    """Bytes on disk needed to sample: config.json + weights.safetensors."""
    files = [bundle / "config.json", bundle / "weights.safetensors"]
    if not all(f.is_file() for f in files):
        return None
    return sum(f.stat().st_size for f in files)


@app.command("compress")
def compress_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Generator bundle directory or zoo name (e.g. ds1-photons-gan)."),
    recipe: Path = typer.Option(..., "--recipe", "-r", help="Compression recipe YAML (configs/compress/*.yaml)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: compressed bundle, report.json/.md, validation/."),
    reference: Path | None = typer.Option(None, "--reference", help="Reference showers (ROOT/HDF5) for the gate, fine-tuning and validation."),
    gate_spec: str = typer.Option(
        "compression", "--gate-spec",
        help="Validation gate preset or YAML. The default preset 'compression' passes a check when the model is "
        "within the reference noise floor rule or not much worse than the uncompressed model (baseline rule).",
    ),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="Evaluate the fidelity gate after each step (needs --reference)."),
    n_events: int = typer.Option(10_000, "--n-events", help="Showers sampled per gate evaluation and for the validation report."),
    finetune_events: int = typer.Option(20_000, "--finetune-events", help="Reference showers used for fine-tuning."),
    calibration_events: int = typer.Option(2048, "--calibration-events", help="Samples for quantizer calibration."),
    report_samples: int = typer.Option(2048, "--report-samples", help="Showers per call when counting operations."),
    deploy_batch: int = typer.Option(
        10_000, "--deploy-batch",
        help="Batch at which the execution forms (baked float, torch int8, ONNX Runtime int8, sparse) are measured; "
        "the fastest faithful one is recorded in the bundle and is the throughput figure (end-to-end sample()).",
    ),
    measure_seconds: float = typer.Option(0.3, "--measure-seconds", help="Minimum seconds per timed round (3 rounds, best kept)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Also measure ONNX Runtime float32 and int8 forms."),
    validation_html: bool = typer.Option(True, "--validation-html/--no-validation-html",
                                         help="Write the validation report's HTML page with plots (metrics.json always)."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(0, "--threads", help="torch threads (0: leave as is)."),
) -> None:
    """Compress a shower generator with a recipe; write bundle, report and validation report.

    Exit code 1 when the gate fails (report and the rejected student in OUT/rejected-student, marked REJECTED; no bundle), 2 on bad input.
    """
    import numpy as np
    import torch

    from ..compress.bundle import load_compressed, save_compressed
    from ..compress.deploy import choose_form, deploy, is_deployed, sample_rate
    from ..compress.pipeline import Pipeline, load_recipe
    from ..compress.report import compression_report, report_html, report_markdown
    from ..errors import ConfigError
    from ..generators import build_generator, load_generator
    from ..generators.bundle import resolve_bundle

    if threads:
        torch.set_num_threads(threads)
    rec = load_recipe(recipe)
    if gate and reference is None:
        msg = "--reference is required for the fidelity gate (or pass --no-gate)"
        raise ConfigError(msg)
    if reference is not None and not reference.exists():
        msg = f"{reference}: reference file not found"
        raise ConfigError(msg)
    gen = load_generator(model)
    if is_deployed(gen):  # a compressed bundle as the starting point: compress its stored structure
        gen = load_compressed(resolve_bundle(model), builder=build_generator, deployed=False)
    base_config = gen.config_dict()
    gate_fn = None
    original_gate = None
    data = None
    prepared = None
    energies = None
    if reference is not None:
        from ..showers.io import open_showers

        reader = open_showers(reference)
        data = reader.read(stop=finetune_events)
        energies = np.asarray(data.incident_energy[:calibration_events], dtype=np.float64)
    if gate and reference is not None:
        from ..validation.gate import make_model_gate

        with console.status("preparing the fidelity gate (reference features, noise floor)"):
            gate_fn = make_model_gate(reference, gate_spec, n_events=n_events, seed=seed)
        prepared = getattr(gate_fn, "prepared", None)
        with console.status("gate on the uncompressed model (baseline)"):
            # a gate that supports it keeps the uncompressed model as its baseline (preset 'compression')
            set_baseline = getattr(gate_fn, "set_baseline", None)
            original_gate = set_baseline(gen) if callable(set_baseline) else gate_fn(gen)
        console.print(f"  uncompressed model: gate {'pass' if original_gate.passed else 'FAIL'} ({original_gate.summary})")
    if energies is None:
        lo, hi = (float(v) for v in gen.energy_range_mev)
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        energies = np.exp(rng.uniform(math.log(lo), math.log(hi), calibration_events))
    pipeline = Pipeline.from_recipe(rec, gate=gate_fn, finetune=make_finetune(gen, data, seed), source=str(recipe))
    console.print(f"compressing {model} with {recipe} ({len(pipeline.steps)} steps)")
    run_kwargs: dict[str, Any] = {"calibration": make_calibration(gen, energies, seed)}
    if data is not None:  # methods that train against reference showers (distill_gan's adversarial phase)
        run_kwargs["reference"] = (np.asarray(data.incident_energy), np.asarray(data.showers))
    result = pipeline.run(gen, **run_kwargs)
    for s in result.steps:
        status = "" if s.gate is None else (" gate: " + ("pass" if s.gate.passed else "FAIL") + f" ({s.gate.summary})")
        console.print(f"  step {s.index} {s.config.method}: {s.seconds:.1f}s{status}{' (rolled back)' if s.rolled_back else ''}")
    comp = result.model.eval()
    gen.eval()
    fidelity: dict[str, Any] | None = None
    want_html, validation_html = validation_html, None
    validation_dir = out / "validation"
    staged = out.with_name(f".{out.name}.staging")
    if staged.exists():
        shutil.rmtree(staged)
    if prepared is not None:
        from ..showers.data import ShowerSet
        from ..validation.core import validate

        e = torch.from_numpy(gate_fn.energies)
        cands = {}
        with torch.no_grad():
            for name, m in (("original", gen), ("compressed", comp)):
                y = m.sample(e, generator=torch.Generator().manual_seed(seed))
                cands[name] = ShowerSet(gate_fn.energies, y.detach().float().numpy(), prepared.geometry, {"source": name})
        vres = validate(prepared, cands, gate_spec, out_dir=staged / "validation", progress=False, html=want_html)
        fidelity = {
            "validation_passed_original": bool(vres.passed_for("original")),
            "validation_passed_compressed": bool(vres.passed_for("compressed")),
            "gate_spec": gate_spec,
            "n_events": len(gate_fn.energies),
        }
        last = [s.gate for s in result.applied if s.gate is not None]
        if last:
            fidelity["final_gate"] = last[-1].summary
        if want_html:
            try:
                from ..validation.report import report_section

                validation_html = report_section(vres)
            except Exception as err:
                log.warning("could not embed the validation section: %s", err)
    orig_dir = resolve_bundle(model)
    report = compression_report(
        gen, comp, n_samples=report_samples, seed=seed, onnx=onnx, pipeline=result.to_dict(), fidelity=fidelity,
    )
    report["original"]["bundle_bytes"] = _sampling_bytes(orig_dir)
    # the throughput figure: end-to-end sample() of the fastest faithful execution form (what generate runs)
    with console.status(f"measuring execution forms at batch {deploy_batch}"):
        choice = choose_form(comp, batch=deploy_batch, seed=seed, min_time=measure_seconds)
        fast = deploy(comp, choice.form, sparse_layers=choice.sparse_layers)
        e2e = sample_rate({"original": gen, "compressed": fast}, deploy_batch, seed=seed, min_time=measure_seconds)
    report["deploy"] = {**choice.to_dict(), "max_abs_diff_vs_fake_quantized": choice.max_abs_diff.get(choice.form),
                        "rates_unit": "network forwards x batch per second", "sample_showers_per_s": e2e}
    diff = choice.max_abs_diff.get(choice.form)
    report["deployable_form"] = [(f"execution form {choice.form!r}: {choice.description}; network output max abs diff vs the "
                                 f"fake-quantized model {'n/a' if diff is None else f'{diff:.3g}'}")]
    report["original"]["throughput"], report["compressed"]["throughput"] = e2e["original"], e2e["compressed"]
    report["ratios"]["throughput"] = e2e["compressed"] / max(e2e["original"], 1e-300)
    report["throughput_unit"] = f"showers/s (sample(), batch {deploy_batch}, execution form {choice.form!r})"
    report["model"] = str(model)
    report["recipe"] = str(recipe)
    if original_gate is not None:
        report.setdefault("fidelity", {})
        report["fidelity"] = {**(report["fidelity"] or {}), "original_gate_passed": original_gate.passed, "original_gate": original_gate.summary}
    base_for_bundle, steps = result.base_and_steps(base_config)
    if not result.passed:
        # the rejected student is kept for inspection, in a subfolder, never as the output bundle
        staged.mkdir(parents=True, exist_ok=True)
        failed = result.steps[-1]
        report["status"] = "rejected"
        report["rejected"] = {
            "stopped_at": result.stopped_at,
            "method": failed.config.method,
            "gate": None if failed.gate is None else failed.gate.summary,
            "student_bundle": REJECTED_DIR,
        }
        save_compressed(comp, base_for_bundle, steps, None, staged / REJECTED_DIR)
        report["compressed"]["bundle_bytes"] = _sampling_bytes(staged / REJECTED_DIR)
        title = f"Compression report: {model} with {recipe.name} (REJECTED: step {result.stopped_at} failed the gate)"
        _atomic_text(staged / "report.json", json.dumps(report, indent=2, default=str) + "\n")
        _atomic_text(staged / "report.md", report_markdown(report, title))
        _atomic_text(staged / "report.html", report_html(report, title, validation_html))
        _atomic_text(staged / "REJECTED", f"{title}\nthe rejected student is in {REJECTED_DIR}/ (load it with simcompress.load_generator)\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)
        msg = (
            f"step {result.stopped_at} failed the gate; report and rejected student in {out} "
            f"({out / REJECTED_DIR}, marked REJECTED; no bundle written)"
        )
        raise GateFailed(
            msg
        )
    report["status"] = "accepted"
    save_compressed(comp, base_for_bundle, steps, None, staged / "bundle", deploy=choice.to_dict())
    bundle_dir = staged / "bundle"
    report["compressed"]["bundle_bytes"] = _sampling_bytes(bundle_dir)
    o_b, c_b = report["original"]["bundle_bytes"], report["compressed"]["bundle_bytes"]
    report["ratios"]["bundle"] = o_b / c_b if o_b and c_b else None
    report["provenance"]["bundle_bytes"] = "config.json + weights.safetensors on disk (what sampling reads)"
    for f in bundle_dir.iterdir():
        os.replace(f, staged / f.name)
    bundle_dir.rmdir()
    _atomic_text(staged / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    _atomic_text(staged / "report.md", report_markdown(report, f"Compression report: {model} with {recipe.name}"))
    _atomic_text(staged / "report.html", report_html(report, f"Compression report: {model} with {recipe.name}", validation_html))
    if out.exists():
        shutil.rmtree(out)
    os.replace(staged, out)
    r = report["ratios"]
    console.print(
        f"wrote {out}: storage {r['storage']:.2f}x smaller, throughput x{r['throughput']:.2f} "
        f"({report['throughput_unit']}), bundle {('{:.2f}x'.format(r['bundle'])) if r['bundle'] else 'n/a'} smaller"
    )
    console.print(f"report: {out / 'report.html'}" + (f"; validation report: {validation_dir / 'report.html'}" if validation_dir.exists() else ""))
