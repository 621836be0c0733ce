"""The compressed model is the fast model: end-to-end showers/s of the teacher and of every
shipped recipe's student, in the execution form a bundle records (``simcompress.compress.deploy``),
measured in ONE run at batch 10,000 with one torch thread; the network's share of ``sample()``;
and the damage of each student against its teacher.

For every ``configs/compress/*.yaml`` (teacher from its documented command: ``ds1-photons-gan``
or ``ds1-photons-flow``): run the recipe (``--quick``: training steps capped, no gate) with
fine-tuning on GFlash reference showers, choose the execution form
(:func:`~simcompress.compress.deploy.choose_form`: baked float / torch int8 / ONNX Runtime int8 /
sparse, fastest faithful), then

* extra point ``gan-to-small-gan+int8-weights``: the distilled student with per-channel int8
  weights (``ptq``), so that integer kernels run on top of the smaller network;
* ``showers_per_s``, ``network_share`` and ``split_ms``
  (:func:`~simcompress.compress.accounting.sample_split`): ``sample()`` of teacher and students
  interleaved, best of 5 warm rounds, and its split into noise + condition, network,
  postprocess and the rest; ``speedup_vs_teacher`` from the same rounds;
* ``headline``: the shipped GAN's network share (target >= 0.8) and its fastest point (target
  >= 4x showers/s), with the form that ran and its max abs difference to the fake-quantized model;
* ``damage``: ``simcompress.validation.validate`` with the teacher's own showers as the reference
  (AUC student vs teacher with its teacher-vs-teacher floor, worst W1 / floor, FPD).
* ``onnx_static_int8`` (students whose ``onnx-int8`` form was measured): ONNX Runtime with *static*
  int8 inputs (``quantize_static``, MinMax calibration on the model's own latent + condition inputs,
  QDQ/int8 and QOperator/uint8 activations, 4,096 and 20,480 calibration showers) against the
  dynamic ``onnx-int8`` form the deploy path uses: network rate ratio at batch 10,000 (interleaved,
  best of 3) and max abs difference to the fake-quantized model over its output scale (faithful at
  <= ``deploy.RTOL``). A static variant would replace the dynamic one only if faster and faithful.

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
#: the bench's own compression points besides configs/compress/ (same code path): structured pruning
#: (physically smaller layers) then int8 weights, which run through integer kernels
EXTRA_RECIPES = {
    "prune-25-int8": """# structured pruning of a quarter of the hidden units, then per-channel int8 weights (bench point)
#   simcompress compress --model ds1-photons-gan --recipe prune-25-int8.yaml --reference ref.root --out prune-25-int8/
name: prune-25-int8
description: structured prune 25 % of hidden units (smaller Linear layers), then per-channel symmetric int8 weights
on_failure: stop
steps:
  - method: structured_prune
    amount: 0.25
    criterion: l2_product
    finetune: {steps: 300, lr: 5.0e-5}
  - method: ptq
    weights: {bits: 8, symmetric: true, granularity: per_channel, calibration: mse}
""",
}
#: extra points: a recipe's student further compressed (int8 weights run through integer kernels)
INT8_ON_TOP = {"gan-to-small-gan": {"method": "ptq", "weights": {"bits": 8, "symmetric": True, "granularity": "per_channel",
                                                                 "calibration": "mse"}}}


def _teacher_name(recipe: Path) -> str:
    m = re.search(r"^#\s+simcompress compress (.*)$", recipe.read_text(), re.MULTILINE)
    argv = shlex.split(m.group(1)) if m else []
    return argv[argv.index("--model") + 1] if "--model" in argv else "ds1-photons-gan"


def _cap(node: Any, caps: dict[str, int], checkpoints: Path) -> Any:
    """``node`` with the training keys in ``caps`` capped and a ``checkpoint_dir`` moved below ``checkpoints``
    (a recipe's relative checkpoint folder would otherwise be written into the working directory)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in caps and isinstance(v, int) and not isinstance(v, bool):
                out[k] = min(v, caps[k])
            elif k == "checkpoint_dir" and isinstance(v, str):
                out[k] = str(checkpoints / v)
            else:
                out[k] = _cap(v, caps, checkpoints)
        return out
    if isinstance(node, list):
        return [_cap(v, caps, checkpoints) for v in node]
    return node


def run(quick: bool = False, recipes: list[str] | None = None) -> dict[str, Any]:
    import numpy as np
    import torch

    from simcompress.compress import compress, config_from_dict
    from simcompress.compress.accounting import sample_split
    from simcompress.compress.deploy import choose_form, deploy
    from simcompress.compress.pipeline import Pipeline, load_recipe
    from simcompress.generators import load_generator
    from simcompress.generators.bundle import bundle_hash
    from simcompress.showers.data import ShowerSet
    from simcompress.showers.reference import simulate
    from simcompress.validation import validate
    from simcompress.workflows import damage_figures, generator_calibration, generator_finetune

    torch.set_num_threads(1)
    tmpdir = tempfile.TemporaryDirectory()
    paths = sorted(RECIPE_DIR.glob("*.yaml"))
    for stem, text in EXTRA_RECIPES.items():  # the bench's own points, run exactly like the shipped recipes
        extra = Path(tmpdir.name) / f"{stem}.yaml"
        extra.write_text(text)
        paths.append(extra)
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
            # quick: training capped; either way checkpoints go to the temporary folder
            small = Path(tmp) / p.name
            small.write_text(yaml.safe_dump(_cap(yaml.safe_load(p.read_text()), QUICK_CAPS if quick else {},
                                                 Path(tmp) / "checkpoints"), sort_keys=False))
            rec = load_recipe(small)
            t0 = time.perf_counter()
            pipe = Pipeline.from_recipe(rec, finetune=generator_finetune(teacher, reference, 0), source=str(p))
            try:
                res = pipe.run(teacher, calibration=generator_calibration(teacher, reference.incident_energy[:2048], 0),
                               reference=ref_arrays)
            except Exception as err:  # a recipe that fails is reported; the other points are still measured
                out["recipes"][p.stem] = {"teacher": tname, "error": f"{type(err).__name__}: {err}".splitlines()[0][:300]}
                print(f"{p.stem}: failed ({out['recipes'][p.stem]['error']})", file=sys.stderr)
                continue
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
        # int8 integer kernels on top of a distilled student (weights only: per-channel symmetric int8)
        for stem, cfg in INT8_ON_TOP.items():
            if stem in students:
                src = students[stem]
                q = compress(src["stored"], config_from_dict(cfg)).model.eval()
                choice = choose_form(q, batch=BATCH, min_time=0.2, repeats=2)
                name = f"{stem}+int8-weights"
                students[name] = {"teacher": src["teacher"], "model": deploy(q, choice.form, sparse_layers=choice.sparse_layers),
                                  "stored": q}
                out["recipes"][name] = {
                    "teacher": src["teacher"], "form": choice.form, "form_description": choice.description,
                    "max_abs_diff_vs_fake_quantized": choice.max_abs_diff.get(choice.form),
                    "form_rates_network": {k: round(v) for k, v in choice.rates.items()}, "forms_rejected": choice.rejected,
                    "method": cfg,
                }
        for k, st in students.items():
            if "onnx-int8" in out["recipes"][k].get("form_rates_network", {}):
                out["recipes"][k]["onnx_static_int8"] = _static_int8(st["stored"], BATCH)
                print(f"{k}: static int8 {json.dumps(out['recipes'][k]['onnx_static_int8'])}", file=sys.stderr)
        # one interleaved speed loop per teacher: teacher and its students, same energies and batch;
        # sample() and its stages (noise + condition, network, postprocess) timed, best of 5 warm rounds
        for tname, teacher in teachers.items():
            group = {"teacher": teacher, **{k: s["model"] for k, s in students.items() if s["teacher"] == tname}}
            split = sample_split(group, BATCH, seed=2, repeats=5)
            t_rate = split["teacher"]["showers_per_s"]
            out["teachers"][tname].update(_speed(split["teacher"]))
            for k in group:
                if k != "teacher":
                    out["recipes"][k].update({**_speed(split[k]), "speedup_vs_teacher": split[k]["showers_per_s"] / t_rate})
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
    tmpdir.cleanup()
    out["headline"] = _headline(out)
    return out


def _static_int8(stored: Any, batch: int, repeats: int = 3, min_time: float = 0.5) -> dict[str, Any]:
    """Static-input int8 ONNX Runtime variants of ``stored``'s network against the deploy path's dynamic
    ``onnx-int8`` form (see the module docstring); one torch / ONNX Runtime thread."""
    import logging
    import tempfile

    import torch
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    from simcompress.compress.accounting import _time
    from simcompress.compress.deploy import RTOL, OrtNetwork, _onnx_fp32, deploy, network_inputs

    class Reader(CalibrationDataReader):  # the model's own network inputs, seeds apart from the measured batch
        def __init__(self, n: int, size: int = 512) -> None:
            self.batches = iter([{f"x{i}": a.numpy() for i, a in enumerate(network_inputs(stored, size, seed=100 + j))}
                                 for j in range(n // size)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    args = network_inputs(stored, batch, seed=0)
    with torch.inference_mode():
        ref = stored.network(*args).float()
    scale = float(ref.abs().max()) or 1.0
    nets: dict[str, Any] = {"dynamic": deploy(stored, "onnx-int8", threads=1).network}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fp32.onnx"
        src.write_bytes(_onnx_fp32(deploy(stored, "baked").network, network_inputs(stored, 8)))
        root = logging.getLogger()
        was, root.disabled = root.disabled, True
        try:
            for fmt, act in (("QDQ", "QInt8"), ("QOperator", "QUInt8")):
                for n_cal in (4096, 20480):
                    dst = Path(tmp) / f"{fmt}-{n_cal}.onnx"
                    quantize_static(str(src), str(dst), Reader(n_cal), quant_format=getattr(QuantFormat, fmt), per_channel=True,
                                    weight_type=QuantType.QInt8, activation_type=getattr(QuantType, act),
                                    op_types_to_quantize=["MatMul", "Gemm"], calibrate_method=CalibrationMethod.MinMax)
                    nets[f"static-{fmt}-{act.lower()}-calib{n_cal}"] = OrtNetwork(dst.read_bytes(), len(args), 1)
        finally:
            root.disabled = was
    res: dict[str, Any] = {}
    with torch.inference_mode():
        for k, net in nets.items():
            d = float((net(*args).float() - ref).abs().max())
            res[k] = {"max_abs_diff_over_scale": round(d / scale, 4), "faithful": d <= RTOL * scale}
            net(*args)  # warm-up
        rates = dict.fromkeys(nets, 0.0)
        for _ in range(repeats):
            for k, net in nets.items():
                rates[k] = max(rates[k], batch * _time(lambda net=net: net(*args), min_time))
    for k in nets:
        res[k].update({"network_rate": round(rates[k]), "x_dynamic": round(rates[k] / rates["dynamic"], 3)})
    keep = [k for k in nets if k != "dynamic" and res[k]["faithful"] and rates[k] > 1.05 * rates["dynamic"]]
    res["static_kept"] = max(keep, key=lambda k: rates[k]) if keep else None
    return res


_SPLIT_KEYS = ("sample", "latent_condition", "network", "postprocess", "other")  # compress.accounting.SPLIT_STAGES


def _speed(split: dict[str, float]) -> dict[str, Any]:
    """Showers/s, network share and the split of one model's ``sample()`` (ms) from ``sample_split``."""
    return {"showers_per_s": round(split["showers_per_s"]), "network_share": round(split["network_share"], 3),
            "split_ms": {k: round(1e3 * split[k], 2) for k in _SPLIT_KEYS}}


def _headline(out: dict[str, Any]) -> dict[str, Any]:
    """The two speed targets of the shipped GAN: network share of sample() >= 80 % and >= 4x showers/s."""
    gan = out.get("teachers", {}).get("ds1-photons-gan")
    if not gan or "network_share" not in gan:
        return {}
    pts = {k: r for k, r in out["recipes"].items() if r.get("teacher") == "ds1-photons-gan" and "speedup_vs_teacher" in r}
    head: dict[str, Any] = {"teacher_network_share": gan["network_share"], "network_share_target": 0.8,
                            "network_share_met": gan["network_share"] >= 0.8}
    passed = [k for k in pts if (pts[k].get("damage") or {}).get("damage_gate_passed")]
    for label, pool in (("fastest", list(pts)), ("fastest_within_damage_gate", passed)):
        if not pool:
            continue
        k = max(pool, key=lambda k: pts[k]["speedup_vs_teacher"])
        b = pts[k]
        head[label] = {"point": k, "speedup": round(b["speedup_vs_teacher"], 2), "speedup_met": b["speedup_vs_teacher"] >= 4.0,
                       "form": b["form"], "max_abs_diff_vs_fake_quantized": b["max_abs_diff_vs_fake_quantized"],
                       "auc_vs_teacher": (b.get("damage") or {}).get("auc_vs_teacher"),
                       "damage_gate_passed": (b.get("damage") or {}).get("damage_gate_passed")}
    head["speedup_target"] = 4.0
    return head


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--recipes", default="")
    args = ap.parse_args()
    res = run(args.quick, [r for r in args.recipes.split(",") if r] or None)
    print(json.dumps(res, indent=2, default=str))
