"""Distillation benchmark: sampling speed-up of each distilled student over its teacher at
batch sizes 1 / 100 / 10 000, measured in the same run on this CPU (one torch thread), and
fidelity of teacher and student against reference showers (GFlash, ds1 energies) when the
students have been trained.

Two modes:

* ``python bench/bench_distill.py --train [--recipes flow-to-iaf,...] [--students DIR]``
  distils the shipped zoo models with the recipes in ``configs/compress/`` and writes each
  student bundle and its full report to ``DIR/<recipe>/`` (default ``bench/results/distill``).
* ``python bench/bench_distill.py [--quick]`` (or ``python -m bench``) measures speed for every
  recipe: trained students from ``DIR`` when present, otherwise the recipe's student
  architecture with untrained weights (the speed of a network does not depend on its
  weights; fidelity is then reported as not measured). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "flow-to-iaf": "ds1-photons-flow",
    "flow-to-mlp": "ds1-photons-flow",
    "gan-to-small-gan": "ds1-photons-gan",
    "distill-then-fixed-point": "ds1-photons-flow",
}
DEFAULT_STUDENTS = ROOT / "bench" / "results" / "distill"


def _students_dir() -> Path:
    return Path(os.environ.get("SIMCOMPRESS_DISTILL_STUDENTS", DEFAULT_STUDENTS))


def _reference(n: int, seed: int = 2024) -> Any:
    from simcompress.showers.geometry import Geometry
    from simcompress.showers.reference import simulate

    return simulate(Geometry.from_name("ds1-photons"), n, energies="ds1", seed=seed, progress=False)


def _teacher(name: str) -> Any:
    """The zoo model ``name``, or ``$SIMCOMPRESS_DISTILL_TEACHERS/<name>`` (a bundle) when that is set."""
    from simcompress.generators import load_generator, zoo_names

    override = os.environ.get("SIMCOMPRESS_DISTILL_TEACHERS")
    if override and (Path(override) / name / "config.json").is_file():
        return load_generator(Path(override) / name).eval()
    if name not in zoo_names():
        return None
    return load_generator(name).eval()


def _teacher_exists(name: str) -> bool:
    from simcompress.generators import zoo_names

    override = os.environ.get("SIMCOMPRESS_DISTILL_TEACHERS")
    return bool(override and (Path(override) / name / "config.json").is_file()) or name in zoo_names()


def _teacher_source(name: str) -> str:
    """Where the teacher came from, with its bundle hash (the zoo may be updated between runs)."""
    from simcompress.generators import bundle_hash

    override = os.environ.get("SIMCOMPRESS_DISTILL_TEACHERS")
    if override and (Path(override) / name / "config.json").is_file():
        path: Any = Path(override) / name
        where = str(path)
    else:
        path, where = name, f"zoo:{name}"
    return f"{where} (bundle {bundle_hash(path)[:12]})"


def _untrained_student(teacher: Any, recipe: str) -> Any:
    from simcompress.compress import config_from_dict
    from simcompress.compress.pipeline import load_recipe
    from simcompress.distill.methods import build_student

    rec = load_recipe(ROOT / "configs" / "compress" / f"{recipe}.yaml")
    cfg = config_from_dict(dict(rec.steps[0]), recipe)
    return build_student(teacher, cfg).eval()


def _fidelity(reference: Any, models: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    import numpy as np
    import torch

    from simcompress.showers.data import ShowerSet
    from simcompress.validation import validate

    e = torch.from_numpy(reference.incident_energy.astype(np.float32))
    cands = {}
    for name, m in models.items():
        with torch.no_grad():
            x = m.sample(e, generator=torch.Generator().manual_seed(seed)).float().numpy()
        cands[name] = ShowerSet(reference.incident_energy, x, reference.geometry, {"source": name})
    res = validate(reference, cands, progress=False, html=False)
    out: dict[str, Any] = {"n_events": len(reference), "reference": "GFlash ds1-photons (simcompress.showers.reference)"}
    for name, cand in res.candidates.items():
        feats = cand.features
        sp = [v["sp"] for v in feats.values() if np.isfinite(v.get("sp", np.nan))]
        ks = [v["ks"] for v in feats.values()]
        out[name] = {
            "gate_passed": bool(res.passed_for(name)),
            "mean_separation_power": float(np.mean(sp)) if sp else None,
            "max_ks": float(np.max(ks)) if ks else None,
            "total_energy_mean_mev": {
                k: {"candidate": v["cand_mean"], "reference": v["ref_mean"]} for k, v in feats.items() if "tot" in k.lower()
            },
            "classifier_auc": {k: v.get("auc") for k, v in (cand.classifier or {}).items()},
            "fpd": (cand.multivariate or {}).get("fpd", {}).get("value"),
            "kpd": (cand.multivariate or {}).get("kpd", {}).get("value"),
            "multivariate": json.loads(json.dumps(cand.multivariate, default=float)),
        }
    return out


def run(quick: bool = False) -> dict:
    """Per teacher: one speed measurement of the teacher and all its students (same run, same
    batch sizes, interleaved) and one validation of teacher and trained students against the
    same GFlash reference sample."""
    import torch

    import simcompress.compress.methods  # noqa: F401  (registers FixedPointNetwork etc. before a compressed bundle loads)
    from simcompress.distill import compare_sampling_speed
    from simcompress.generators import load_generator

    batch_sizes = (1, 100, 1000) if quick else (1, 100, 10_000)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict[str, Any] = {"batch_sizes": list(batch_sizes), "torch_threads": 1, "recipes": {}, "fidelity": {}}
    try:
        reference = None
        for tname in dict.fromkeys(RECIPES.values()):
            source = _teacher_source(tname) if _teacher_exists(tname) else None
            teacher = _teacher(tname)
            recipes = [r for r, t in RECIPES.items() if t == tname]
            if teacher is None:
                for r in recipes:
                    out["recipes"][r] = {"skipped": f"zoo model {tname!r} not shipped yet"}
                continue
            models: dict[str, Any] = {"teacher": teacher}
            trained: list[str] = []
            for recipe in recipes:
                sdir = _students_dir() / recipe / "student"
                is_trained = (sdir / "config.json").is_file()
                student = load_generator(sdir).eval() if is_trained else _untrained_student(teacher, recipe)
                models[recipe] = student
                if is_trained:
                    trained.append(recipe)
                out["recipes"][recipe] = {
                    "teacher": source,
                    "student": str(sdir) if is_trained else "recipe architecture, untrained weights (speed only)",
                    "teacher_params": sum(p.numel() for p in teacher.network.parameters()),
                    "student_params": sum(p.numel() for p in student.network.parameters()),
                }
            speed = compare_sampling_speed(models, batch_sizes, min_seconds=0.3 if quick else 1.0)
            for recipe in recipes:
                out["recipes"][recipe]["speedup"] = speed["speedup"][recipe]
                out["recipes"][recipe]["showers_per_second"] = {
                    who: {bs: speed["rates"][name][bs]["showers_per_second"] for bs in speed["rates"][name]}
                    for who, name in (("teacher", "teacher"), ("student", recipe))
                }
            if trained:
                if reference is None:
                    reference = _reference(2000 if quick else 10_000)
                out["fidelity"][tname] = _fidelity(reference, {"teacher": teacher, **{r: models[r] for r in trained}})
            for recipe in recipes:
                if recipe not in trained:
                    out["recipes"][recipe]["fidelity"] = "not measured (no trained student; run with --train)"
    finally:
        torch.set_num_threads(prev)
    return out


def train(recipes: list[str], students: Path, n_reference: int = 20_000, max_steps: int | None = None) -> dict[str, Any]:
    """Distil the zoo teachers with the shipped recipes; write student bundles + reports."""
    import torch

    from simcompress.compress.bundle import save_compressed
    from simcompress.compress.pipeline import Pipeline, load_recipe
    from simcompress.generators import save_generator

    torch.set_num_threads(1)
    summary: dict[str, Any] = {}
    reference = None
    for recipe in recipes:
        if not _teacher_exists(RECIPES[recipe]):
            summary[recipe] = f"skipped: zoo model {RECIPES[recipe]!r} not shipped"
            continue
        source = _teacher_source(RECIPES[recipe])  # hashed when loaded: the zoo may be replaced later
        teacher = _teacher(RECIPES[recipe])
        rec = load_recipe(ROOT / "configs" / "compress" / f"{recipe}.yaml")
        out = students / recipe
        steps = []
        for s in rec.steps:
            s = dict(s)
            if s["method"].startswith("distill_"):
                tr = dict(s.get("training", {}))
                tr.setdefault("checkpoint_dir", str(out / "checkpoints"))
                if max_steps is not None:
                    tr["steps"] = min(int(tr.get("steps", max_steps)), max_steps)
                s["training"] = tr
            steps.append(s)
        kwargs: dict[str, Any] = {}
        if any(s["method"] == "distill_gan" and s.get("adversarial_steps", 0) > 0 for s in steps):
            if reference is None:
                reference = _reference(n_reference, seed=7)
            kwargs["reference"] = (reference.incident_energy, reference.showers)
        t0 = time.perf_counter()
        res = Pipeline(steps, source=recipe).run(teacher, **kwargs)
        seconds = time.perf_counter() - t0
        model = res.model.eval()
        first = res.steps[0].result
        if len(res.steps) == 1:
            save_generator(model, out / "student", card={"distilled_from": source, "recipe": recipe})
        else:
            save_compressed(model, first.extra["base_config"], [s.config.to_dict() for s in res.steps], None, out / "student")
        report = {"recipe": recipe, "teacher": source, "seconds": seconds, "pipeline": res.to_dict()}
        (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
        d = first.extra["distillation"]
        summary[recipe] = {
            "teacher": source,
            "seconds": seconds,
            "param_ratio": d["param_ratio"],
            "same_noise": d["same_noise"],
            "speedup": first.extra["speed"]["speedup"]["student"],
            "final_loss": {k: v.get("final_loss") for k, v in d["phases"].items()},
        }
        print(json.dumps({recipe: summary[recipe]}, default=float), flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--train", action="store_true", help="distil the zoo teachers first (minutes per recipe)")
    ap.add_argument("--no-measure", action="store_true", help="with --train: train only, skip the speed/fidelity run")
    ap.add_argument("--max-steps", type=int, default=None, help="with --train: cap the distillation steps (busy machines)")
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    ap.add_argument("--students", type=Path, default=None, help=f"student bundles folder (default {DEFAULT_STUDENTS})")
    ap.add_argument("--teachers", type=Path, default=None, help="folder of teacher bundles named like the zoo (default: the zoo)")
    args = ap.parse_args(argv)
    if args.students is not None:
        os.environ["SIMCOMPRESS_DISTILL_STUDENTS"] = str(args.students)
    if args.teachers is not None:
        os.environ["SIMCOMPRESS_DISTILL_TEACHERS"] = str(args.teachers)
    if args.train:
        names = [r for r in args.recipes.split(",") if r]
        unknown = sorted(set(names) - set(RECIPES))
        if unknown:
            sys.exit(f"error: unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
        print(json.dumps({"trained": train(names, _students_dir(), max_steps=args.max_steps)}, indent=1, default=float))
        if args.no_measure:
            return
    print(json.dumps(run(args.quick), indent=1, default=float))


if __name__ == "__main__":
    main()
