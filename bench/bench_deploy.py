"""The compressed model is the fast model: end-to-end showers/s of the teacher and of every
shipped recipe's student, in the execution form a bundle records (``simcompress.compress.deploy``),
measured in ONE run at batch 10,000 with one torch thread; the network's share of ``sample()``;
and the damage of each student against its teacher.

For every ``configs/compress/*.yaml`` (teacher from its documented command: ``ds1-photons-gan``
or ``ds1-photons-flow``): run the recipe (``--quick``: training steps capped, no gate) with
fine-tuning on GFlash reference showers, choose the execution form
(:func:`~simcompress.compress.deploy.choose_form`: baked float / torch int8 / ONNX Runtime int8 /
sparse, fastest faithful), then

* ``showers_per_s``: ``sample()`` of teacher and students interleaved, best of 3 rounds;
* ``network_share``: time of ``network(z, c)`` over time of ``sample()`` at the same batch;
* ``damage``: ``simcompress.validation.validate`` with the teacher's own showers as the reference
  (AUC student vs teacher with its teacher-vs-teacher floor, worst W1 / floor, FPD).

Usage: ``python bench/bench_deploy.py [--quick] [--recipes int8-ptq,combined]`` or
``python -m bench --only deploy``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE_DIR = ROOT / "configs" / "compress"
QUICK_CAPS = {"steps": 200, "recovery_steps": 50, "adversarial_steps": 100, "pool_size": 4096, "checkpoint_every": 100,
              "calibration_samples": 2048, "update_every": 40}
BATCH = 10_000


def _teacher_name(recipe: Path) -> str:
    m = re.search(r"^#\s+simcompress compress (.*)$", recipe.read_text(), re.MULTILINE)
    argv = shlex.split(m.group(1)) if m else []
    return argv[argv.index("--model") + 1] if "--model" in argv else "ds1-photons-gan"


def _cap(node: Any, caps: dict[str, int]) -> Any:
    if isinstance(node, dict):
        return {k: (min(v, caps[k]) if k in caps and isinstance(v, int) and not isinstance(v, bool) else _cap(v, caps))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_cap(v, caps) for v in node]
    return node


def _rate(fn: Any, items: int, min_time: float) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return n * items / dt


def run(quick: bool = False, recipes: list[str] | None = None) -> dict[str, Any]:
    import numpy as np
    import torch

    from simcompress.compress.deploy import choose_form, deploy
    from simcompress.compress.pipeline import Pipeline, load_recipe
    from simcompress.generators import load_generator
    from simcompress.generators.bundle import bundle_hash
    from simcompress.showers.data import ShowerSet
    from simcompress.showers.reference import simulate
    from simcompress.validation import validate
    from simcompress.workflows import damage_figures, generator_calibration, generator_finetune

    torch.set_num_threads(1)
    paths = sorted(RECIPE_DIR.glob("*.yaml"))
    if recipes:
        paths = [p for p in paths if p.stem in recipes]
    n_ref = 10_000 if quick else 20_000
    n_damage = 4_000 if quick else 10_000
    reference = simulate("ds1-photons", n_ref, seed=1, progress=False)
    ref_arrays = (np.asarray(reference.incident_energy), np.asarray(reference.showers))
    teachers: dict[str, Any] = {}
    students: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {"quick": quick, "threads": 1, "batch": BATCH, "reference_events": n_ref, "recipes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for p in paths:
            tname = _teacher_name(p)
            if tname not in teachers:
                teachers[tname] = load_generator(tname).eval()
                out.setdefault("teachers", {})[tname] = {"bundle_hash": bundle_hash(teachers[tname].bundle_path)[:16]}
            teacher = teachers[tname]
            rec = load_recipe(p)
            if quick:
                small = Path(tmp) / p.name
                small.write_text(yaml.safe_dump(_cap(yaml.safe_load(p.read_text()), QUICK_CAPS), sort_keys=False))
                rec = load_recipe(small)
            t0 = time.perf_counter()
            pipe = Pipeline.from_recipe(rec, finetune=generator_finetune(teacher, reference, 0), source=str(p))
            res = pipe.run(teacher, calibration=generator_calibration(teacher, reference.incident_energy[:2048], 0),
                           reference=ref_arrays)
            comp = res.model.eval()
            choice = choose_form(comp, batch=BATCH, min_time=0.2, repeats=2)
            students[p.stem] = {"teacher": tname, "model": deploy(comp, choice.form, sparse_layers=choice.sparse_layers),
                                "stored": comp}
            out["recipes"][p.stem] = {
                "teacher": tname, "compress_seconds": round(time.perf_counter() - t0, 1), "form": choice.form,
                "form_description": choice.description, "max_abs_diff_vs_fake_quantized": choice.max_abs_diff.get(choice.form),
                "form_rates_network": {k: round(v) for k, v in choice.rates.items()}, "forms_rejected": choice.rejected,
            }
            print(f"{p.stem}: compressed in {out['recipes'][p.stem]['compress_seconds']} s, form {choice.form}", file=sys.stderr)
        # one interleaved speed loop per teacher: teacher and its students, same energies and batch
        g = torch.Generator().manual_seed(0)
        for tname, teacher in teachers.items():
            lo, hi = (float(v) for v in teacher.energy_range_mev)
            e = torch.exp(torch.empty(BATCH).uniform_(np.log(lo), np.log(hi), generator=g))
            group = {"teacher": teacher, **{k: s["model"] for k, s in students.items() if s["teacher"] == tname}}
            nets = {}
            for k, m in group.items():
                z = torch.randn(BATCH, int(m.latent_dim), generator=torch.Generator().manual_seed(1))
                with torch.no_grad():
                    nets[k] = (z, m.condition(e))
            min_time = 0.3
            best = {k: {"sample": 0.0, "network": 0.0} for k in group}
            with torch.inference_mode():
                for m in group.values():  # warm-up
                    m.sample(e, generator=torch.Generator().manual_seed(2), batch_size=BATCH)
                for _ in range(3):
                    for k, m in group.items():
                        s = _rate(lambda m=m, e=e: m.sample(e, generator=torch.Generator().manual_seed(2), batch_size=BATCH), BATCH, min_time)
                        n = _rate(lambda m=m, k=k, nets=nets: m.network(*nets[k]), BATCH, min_time)
                        best[k]["sample"] = max(best[k]["sample"], s)
                        best[k]["network"] = max(best[k]["network"], n)
            t_rate = best["teacher"]["sample"]
            out["teachers"][tname].update({"showers_per_s": round(t_rate), "network_share": t_rate / best["teacher"]["network"]})
            for k in group:
                if k == "teacher":
                    continue
                out["recipes"][k].update({
                    "showers_per_s": round(best[k]["sample"]), "speedup_vs_teacher": best[k]["sample"] / t_rate,
                    "network_share": best[k]["sample"] / best[k]["network"],
                })
            # damage: every student of this teacher against the teacher's own showers (one validation run)
            rng = np.random.default_rng(np.random.SeedSequence(11))
            ed = np.asarray(reference.incident_energy)[rng.permutation(n_ref)[:n_damage]].astype(np.float32)
            with torch.no_grad():
                ty = teacher.sample(torch.from_numpy(ed), generator=torch.Generator().manual_seed(5)).numpy()
                cands = {k: ShowerSet(ed, students[k]["model"].sample(torch.from_numpy(ed), generator=torch.Generator().manual_seed(6)).float().numpy(),
                                      teacher.geometry, {"source": k}) for k in group if k != "teacher"}
            t0 = time.perf_counter()
            try:
                vres = validate(ShowerSet(ed, ty, teacher.geometry, {"source": f"teacher {tname}"}), cands, "compression",
                                progress=False, html=False)
            except Exception as err:
                for k in cands:
                    out["recipes"][k]["damage"] = {"error": f"{type(err).__name__}: {err}"[:300]}
            else:
                for k in cands:
                    out["recipes"][k]["damage"] = damage_figures(vres, k)
            out["teachers"][tname]["damage_seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{tname}: speed and damage done", file=sys.stderr)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--recipes", default="")
    args = ap.parse_args()
    res = run(args.quick, [r for r in args.recipes.split(",") if r] or None)
    print(json.dumps(res, indent=2, default=str))
