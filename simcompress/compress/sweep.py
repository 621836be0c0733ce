"""Trade-off sweeps: compress a generator at every point of a grid, measure what it gains
(storage, bundle bytes, bit-operations, end-to-end showers/s) and what it costs in physics
(damage against the teacher), and draw the Pareto front.

A sweep is a list of entries, each a method, its fixed options, a grid and the fine-tuning
after it (``configs/sweeps/*.yaml``)::

    name: gan-quantization
    sweeps:
      - method: ptq
        options: {weights: {granularity: per_channel, calibration: mse}}
        grid: {bits: [16, 8, 6, 4]}
      - method: magnitude_prune
        grid: {sparsity: [0.5, 0.75, 0.9]}
        finetune: {steps: 100, lr: 5.0e-5}

Grid keys are short names (:data:`GRID_KEYS`: ``bits``, ``sparsity``, ``energy``, ``rank``,
...) mapped onto each method's option; several keys make their Cartesian product.

Per point (:func:`run_sweep`), on a process pool (one torch thread per worker):
compress with the entry's fine-tuning on the reference showers, save the bundle, count
storage/parameters/BOPs, generate showers at the teacher's incident energies and measure the
**damage** with the public validation API (``simcompress.validation.validate``, the teacher's
own generated showers as the reference: every feature's W1 / separation power against the
teacher-versus-teacher noise floor, FPD/KPD, the classifier AUC of student versus teacher).
Then, serially in the parent process so that timings do not share the CPUs with other points:
the execution form (:func:`simcompress.compress.deploy.choose_form`, recorded in the bundle)
and end-to-end ``sample()`` showers/s of teacher and student interleaved. Finished points are
stored under ``points/<id>/point.json`` keyed by everything they depend on; a rerun reuses them.

Outputs: ``sweep.json`` (the table), ``sweep.html`` (the Pareto fronts: damage against storage
ratio and against speed-up, one marker per point, the picked point highlighted, each point
linking to its validation report) and, with a pick condition, ``picked/`` (the chosen bundle).

Deviation from "compress never imports physics", as for ``distill``: the point evaluator
imports ``generators``, ``showers`` and ``validation`` lazily (it runs shower generators and
measures their physics).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import io
import itertools
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from .._config import StrictModel, parse_config, read_yaml_mapping
from ..errors import ConfigError, did_you_mean
from .pipeline import FinetuneSpec

__all__ = [
    "FIGURES",
    "GRID_KEYS",
    "Condition",
    "SweepEntry",
    "SweepPoint",
    "SweepResult",
    "SweepSpec",
    "expand",
    "load_sweep",
    "pareto_front",
    "parse_condition",
    "parse_grid",
    "pick_point",
    "run_sweep",
    "sweep_from_grid",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

#: grid key -> dotted option path, per method
GRID_KEYS: dict[str, dict[str, str]] = {
    "ptq": {"bits": "weights.bits", "activation_bits": "activations.bits"},
    "qat": {"bits": "weights.bits", "activation_bits": "activations.bits", "steps": "steps"},
    "mixed_precision": {"bits": "avg_bits"},
    "magnitude_prune": {"sparsity": "sparsity"},
    "gradual_prune": {"sparsity": "final_sparsity", "steps": "steps"},
    "structured_prune": {"sparsity": "amount", "amount": "amount"},
    "svd": {"energy": "energy", "rank": "rank", "max_rel_error": "max_rel_error"},
    "lowrank_quant": {"bits": "weights.bits", "energy": "svd.energy", "rank": "svd.rank"},
    "tucker": {"rank": "rank_ratio"},
    "tensor_train": {"rank": "max_rank", "cores": "cores"},
    "lora": {"rank": "rank"},
    "fixed_point": {"bits": "weight.width", "result_bits": "result.width", "input_bits": "input.width"},
    "qat_fixed_point": {"bits": "weight.width", "result_bits": "result.width", "input_bits": "input.width"},
    "distill_mlp": {"width": "student.width", "depth": "student.depth"},
    "distill_gan": {"width": "student.width", "depth": "student.depth"},
    "distill_flow_iaf": {"hidden": "student.hidden"},
}

#: figures of a point (pick conditions, plots); higher is better for ratios and speed, lower for damage
FIGURES: dict[str, str] = {
    "storage_ratio": "teacher / student storage bits of the sampling network (counted)",
    "bundle_ratio": "teacher / student bytes of config.json + weights.safetensors (measured)",
    "params_ratio": "teacher / student parameters (counted)",
    "bops_ratio": "teacher / student bit-operations per shower (counted)",
    "speedup": "student / teacher end-to-end sample() showers/s, same run (measured)",
    "showers_per_s": "student end-to-end sample() showers/s (measured)",
    "auc_vs_teacher": "classifier AUC, student versus teacher showers (high-level features)",
    "auc_floor": "the same classifier, teacher versus teacher",
    "w1_over_floor_max": "largest W1 / teacher-versus-teacher floor over the features",
    "sp_over_floor_max": "largest separation power / floor over the features",
    "fpd": "FPD student versus teacher",
    "fpd_floor": "FPD teacher versus teacher",
    "kpd": "KPD student versus teacher",
    "checks_failed": "gate checks failed against the teacher",
}
DAMAGE_AXES = ("auc_vs_teacher", "w1_over_floor_max", "fpd")


class SweepEntry(StrictModel):
    """One method over a grid."""

    method: str
    options: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]]
    finetune: FinetuneSpec | None = None
    label: str = ""


class SweepSpec(StrictModel):
    """A sweep file (see the module docstring)."""

    name: str = "sweep"
    description: str = ""
    model: str | None = None
    sweeps: list[SweepEntry]
    pick: str | None = None
    pick_by: Literal["storage", "speed"] = "storage"


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: a single-step recipe."""

    id: str
    label: str
    method: str
    values: dict[str, Any]
    step: dict[str, Any]
    finetune: dict[str, Any] | None


@dataclass(frozen=True)
class Condition:
    figure: str
    op: str
    value: float

    def holds(self, record: dict[str, Any]) -> bool:
        v = record.get(self.figure)
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return False
        return {"<=": v <= self.value, "<": v < self.value, ">=": v >= self.value, ">": v > self.value,
                "==": v == self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.figure}{self.op}{self.value:g}"


# -- specs -------------------------------------------------------------------------------


def _check_entry(entry: SweepEntry, source: str) -> None:
    from .base import list_methods

    if entry.method not in GRID_KEYS:
        known = [m for m in list_methods() if m in GRID_KEYS]
        msg = (
            f"{source}.method: unknown or unsweepable method {entry.method!r}; {did_you_mean(entry.method, known)}"
                          f" (sweepable: {', '.join(sorted(GRID_KEYS))})"
        )
        raise ConfigError(msg)
    if not entry.grid:
        msg = (
            f"{source}.grid: empty grid; give at least one key with values, e.g. "
                          f"{next(iter(GRID_KEYS[entry.method]))}=..."
        )
        raise ConfigError(msg)
    for key, values in entry.grid.items():
        if key not in GRID_KEYS[entry.method]:
            msg = (
                f"{source}.grid.{key}: unknown grid key for method {entry.method!r}; allowed: "
                              f"{', '.join(GRID_KEYS[entry.method])}"
            )
            raise ConfigError(msg)
        if not isinstance(values, list) or not values:
            msg = f"{source}.grid.{key}: empty grid; give a list of values"
            raise ConfigError(msg)


def load_sweep(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and check a sweep YAML (every point's method config is validated)."""
    spec = parse_config(SweepSpec, read_yaml_mapping(path), source=str(path))
    _check_spec(spec, str(path))
    return spec


def _check_spec(spec: SweepSpec, source: str) -> None:
    if not spec.sweeps:
        msg = f"{source}.sweeps: empty; give at least one {{method, grid}} entry"
        raise ConfigError(msg)
    for i, e in enumerate(spec.sweeps):
        _check_entry(e, f"{source}: sweeps[{i}]")
    expand(spec, source)
    if spec.pick:
        parse_condition(spec.pick)


def parse_grid(items: list[str], source: str = "--grid") -> dict[str, list[Any]]:
    """``["bits=16,8,6,4", "sparsity=0.5,0.9"]`` -> ``{"bits": [16, 8, 6, 4], "sparsity": [0.5, 0.9]}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, vals = item.partition("=")
        key = key.strip()
        if not sep or not key:
            msg = f"{source} {item!r}: expected KEY=V1,V2,... (e.g. bits=16,8,6,4)"
            raise ConfigError(msg)
        values = [yaml.safe_load(v) for v in vals.split(",") if v.strip()]
        if not values:
            msg = f"{source} {key}: empty grid; give values, e.g. {key}=1,2"
            raise ConfigError(msg)
        grid[key] = values
    return grid


def sweep_from_grid(method: str, grid: dict[str, list[Any]], *, options: dict[str, Any] | None = None,
                    finetune: dict[str, Any] | None = None, name: str = "", source: str = "--grid") -> SweepSpec:
    """A one-entry sweep from the command line (``--method ptq --grid bits=16,8``)."""
    entry = {"method": method, "grid": grid, "options": options or {}, "finetune": finetune}
    spec = parse_config(SweepSpec, {"name": name or f"{method}-sweep", "sweeps": [entry]}, source=source)
    _check_spec(spec, source)
    return spec


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def expand(spec: SweepSpec, source: str = "<sweep>") -> list[SweepPoint]:
    """Every grid point of every entry, with its validated single-step method config."""
    from .base import config_from_dict

    points: list[SweepPoint] = []
    seen: set[str] = set()
    for i, e in enumerate(spec.sweeps):
        keys = list(e.grid)
        for combo in itertools.product(*(e.grid[k] for k in keys)):
            values = dict(zip(keys, combo, strict=False))
            step = copy.deepcopy(e.options)
            step.pop("method", None)
            for k, v in values.items():
                _set(step, GRID_KEYS[e.method][k], v)
            step = {"method": e.method, **step}
            label = (e.label or e.method) + " " + " ".join(f"{k}={v}" for k, v in values.items())
            cfg = config_from_dict(step, source=f"{source}: sweeps[{i}] {label}")
            ft = e.finetune.model_dump() if e.finetune else None
            pid = hashlib.sha256(json.dumps([cfg.to_dict(), ft], sort_keys=True, default=str).encode()).hexdigest()[:12]
            if pid in seen:
                continue
            seen.add(pid)
            slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)
            points.append(SweepPoint(f"{slug}-{pid}", label, e.method, values, cfg.to_dict(), ft))
    return points


_COND = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+)\s*$")


def parse_condition(text: str) -> list[Condition]:
    """``"auc_vs_teacher<=0.55 and speedup>=2"`` (``and`` or ``,`` between terms)."""
    terms = [t for t in re.split(r"\s*(?:,|\band\b)\s*", text.strip()) if t]
    if not terms:
        msg = f"--pick {text!r}: empty condition; e.g. auc_vs_teacher<=0.55"
        raise ConfigError(msg)
    out = []
    for t in terms:
        m = _COND.match(t)
        if not m:
            msg = f"--pick {t!r}: expected FIGURE<=VALUE (operators <=, <, >=, >, ==); figures: {', '.join(FIGURES)}"
            raise ConfigError(msg)
        fig, op, val = m.groups()
        if fig not in FIGURES:
            msg = f"--pick {t!r}: unknown figure {fig!r}; {did_you_mean(fig, FIGURES)} (figures: {', '.join(FIGURES)})"
            raise ConfigError(msg)
        try:
            out.append(Condition(fig, op, float(val)))
        except ValueError:
            msg = f"--pick {t!r}: {val!r} is not a number"
            raise ConfigError(msg) from None
    return out


# -- Pareto front and pick ---------------------------------------------------------------


def pareto_front(records: list[dict[str, Any]], gain: str, damage: str) -> list[str]:
    """Ids of the points no other point beats on both ``gain`` (higher better) and ``damage`` (lower better)."""
    ok = [r for r in records if _num(r.get(gain)) and _num(r.get(damage))]
    front = []
    for r in ok:
        dominated = any(
            o is not r and o[gain] >= r[gain] and o[damage] <= r[damage] and (o[gain] > r[gain] or o[damage] < r[damage])
            for o in ok
        )
        if not dominated:
            front.append(r["id"])
    return sorted(front, key=lambda i: next(r[gain] for r in ok if r["id"] == i))


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def pick_point(records: list[dict[str, Any]], conditions: list[Condition], by: str = "storage") -> dict[str, Any] | None:
    """The smallest (``by="storage"``: largest storage ratio) or fastest (``by="speed"``) point satisfying every condition."""
    key = "storage_ratio" if by == "storage" else "speedup"
    ok = [r for r in records if r.get("status") == "done" and all(c.holds(r) for c in conditions) and _num(r.get(key))]
    if not ok:
        return None
    return max(ok, key=lambda r: (r[key], r.get("speedup") or 0.0, -(r.get("auc_vs_teacher") or 1.0)))


# -- evaluation ---------------------------------------------------------------------------


def _atomic_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _sampling_bytes(bundle: Path) -> int:
    return sum((bundle / f).stat().st_size for f in ("config.json", "weights.safetensors"))


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


def _evaluate_point(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: compress one point, save its bundle, count sizes, measure damage. Returns the record."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from ..generators import load_generator
    from ..showers.data import ShowerSet
    from ..showers.io import open_showers
    from ..validation import validate
    from .accounting import count_params, storage_bits
    from .bundle import save_compressed
    from .pipeline import Pipeline, generator_calibration, generator_finetune
    from .report import count_ops

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
    steps = [{**task["step"], **({"finetune": ft} if ft else {})}]
    pipe = Pipeline(steps, gate=None, finetune=generator_finetune(gen, data, seed), source=task["label"])
    kwargs: dict[str, Any] = {"calibration": generator_calibration(gen, cal_e, seed)}
    if data is not None:
        kwargs["reference"] = (np.asarray(data.incident_energy), np.asarray(data.showers))
    result = pipe.run(gen, **kwargs)
    comp = result.model.eval()
    base, applied = result.base_and_steps(gen.config_dict())
    save_compressed(comp, base, applied, None, pdir / "bundle")
    n_ops = 256
    z = torch.randn(n_ops, int(gen.latent_dim), generator=torch.Generator().manual_seed(seed))
    e_ops = torch.from_numpy(cal_e[:n_ops].astype(np.float32)) if cal_e.size >= n_ops else torch.full((n_ops,), 1e4)
    ops = {}
    for name, m in (("teacher", gen), ("student", comp)):
        c = m.condition(e_ops)
        z_m = z if int(m.latent_dim) == z.shape[1] else torch.randn(n_ops, int(m.latent_dim), generator=torch.Generator().manual_seed(seed))
        ops[name] = count_ops(m, lambda mm, z_m=z_m, c=c: mm.network(z_m, c), n_ops)["bops"]
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
        "step": task["step"], "finetune": ft, "key": task["key"], "status": "done",
        "storage_bits": s_s, "teacher_storage_bits": s_t, "storage_ratio": s_t / max(s_s, 1),
        "params": p_s, "teacher_params": p_t, "params_ratio": p_t / max(p_s, 1),
        "bops_per_shower": ops["student"], "teacher_bops_per_shower": ops["teacher"],
        "bops_ratio": ops["teacher"] / max(ops["student"], 1e-300),
        "bundle_bytes": _sampling_bytes(pdir / "bundle"), "teacher_bundle_bytes": task["teacher_bundle_bytes"],
        **damage_figures(vres),
        "n_events": int(e.numel()),
        "validation_report": f"points/{task['id']}/validation/" + ("report.html" if task["validation_html"] else "metrics.json"),
        "seconds_compress_and_damage": time.perf_counter() - t0,
    }
    rec["bundle_ratio"] = rec["teacher_bundle_bytes"] / max(rec["bundle_bytes"], 1)
    _atomic_json(pdir / "point.json", rec)
    return rec


def _measure_speed(rec: dict[str, Any], out: Path, teacher: Any, batch: int, min_time: float, seed: int) -> None:
    """Parent process, one point at a time: choose the execution form, record it, time teacher vs student."""
    import torch

    from .bundle import load_compressed
    from .deploy import choose_form, deploy, sample_rate

    bdir = out / "points" / rec["id"] / "bundle"
    stored = load_compressed(bdir, deployed=False)
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
    _atomic_json(cfile, cfg)
    rec.update({
        "deploy_form": choice.form, "deploy_max_abs_diff": choice.max_abs_diff.get(choice.form),
        "showers_per_s": rates["student"], "teacher_showers_per_s": rates["teacher"],
        "speedup": rates["student"] / max(rates["teacher"], 1e-300), "speed_batch": batch, "speed_threads": 1,
    })
    rec["bundle_bytes"] = _sampling_bytes(bdir)
    rec["bundle_ratio"] = rec["teacher_bundle_bytes"] / max(rec["bundle_bytes"], 1)
    _atomic_json(out / "points" / rec["id"] / "point.json", rec)


@dataclass
class SweepResult:
    out_dir: Path
    records: list[dict[str, Any]]
    picked: dict[str, Any] | None
    reused: int
    table: dict[str, Any]


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
    """Run (or resume) a sweep; see the module docstring. Bad input raises before anything is written."""
    say = progress or (lambda _m: None)
    points = expand(spec)
    cond_text = pick if pick is not None else spec.pick
    conditions = parse_condition(cond_text) if cond_text else []
    by = pick_by or spec.pick_by
    if by not in ("storage", "speed"):
        msg = f"--pick-by {by!r}: allowed: storage, speed"
        raise ConfigError(msg)
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
    from ..validation.gate import load_gate_spec

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
    t_hash = bundle_hash(tdir) if (tdir / "weights.safetensors").is_file() else hashlib.sha256(str(tdir).encode()).hexdigest()
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
    tasks, records, reused, respeed = [], {}, 0, []
    for p in points:
        key = hashlib.sha256(json.dumps([ctx_hash, p.step, p.finetune], sort_keys=True, default=str).encode()).hexdigest()
        pfile = out / "points" / p.id / "point.json"
        if pfile.is_file():
            try:
                old = json.loads(pfile.read_text())
            except json.JSONDecodeError:
                old = {}
            if old.get("key") == key and old.get("status") == "done":
                records[p.id] = old
                reused += 1
                if old.get("speed_batch") != speed_batch or "speedup" not in old:
                    respeed.append(old)  # compressed and validated already; only the timing is redone
                continue
        tasks.append({
            "id": p.id, "label": p.label, "method": p.method, "values": p.values, "step": p.step, "finetune": p.finetune,
            "key": key, "dir": str(out / "points" / p.id), "model": str(model), "reference": str(reference) if reference else None,
            "teacher_showers": str(tfile), "finetune_events": finetune_events, "calibration_events": calibration_events,
            "gate_spec": gspec, "seed": seed, "validation_html": validation_html,
            "teacher_bundle_bytes": _sampling_bytes(tdir) if (tdir / "weights.safetensors").is_file() else None,
        })
    say(f"{len(points)} points: {reused} reused, {len(tasks)} to run on {min(workers, max(len(tasks), 1))} worker(s)")
    if tasks:
        if workers == 1 or len(tasks) == 1:
            done = [_evaluate_point(t) for t in tasks]
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn")) as pool:
                done = list(pool.map(_evaluate_point, tasks))
        for rec in done:
            say(f"  {rec['label']}: storage x{rec['storage_ratio']:.2f}, AUC vs teacher {rec['auc_vs_teacher']}")
            _measure_speed(rec, out, teacher, speed_batch, measure_seconds, seed)
            say(f"  {rec['label']}: {rec['deploy_form']} form, speed-up x{rec['speedup']:.2f}")
            records[rec["id"]] = rec
    for rec in respeed:
        _measure_speed(rec, out, teacher, speed_batch, measure_seconds, seed)
        say(f"  {rec['label']}: speed re-measured at batch {speed_batch}: x{rec['speedup']:.2f}")
    ordered = [records[p.id] for p in points]
    picked = pick_point(ordered, conditions, by) if conditions else None
    table = {
        "format_version": FORMAT_VERSION, "name": spec.name, "description": spec.description, "model": str(model),
        "reference": str(reference) if reference else None, "context": context, "figures": FIGURES,
        "pick": {"condition": cond_text, "by": by, "picked": picked["id"] if picked else None} if conditions else None,
        "pareto": {f"{d}_vs_{g}": pareto_front(ordered, g, d) for d in DAMAGE_AXES for g in ("storage_ratio", "speedup")},
        "points": ordered,
    }
    _atomic_json(out / "sweep.json", table)
    (out / ".sweep.html.tmp").write_text(sweep_html(table))
    os.replace(out / ".sweep.html.tmp", out / "sweep.html")
    if picked is not None:
        staging = out / ".picked.tmp"
        if staging.exists():
            shutil.rmtree(staging)
        shutil.copytree(out / "points" / picked["id"] / "bundle", staging)
        _atomic_json(staging / "sweep-point.json", picked)
        if (out / "picked").exists():
            shutil.rmtree(out / "picked")
        os.replace(staging, out / "picked")
    elif (out / "picked").exists():
        shutil.rmtree(out / "picked")  # a previous pick that no longer holds
    return SweepResult(out, ordered, picked, reused, table)


# -- HTML page ----------------------------------------------------------------------------


def _plot(table: dict[str, Any], damage: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = table["points"]
    picked = (table.get("pick") or {}).get("picked")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = sorted({p["method"] for p in pts})
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, gain, xlabel in ((axes[0], "storage_ratio", "storage ratio (teacher / student bits)"),
                             (axes[1], "speedup", "end-to-end speed-up (showers/s, student / teacher)")):
        for m in methods:
            sel = [p for p in pts if p["method"] == m and _num(p.get(gain)) and _num(p.get(damage))]
            ax.scatter([p[gain] for p in sel], [p[damage] for p in sel], color=colors[m], label=m, s=30, zorder=3)
            for p in sel:
                ax.annotate(" ".join(f"{v}" for v in p["values"].values()), (p[gain], p[damage]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        front = [next(p for p in pts if p["id"] == i) for i in table["pareto"][f"{damage}_vs_{gain}"]]
        if front:
            ax.step([p[gain] for p in front], [p[damage] for p in front], where="post", color="0.4", lw=1, zorder=2,
                    label="Pareto front")
        if picked:
            p = next(p for p in pts if p["id"] == picked)
            if _num(p.get(gain)) and _num(p.get(damage)):
                ax.scatter([p[gain]], [p[damage]], marker="*", s=260, facecolor="none", edgecolor="red", lw=1.6,
                           zorder=4, label="picked")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(FIGURES[damage].split(",")[0] if damage != "auc_vs_teacher" else "AUC student vs teacher")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def sweep_html(table: dict[str, Any]) -> str:
    """Self-contained page: the Pareto plots (each damage figure) and the table with links."""
    e = html.escape
    picked = (table.get("pick") or {}).get("picked")
    parts = [f"<h1>Sweep {e(table['name'])}: {e(table['model'])}</h1>", f"<p>{e(table.get('description') or '')}</p>"]
    if table.get("pick"):
        parts.append(f"<p>Pick: <code>{e(str(table['pick']['condition']))}</code>, by {e(table['pick']['by'])}: "
                     + (f"<b>{e(picked)}</b> (bundle in <code>picked/</code>)" if picked else "<b>no point satisfies it</b>") + "</p>")
    for d in DAMAGE_AXES:
        if any(_num(p.get(d)) for p in table["points"]):
            parts.append(f"<h2>{e(d)}: {e(FIGURES[d])}</h2><img alt='{e(d)}' src='data:image/png;base64,{_plot(table, d)}'>")
    cols = ["label", "deploy_form", "storage_ratio", "bundle_ratio", "bops_ratio", "speedup", "auc_vs_teacher", "auc_floor",
            "w1_over_floor_max", "sp_over_floor_max", "fpd", "fpd_floor", "checks_failed"]

    def cell(p: dict[str, Any], c: str) -> str:
        v = p.get(c)
        if c == "label":
            return f"<a href='{e(p['validation_report'])}'>{e(str(v))}</a>"
        if isinstance(v, float):
            return f"{v:.4g}"
        return e("" if v is None else str(v))

    rows = "".join(
        f"<tr{' class=picked' if p['id'] == picked else ''}>" + "".join(f"<td>{cell(p, c)}</td>" for c in cols) + "</tr>"
        for p in table["points"])
    parts.append("<h2>Points</h2><table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + f"</tr></thead><tbody>{rows}</tbody></table>")
    parts.append("<p>" + "<br>".join(f"<b>{e(k)}</b>: {e(v)}" for k, v in FIGURES.items()) + "</p>")
    css = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}tr.picked{background:#fdd}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Sweep {e(table['name'])}</title>"
            f"<style>{css}</style></head><body>{''.join(parts)}</body></html>\n")
