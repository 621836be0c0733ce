"""A compression recipe run on a shower generator: what ``simcompress compress`` does, in one call.

:func:`run_recipe` loads the generator and the recipe, builds the fidelity gate from the
reference showers (its baseline: the uncompressed model), runs the pipeline with the
generator's calibration and fine-tuning, validates teacher and student side by side, counts
and measures the compressed model and chooses its execution form. :meth:`RecipeResult.write`
writes the output folder atomically: the compressed bundle, ``report.json``/``report.md``/
``report.html`` and ``validation/``; for a recipe the gate rejected, no bundle but the student
in ``rejected-student/`` and a ``REJECTED`` marker.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._atomic import atomic_dir, write_text_atomic
from ..errors import ConfigError

__all__ = ["REJECTED_DIR", "RecipeResult", "run_recipe", "sampling_bytes"]

log = logging.getLogger(__name__)

#: subfolder of the output holding the student of a recipe that failed the gate
REJECTED_DIR = "rejected-student"


def sampling_bytes(bundle: Path) -> int | None:
    """Bytes on disk needed to sample: config.json + weights.safetensors."""
    files = [bundle / "config.json", bundle / "weights.safetensors"]
    if not all(f.is_file() for f in files):
        return None
    return sum(f.stat().st_size for f in files)


@dataclass
class RecipeResult:
    """The outcome of :func:`run_recipe`; :meth:`write` puts it on disk.

    ``report`` is the compression report (``report.json``); :meth:`write` completes it with the
    status and the bytes of the bundle it wrote.
    """

    model: str
    recipe: Path
    original: Any
    compressed: Any
    pipeline: Any  # compress.pipeline.PipelineResult
    report: dict[str, Any]
    base_config: dict[str, Any]
    steps: list[dict[str, Any]]
    deploy: Any  # compress.deploy.DeployChoice
    validation: Any = None  # validation.ValidationResult of teacher and student, when gated
    validation_html: bool = True
    validation_section: str | None = None

    @property
    def passed(self) -> bool:
        """Whether every kept step passed the gate (always true without a gate)."""
        return bool(self.pipeline.passed)

    @property
    def status(self) -> str:
        """``"accepted"`` or ``"rejected"`` (``report.json["status"]``)."""
        return "accepted" if self.passed else "rejected"

    @property
    def title(self) -> str:
        if self.passed:
            return f"Compression report: {self.model} with {self.recipe.name}"
        return f"Compression report: {self.model} with {self.recipe.name} (REJECTED: step {self.pipeline.stopped_at} failed the gate)"

    def write(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write the output folder (replacing ``out_dir`` atomically); returns it."""
        from ..compress.bundle import save_compressed
        from ..compress.report import report_html, report_markdown

        out = Path(out_dir)
        report = self.report
        with atomic_dir(out, overwrite=True) as staged:
            if self.validation is not None:
                self.validation.write(staged / "validation", html=self.validation_html, progress=False)
            if not self.passed:
                # the rejected student is kept for inspection, in a subfolder, never as the output bundle
                failed = self.pipeline.steps[-1]
                report["status"] = "rejected"
                report["rejected"] = {
                    "stopped_at": self.pipeline.stopped_at,
                    "method": failed.config.method,
                    "gate": None if failed.gate is None else failed.gate.summary,
                    "student_bundle": REJECTED_DIR,
                }
                save_compressed(self.compressed, self.base_config, self.steps, None, staged / REJECTED_DIR)
                report["compressed"]["bundle_bytes"] = sampling_bytes(staged / REJECTED_DIR)
                marker = (f"{self.title}\nthe rejected student is in {REJECTED_DIR}/ "
                          "(load it with simcompress.load_generator)\n")
            else:
                report["status"] = "accepted"
                bundle_dir = staged / "bundle"
                save_compressed(self.compressed, self.base_config, self.steps, None, bundle_dir, deploy=self.deploy.to_dict())
                report["compressed"]["bundle_bytes"] = sampling_bytes(bundle_dir)
                o_b, c_b = report["original"]["bundle_bytes"], report["compressed"]["bundle_bytes"]
                report["ratios"]["bundle"] = o_b / c_b if o_b and c_b else None
                report["provenance"]["bundle_bytes"] = "config.json + weights.safetensors on disk (what sampling reads)"
                for f in bundle_dir.iterdir():
                    os.replace(f, staged / f.name)
                bundle_dir.rmdir()
                marker = None
            write_text_atomic(staged / "report.json", json.dumps(report, indent=2, default=str) + "\n")
            write_text_atomic(staged / "report.md", report_markdown(report, self.title))
            write_text_atomic(staged / "report.html", report_html(report, self.title, self.validation_section))
            if marker is not None:
                write_text_atomic(staged / "REJECTED", marker)
        return out


Say = Callable[[str], Any]
Status = Callable[[str], AbstractContextManager[Any]]


def run_recipe(
    model: str | os.PathLike[str],
    recipe: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    gate_spec: str = "compression",
    gate: bool = True,
    n_events: int = 10_000,
    finetune_events: int = 20_000,
    calibration_events: int = 2048,
    report_samples: int = 2048,
    deploy_batch: int = 10_000,
    measure_seconds: float = 0.3,
    onnx: bool = True,
    validation_html: bool = True,
    seed: int = 0,
    say: Say | None = None,
    status: Status | None = None,
) -> RecipeResult:
    """Compress generator ``model`` (bundle or zoo name) with ``recipe`` (YAML); nothing is written.

    With ``gate`` (the default) the fidelity gate ``gate_spec`` built from ``reference`` runs after
    each step and teacher and student are validated side by side on ``n_events`` showers; the
    reference also feeds fine-tuning (``finetune_events`` showers) and calibration energies.
    ``say(line)`` receives the progress lines the CLI prints, ``status(text)`` (a context manager)
    wraps the slow stages. Bad input raises before any work; a failed gate does not raise: see
    :attr:`RecipeResult.passed`, then :meth:`RecipeResult.write`.
    """
    import numpy as np

    from ..compress.bundle import load_compressed
    from ..compress.deploy import choose_form, is_deployed
    from ..compress.pipeline import Pipeline, load_recipe
    from ..compress.report import compression_report
    from ..generators import build_generator, load_generator
    from ..generators.bundle import resolve_bundle
    from .generator_hooks import generator_calibration, generator_finetune

    tell: Say = say or (lambda _m: None)
    stage: Status = status or (lambda _t: nullcontext())
    recipe = Path(recipe)
    model = str(model)
    rec = load_recipe(recipe)
    if gate and reference is None:
        msg = "--reference is required for the fidelity gate (or pass --no-gate)"
        raise ConfigError(msg)
    if reference is not None and not Path(reference).exists():
        msg = f"{reference}: reference file not found"
        raise ConfigError(msg)
    gen: Any = load_generator(model)
    if is_deployed(gen):  # a compressed bundle as the starting point: compress its stored structure
        gen = load_compressed(resolve_bundle(model), builder=build_generator, deployed=False)
    base_config = gen.config_dict()
    gate_fn: Any = None
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
        from ..validation.gate import make_model_gate  # looked up at call time (tests replace it)

        with stage("preparing the fidelity gate (reference features, noise floor)"):
            gate_fn = make_model_gate(reference, gate_spec, n_events=n_events, seed=seed)
        prepared = getattr(gate_fn, "prepared", None)
        with stage("gate on the uncompressed model (baseline, teacher sample)"):
            # a gate that supports it keeps the uncompressed model as its baseline (preset 'compression': the
            # teacher, whose second sample the damage of every step is measured against; = make_model_gate(baseline=))
            set_baseline = getattr(gate_fn, "set_baseline", None)
            original_gate = set_baseline(gen) if callable(set_baseline) else gate_fn(gen)
        tell(f"  uncompressed model: gate {'pass' if original_gate.passed else 'FAIL'} ({original_gate.summary})")
    if energies is None:
        lo, hi = (float(v) for v in gen.energy_range_mev)
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        energies = np.exp(rng.uniform(math.log(lo), math.log(hi), calibration_events))
    pipeline = Pipeline.from_recipe(rec, gate=gate_fn, finetune=generator_finetune(gen, data, seed), source=str(recipe))
    tell(f"compressing {model} with {recipe} ({len(pipeline.steps)} steps)")
    run_kwargs: dict[str, Any] = {"calibration": generator_calibration(gen, energies, seed)}
    if data is not None:  # methods that train against reference showers (distill_gan's adversarial phase)
        run_kwargs["reference"] = (np.asarray(data.incident_energy), np.asarray(data.showers))
    result = pipeline.run(gen, **run_kwargs)
    for s in result.steps:
        verdict = "" if s.gate is None else (" gate: " + ("pass" if s.gate.passed else "FAIL") + f" ({s.gate.summary})")
        tell(f"  step {s.index} {s.config.method}: {s.seconds:.1f}s{verdict}{' (rolled back)' if s.rolled_back else ''}")
    comp: Any = result.model.eval()
    gen.eval()
    fidelity: dict[str, Any] | None = None
    vres = None
    section = None
    if prepared is not None:
        vres, fidelity, section = _validate_pair(gen, comp, gate_fn, prepared, result, gate_spec, seed, validation_html)
    # the throughput figure: end-to-end sample() of the fastest faithful execution form (what generate runs),
    # chosen and measured at deploy_batch on one torch thread by compression_report (compress.deploy's choice)
    with stage(f"measuring execution forms at batch {deploy_batch}"):
        choice = choose_form(comp, batch=deploy_batch, threads=1, seed=seed, min_time=measure_seconds)
        report = compression_report(
            gen, comp, n_samples=report_samples, batch=deploy_batch, threads=1, choice=choice, seed=seed,
            min_time=measure_seconds, onnx=onnx, pipeline=result.to_dict(), fidelity=fidelity,
        )
    report["original"]["bundle_bytes"] = sampling_bytes(resolve_bundle(model))
    report["model"] = model
    report["recipe"] = str(recipe)
    if original_gate is not None:
        report.setdefault("fidelity", {})
        report["fidelity"] = {**(report["fidelity"] or {}), "original_gate_passed": original_gate.passed,
                              "original_gate": original_gate.summary}
    base_for_bundle, steps = result.base_and_steps(base_config)
    return RecipeResult(
        model=model, recipe=recipe, original=gen, compressed=comp, pipeline=result, report=report,
        base_config=base_for_bundle, steps=steps, deploy=choice, validation=vres, validation_html=validation_html,
        validation_section=section,
    )


def _validate_pair(gen: Any, comp: Any, gate_fn: Any, prepared: Any, result: Any, gate_spec: str, seed: int,
                   html: bool) -> tuple[Any, dict[str, Any], str | None]:
    """Teacher and student validated side by side at the gate's energies: the result, the report's
    fidelity section and (with ``html``) the HTML section embedded in ``report.html``."""
    import torch

    from ..showers.data import ShowerSet
    from ..validation import validate

    e = torch.from_numpy(gate_fn.energies)
    cands = {}
    with torch.no_grad():
        for name, m in (("original", gen), ("compressed", comp)):
            y = m.sample(e, generator=torch.Generator().manual_seed(seed))
            cands[name] = ShowerSet(gate_fn.energies, y.detach().float().numpy(), prepared.geometry, {"source": name})
    vres = validate(prepared, cands, gate_spec, progress=False, html=html)
    fidelity: dict[str, Any] = {
        "validation_passed_original": bool(vres.passed_for("original")),
        "validation_passed_compressed": bool(vres.passed_for("compressed")),
        "gate_spec": gate_spec,
        "n_events": len(gate_fn.energies),
    }
    last = [s.gate for s in result.applied if s.gate is not None]
    if last:
        fidelity["final_gate"] = last[-1].summary
    gated = [s.gate for s in result.steps if s.gate is not None]  # rolled-back and failed steps too
    rule = (gated[-1].metrics or {}).get("rule_sentence") if gated else None
    if rule:  # the compression gate's rule, in one sentence (validation.checks.TEACHER_RULE)
        fidelity["gate_rule"] = rule
    section = None
    if html:
        try:
            from ..validation.report import report_section

            section = report_section(vres)
        except Exception as err:
            log.warning("could not embed the validation section: %s", err)
    return vres, fidelity, section
