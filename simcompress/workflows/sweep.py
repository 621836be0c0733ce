"""The sweep of a shower generator: every grid point compressed, counted, and measured in physics.

Per point (:func:`evaluate_point`, on a process pool, one torch thread per worker): compress
with the entry's fine-tuning on the reference showers, save the bundle, count
storage/parameters/BOPs, generate showers at the teacher's incident energies and measure the
**damage** with the public validation API (``simcompress.validation.validate``, the teacher's
own generated showers as the reference: every feature's W1 / separation power against the
teacher-versus-teacher noise floor, FPD/KPD, the classifier AUC of student versus teacher).
Then, serially in the parent process so that timings do not share the CPUs with other points:
the execution form (:func:`simcompress.compress.deploy.choose_form`, recorded in the bundle)
and end-to-end ``sample()`` showers/s of teacher and student interleaved. The grid, reuse of
finished points, pick and page are :mod:`simcompress.compress.sweep`'s.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..compress.sweep import (
    FORMAT_VERSION,
    SweepPoint,
    SweepResult,
    SweepSpec,
    check_pick,
    expand,
    run_points,
    write_json,
    write_sweep,
)
from ..errors import ConfigError
from .recipe import sampling_bytes

__all__ = ["damage_figures", "evaluate_point", "run_sweep"]


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def damage_figures(vres: Any, candidate: str = "student") -> dict[str, Any]:
    """Damage figures of ``candidate`` from a :class:`simcompress.validation.ValidationResult` (teacher as reference)."""
    d = vres.to_dict()
    c = d["candidates"][candidate]
    w1r, spr = [], []
    for f in c["features"].values():
        fl = f.get("floor") or {}
        if _finite(fl.get("w1")) and fl["w1"] > 0 and _finite(f.get("w1")) is not None:
            w1r.append(f["w1"] / fl["w1"])
        if _finite(fl.get("sp")) and fl["sp"] > 0 and _finite(f.get("sp")) is not None:
            spr.append(f["sp"] / fl["sp"])
    mv = c.get("multivariate") or {}
    cls = (c.get("classifier") or {}).get("high") or {}
    checks = [k for k in d["checks"] if k["candidate"] == candidate]
    return {
        "auc_vs_teacher": _finite(cls.get("auc")),
        "auc_floor": _finite((cls.get("floor") or {}).get("auc")),
        "w1_over_floor_max": max(w1r) if w1r else None,
        "sp_over_floor_max": max(spr) if spr else None,
        "fpd": _finite((mv.get("fpd") or {}).get("value")),
        "fpd_floor": _finite((mv.get("fpd") or {}).get("floor")),
        "kpd": _finite((mv.get("kpd") or {}).get("value")),
        "checks_failed": sum(not k["passed"] for k in checks),
        "checks_total": len(checks),
        "damage_gate_passed": all(k["passed"] for k in checks),
    }


def _network_call(z: Any, c: Any) -> Callable[[Any], Any]:
    return lambda m: m.network(z, c)


def evaluate_point(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: compress one point, save its bundle, count sizes, measure damage. Returns the record."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from ..compress.accounting import count_params, storage_bits
    from ..compress.bundle import save_compressed
    from ..compress.pipeline import Pipeline
    from ..compress.report import count_ops
    from ..generators import load_generator
    from ..showers.data import ShowerSet
    from ..showers.io import open_showers
    from ..validation import validate
    from .generator_hooks import generator_calibration, generator_finetune

    t0 = time.perf_counter()
    pdir = Path(task["dir"])
    if pdir.exists():
        shutil.rmtree(pdir)
    pdir.mkdir(parents=True)
    seed = int(task["seed"])
    gen = load_generator(task["model"]).eval()
    data = open_showers(task["reference"]).read(stop=task["finetune_events"]) if task["reference"] else None
    teacher = open_showers(task["teacher_showers"]).read()
    cal_e = teacher.incident_energy[: task["calibration_events"]].astype(np.float64)
    ft = task["finetune"]
    steps = [*task.get("before", []), {**task["step"], **({"finetune": ft} if ft else {})}]
    pipe = Pipeline(steps, gate=None, finetune=generator_finetune(gen, data, seed), source=task["label"])
    kwargs: dict[str, Any] = {"calibration": generator_calibration(gen, cal_e, seed)}
    if data is not None:
        kwargs["reference"] = (np.asarray(data.incident_energy), np.asarray(data.showers))
    result = pipe.run(gen, **kwargs)
    comp: Any = result.model.eval()
    base, applied = result.base_and_steps(gen.config_dict())
    save_compressed(comp, base, applied, None, pdir / "bundle")
    n_ops = 256
    z = torch.randn(n_ops, int(gen.latent_dim), generator=torch.Generator().manual_seed(seed))
    e_ops = torch.from_numpy(cal_e[:n_ops].astype(np.float32)) if cal_e.size >= n_ops else torch.full((n_ops,), 1e4)
    ops = {}
    for name, m in (("teacher", gen), ("student", comp)):
        c = m.condition(e_ops)
        z_m = z if int(m.latent_dim) == z.shape[1] else torch.randn(n_ops, int(m.latent_dim), generator=torch.Generator().manual_seed(seed))
        ops[name] = count_ops(m, _network_call(z_m, c), n_ops)["bops"]
    s_t, s_s = storage_bits(gen.network), storage_bits(comp.network)
    p_t, p_s = count_params(gen.network), count_params(comp.network)
    e = torch.from_numpy(np.asarray(teacher.incident_energy, dtype=np.float32))
    with torch.no_grad():
        y = comp.sample(e, generator=torch.Generator().manual_seed(seed + 101))
    student = ShowerSet(teacher.incident_energy, y.float().numpy(), teacher.geometry, {"source": task["label"]})
    vres = validate(teacher, {"student": student}, task["gate_spec"], out_dir=pdir / "validation", progress=False,
                    html=bool(task["validation_html"]))
    rec = {
        "id": task["id"], "label": task["label"], "method": task["method"], "values": task["values"],
        "step": task["step"], "finetune": ft, "before": task.get("before", []), "key": task["key"], "status": "done",
        "storage_bits": s_s, "teacher_storage_bits": s_t, "storage_ratio": s_t / max(s_s, 1),
        "params": p_s, "teacher_params": p_t, "params_ratio": p_t / max(p_s, 1),
        "bops_per_shower": ops["student"], "teacher_bops_per_shower": ops["teacher"],
        "bops_ratio": ops["teacher"] / max(ops["student"], 1e-300),
        "bundle_bytes": sampling_bytes(pdir / "bundle"), "teacher_bundle_bytes": task["teacher_bundle_bytes"],
        **damage_figures(vres),
        "n_events": int(e.numel()),
        "validation_report": f"points/{task['id']}/validation/" + ("report.html" if task["validation_html"] else "metrics.json"),
        "seconds_compress_and_damage": time.perf_counter() - t0,
    }
    rec["bundle_ratio"] = rec["teacher_bundle_bytes"] / max(rec["bundle_bytes"], 1)
    write_json(pdir / "point.json", rec)
    return rec


def _measure_speed(rec: dict[str, Any], out: Path, teacher: Any, batch: int, min_time: float, seed: int) -> None:
    """Parent process, one point at a time: choose the execution form, record it, time teacher vs student."""
    import torch

    from ..compress.bundle import load_compressed
    from ..compress.deploy import choose_form, deploy, sample_rate
    from ..generators import build_generator

    bdir = out / "points" / rec["id"] / "bundle"
    stored = load_compressed(bdir, builder=build_generator, deployed=False)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        choice = choose_form(stored, batch=batch, min_time=min_time, seed=seed)
        fast = deploy(stored, choice.form, sparse_layers=choice.sparse_layers)
        rates = sample_rate({"teacher": teacher, "student": fast}, batch, seed=seed, min_time=min_time)
    finally:
        torch.set_num_threads(old)
    cfile = bdir / "config.json"
    cfg = json.loads(cfile.read_text())
    cfg["compression"]["deploy"] = choice.to_dict()  # config.json only; weights_sha256 still matches
    write_json(cfile, cfg)
    rec.update({
        "deploy_form": choice.form, "deploy_max_abs_diff": choice.max_abs_diff.get(choice.form),
        "showers_per_s": rates["student"], "teacher_showers_per_s": rates["teacher"],
        "speedup": rates["student"] / max(rates["teacher"], 1e-300), "speed_batch": batch, "speed_threads": 1,
    })
    rec["bundle_bytes"] = sampling_bytes(bdir)
    rec["bundle_ratio"] = rec["teacher_bundle_bytes"] / max(rec["bundle_bytes"], 1)
    write_json(out / "points" / rec["id"] / "point.json", rec)


def run_sweep(
    model: str,
    spec: SweepSpec,
    out_dir: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    n_events: int = 10_000,
    finetune_events: int = 20_000,
    calibration_events: int = 2048,
    gate_spec: str = "compression",
    workers: int = 2,
    seed: int = 0,
    speed_batch: int = 10_000,
    measure_seconds: float = 0.3,
    validation_html: bool = True,
    pick: str | None = None,
    pick_by: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run (or resume) a sweep of generator ``model``; see the module docstring. Bad input raises before anything is written."""
    say = progress or (lambda _m: None)
    points = expand(spec)
    check_pick(spec, pick, pick_by)
    if reference is not None and not Path(reference).exists():
        msg = f"{reference}: reference file not found"
        raise ConfigError(msg)
    if workers < 1:
        msg = f"--workers must be >= 1, got {workers}"
        raise ConfigError(msg)
    import numpy as np
    import torch

    from ..generators import load_generator
    from ..generators.bundle import bundle_hash, resolve_bundle
    from ..showers.data import ShowerSet
    from ..showers.io import open_showers, write_showers
    from ..validation import load_gate_spec

    gspec = load_gate_spec(gate_spec)  # bad spec: error before any output
    teacher = load_generator(model).eval()
    tdir = resolve_bundle(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # teacher showers: the reference of every damage measurement, at the reference's incident energies
    if reference is not None:
        e = open_showers(reference).incident_energy()[:n_events].astype(np.float32)
    else:
        lo, hi = (float(v) for v in teacher.energy_range_mev)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
        e = np.exp(rng.uniform(math.log(lo), math.log(hi), n_events)).astype(np.float32)
    has_weights = (tdir / "weights.safetensors").is_file()
    t_hash = bundle_hash(tdir) if has_weights else hashlib.sha256(str(tdir).encode()).hexdigest()
    ref_key = None
    if reference is not None:
        st = Path(reference).stat()
        ref_key = [str(Path(reference).resolve()), st.st_size, int(st.st_mtime)]
    context = {"teacher": t_hash, "reference": ref_key, "n_events": int(e.size), "finetune_events": finetune_events,
               "calibration_events": calibration_events, "gate_spec": gspec.model_dump(mode="json"), "seed": seed,
               "validation_html": validation_html, "format_version": FORMAT_VERSION}
    ctx_hash = hashlib.sha256(json.dumps(context, sort_keys=True, default=str).encode()).hexdigest()[:16]
    tfile = out / f"teacher-{ctx_hash}.root"
    if not tfile.exists():
        with torch.no_grad():
            y = teacher.sample(torch.from_numpy(e), generator=torch.Generator().manual_seed(seed + 7))
        write_showers(tfile, ShowerSet(e, y.float().numpy(), teacher.geometry, {"source": f"teacher {model}"}))

    def make_task(p: SweepPoint, key: str) -> dict[str, Any]:
        return {
            "id": p.id, "label": p.label, "method": p.method, "values": p.values, "step": p.step, "finetune": p.finetune,
            "before": p.before, "key": key, "dir": str(out / "points" / p.id), "model": str(model), "reference": str(reference) if reference else None,
            "teacher_showers": str(tfile), "finetune_events": finetune_events, "calibration_events": calibration_events,
            "gate_spec": gspec, "seed": seed, "validation_html": validation_html,
            "teacher_bundle_bytes": sampling_bytes(tdir) if has_weights else None,
        }

    def finish(rec: dict[str, Any], reused: bool) -> None:
        if reused:  # compressed and validated already; only the timing is redone
            _measure_speed(rec, out, teacher, speed_batch, measure_seconds, seed)
            say(f"  {rec['label']}: speed re-measured at batch {speed_batch}: x{rec['speedup']:.2f}")
            return
        say(f"  {rec['label']}: storage x{rec['storage_ratio']:.2f}, AUC vs teacher {rec['auc_vs_teacher']}")
        _measure_speed(rec, out, teacher, speed_batch, measure_seconds, seed)
        say(f"  {rec['label']}: {rec['deploy_form']} form, speed-up x{rec['speedup']:.2f}")

    records, reused = run_points(
        points, out, ctx_hash, make_task=make_task, evaluate=evaluate_point, finish=finish,
        stale=lambda old: old.get("speed_batch") != speed_batch or "speedup" not in old, workers=workers, say=say,
    )
    return write_sweep(out, spec, records, model=str(model), reference=str(reference) if reference else None,
                       context=context, pick=pick, pick_by=pick_by, reused=reused)
