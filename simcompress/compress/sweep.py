"""Trade-off sweeps, the generic part: a grid of single-step recipes, the points it expands to,
the reuse of finished points, pick conditions, Pareto fronts and the HTML page.

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
      - method: qat                   # a combination: fixed steps run before the gridded one
        before: [{method: structured_prune, amount: 0.5, finetune: {steps: 300, lr: 1.0e-4}}]
        grid: {bits: [8, 4]}

Grid keys are short names (:data:`GRID_KEYS`: ``bits``, ``sparsity``, ``energy``, ``rank``,
...) mapped onto each method's option; several keys make their Cartesian product.

:func:`run_points` evaluates the points with an injected evaluator (on a process pool, one
task dict per point) and then, serially in this process, an injected ``finish`` step (timings
that must not share the CPUs with other points). Finished points are stored under
``points/<id>/point.json`` keyed by everything they depend on; a rerun reuses them.
:func:`write_sweep` writes ``sweep.json`` (the table), ``sweep.html`` (the Pareto fronts: damage
against storage ratio and against speed-up, the picked point highlighted, each point linking to
its validation report) and, with a pick condition, ``picked/`` (the chosen bundle).

What a point is measured on lives with the caller: the sweep of shower generators (compress,
count, generate, validate against the teacher) is :func:`simcompress.workflows.run_sweep`.

>>> spec = sweep_from_grid("magnitude_prune", parse_grid(["sparsity=0.5,0.9"]))
>>> [p.label for p in expand(spec)]
['magnitude_prune sparsity=0.5', 'magnitude_prune sparsity=0.9']
>>> recs = [{"id": "a", "storage_ratio": 2.0, "fpd": 0.1}, {"id": "b", "storage_ratio": 4.0, "fpd": 0.3},
...         {"id": "c", "storage_ratio": 1.5, "fpd": 0.2}]
>>> pareto_front(recs, "storage_ratio", "fpd")
['a', 'b']
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from .._atomic import atomic_dir, write_text_atomic
from .._config import StrictModel, parse_config, read_yaml_mapping
from ..errors import ConfigError, did_you_mean
from .pipeline import FinetuneSpec, _as_step
from .sweep_html import DAMAGE_AXES, FIGURES, sweep_html

__all__ = [
    "DAMAGE_AXES",
    "FIGURES",
    "GRID_KEYS",
    "Condition",
    "SweepEntry",
    "SweepPoint",
    "SweepResult",
    "SweepSpec",
    "check_pick",
    "expand",
    "load_sweep",
    "pareto_front",
    "parse_condition",
    "parse_grid",
    "pick_point",
    "point_key",
    "publish_page",
    "run_points",
    "sweep_from_grid",
    "sweep_html",
    "write_json",
    "write_sweep",
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



class SweepEntry(StrictModel):
    """One method over a grid."""

    method: str
    options: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]]
    finetune: FinetuneSpec | None = None
    label: str = ""
    #: steps run, in order, before the gridded one (recipe step mappings, each with its optional finetune)
    before: list[dict[str, Any]] = Field(default_factory=list)


class SweepSpec(StrictModel):
    """A sweep file (see the module docstring)."""

    name: str = "sweep"
    description: str = ""
    model: str | None = None
    sweeps: list[SweepEntry]
    pick: str | None = None
    pick_by: Literal["storage", "speed"] = "storage"
    #: folder (relative to the working directory) that receives the page without the bundles:
    #: sweep.html, sweep.json and each point's validation report (e.g. docs/pareto/<model>)
    publish: str | None = None


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: a single-step recipe."""

    id: str
    label: str
    method: str
    values: dict[str, Any]
    step: dict[str, Any]
    finetune: dict[str, Any] | None
    #: the fixed steps run before ``step`` (recipe step mappings with their fine-tuning)
    before: list[dict[str, Any]] = field(default_factory=list)


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
        before = []
        for j, b in enumerate(e.before):
            st = _as_step(copy.deepcopy(b), f"{source}: sweeps[{i}].before[{j}]")
            before.append({**st.config.to_dict(), **({"finetune": st.finetune.model_dump()} if st.finetune else {})})
        prefix = " + ".join(b["method"] for b in before) + " + " if before else ""
        keys = list(e.grid)
        for combo in itertools.product(*(e.grid[k] for k in keys)):
            values = dict(zip(keys, combo, strict=False))
            step = copy.deepcopy(e.options)
            step.pop("method", None)
            for k, v in values.items():
                _set(step, GRID_KEYS[e.method][k], v)
            step = {"method": e.method, **step}
            label = (e.label or prefix + e.method) + " " + " ".join(f"{k}={v}" for k, v in values.items())
            cfg = config_from_dict(step, source=f"{source}: sweeps[{i}] {label}")
            ft = e.finetune.model_dump() if e.finetune else None
            ident: list[Any] = [cfg.to_dict(), ft, *([before] if before else [])]  # no prefix: ids of older sweeps kept
            pid = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]
            if pid in seen:
                continue
            seen.add(pid)
            slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)
            points.append(SweepPoint(f"{slug}-{pid}", label, e.method, values, cfg.to_dict(), ft, before))
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


# -- running points ------------------------------------------------------------------------


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """A sweep's JSON file (``sweep.json``, ``point.json``), written atomically (strict JSON, indent 1)."""
    write_text_atomic(path, json.dumps(data, indent=1, default=str, allow_nan=False) + "\n")


def point_key(context_hash: str, point: SweepPoint) -> str:
    """What a finished point depends on: the sweep's context and the point's step and fine-tuning."""
    ident: list[Any] = [context_hash, point.step, point.finetune, *([point.before] if point.before else [])]
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


#: a record reused from an earlier run that ``finish`` must see again (e.g. timed at another batch)
Stale = Callable[[dict[str, Any]], bool]


def run_points(
    points: list[SweepPoint],
    out_dir: str | os.PathLike[str],
    context_hash: str,
    *,
    make_task: Callable[[SweepPoint, str], dict[str, Any]],
    evaluate: Callable[[dict[str, Any]], dict[str, Any]],
    finish: Callable[[dict[str, Any], bool], None] | None = None,
    stale: Stale | None = None,
    workers: int = 1,
    say: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Evaluate every point not finished before; returns the records in point order and how many were reused.

    ``make_task(point, key)`` builds the task of a point to run (a picklable dict; its ``id``
    and ``key`` are the point's); ``evaluate(task) -> record`` runs it, in ``workers`` spawned
    processes when there are several tasks (so ``evaluate`` must be a module-level function) and
    must store the record with ``key`` and ``status: "done"`` in ``points/<id>/point.json``.
    ``finish(record, reused)`` then runs here, one point at a time, for every new record and for
    the reused ones ``stale(record)`` selects.
    """
    tell = say or (lambda _m: None)
    out = Path(out_dir)
    tasks, records, reused, again = [], {}, 0, []
    for p in points:
        key = point_key(context_hash, p)
        pfile = out / "points" / p.id / "point.json"
        if pfile.is_file():
            try:
                old = json.loads(pfile.read_text())
            except json.JSONDecodeError:
                old = {}
            if old.get("key") == key and old.get("status") == "done":
                records[p.id] = old
                reused += 1
                if stale is not None and stale(old):
                    again.append(old)  # evaluated already; only the finishing step is redone
                continue
        tasks.append(make_task(p, key))
    tell(f"{len(points)} points: {reused} reused, {len(tasks)} to run on {min(workers, max(len(tasks), 1))} worker(s)")
    if tasks:
        if workers == 1 or len(tasks) == 1:
            done = [evaluate(t) for t in tasks]
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn")) as pool:
                done = list(pool.map(evaluate, tasks))
        for rec in done:
            if finish is not None:
                finish(rec, False)
            records[rec["id"]] = rec
    for rec in again:
        if finish is not None:
            finish(rec, True)
    return [records[p.id] for p in points], reused


@dataclass
class SweepResult:
    out_dir: Path
    records: list[dict[str, Any]]
    picked: dict[str, Any] | None
    reused: int
    table: dict[str, Any]


def write_sweep(
    out_dir: str | os.PathLike[str],
    spec: SweepSpec,
    records: list[dict[str, Any]],
    *,
    model: str,
    reference: str | None,
    context: dict[str, Any],
    pick: str | None = None,
    pick_by: str | None = None,
    reused: int = 0,
) -> SweepResult:
    """Pick, Pareto fronts, ``sweep.json``, ``sweep.html`` and ``picked/`` (a copy of the picked point's bundle)."""
    out = Path(out_dir)
    cond_text = pick if pick is not None else spec.pick
    conditions = parse_condition(cond_text) if cond_text else []
    by = pick_by or spec.pick_by
    picked = pick_point(records, conditions, by) if conditions else None
    table = {
        "format_version": FORMAT_VERSION, "name": spec.name, "description": spec.description, "model": str(model),
        "reference": reference, "context": context, "figures": FIGURES,
        "pick": {"condition": cond_text, "by": by, "picked": picked["id"] if picked else None} if conditions else None,
        "pareto": {f"{d}_vs_{g}": pareto_front(records, g, d) for d in DAMAGE_AXES for g in ("storage_ratio", "speedup")},
        "points": records,
    }
    write_json(out / "sweep.json", table)
    write_text_atomic(out / "sweep.html", sweep_html(table))
    if picked is not None:
        with atomic_dir(out / "picked", overwrite=True) as staging:
            shutil.copytree(out / "points" / picked["id"] / "bundle", staging, dirs_exist_ok=True)
            write_json(staging / "sweep-point.json", picked)
    elif (out / "picked").exists():
        shutil.rmtree(out / "picked")  # a previous pick that no longer holds
    if spec.publish:
        publish_page(out, spec.publish, records)
    return SweepResult(out, records, picked, reused, table)


def publish_page(out_dir: str | os.PathLike[str], dest: str | os.PathLike[str], records: list[dict[str, Any]]) -> Path:
    """Copy a finished sweep's page to ``dest`` (replaced atomically): ``sweep.html``, ``sweep.json``
    and the validation folder of every point the page links to, at the same relative paths (so the
    links work); no bundles, no teacher showers. A point's ``metrics.json`` is written compact and
    without its per-energy-bin tables (most of its size; the full file stays in ``out_dir``), with a
    ``published`` note saying so."""
    out, target = Path(out_dir), Path(dest)
    with atomic_dir(target, overwrite=True) as staging:
        for name in ("sweep.html", "sweep.json"):
            shutil.copy2(out / name, staging / name)
        for r in records:
            link = r.get("validation_report")
            if not isinstance(link, str) or r.get("status") != "done":
                continue
            src = (out / link).parent
            if src.is_dir() and src.resolve().is_relative_to(out.resolve()):
                shutil.copytree(src, staging / Path(link).parent, dirs_exist_ok=True)
                _trim_metrics(staging / Path(link).parent / "metrics.json")
    return target


def _trim_metrics(path: Path) -> None:
    if not path.is_file():
        return
    data = json.loads(path.read_text())
    for cand in (data.get("candidates") or {}).values():
        if isinstance(cand, dict):
            cand.pop("per_energy_bin", None)
    data["published"] = "copy for the sweep page: per-energy-bin tables left out (full metrics.json in the sweep's output folder)"
    write_text_atomic(path, json.dumps(data, separators=(",", ":"), default=str) + "\n")


def check_pick(spec: SweepSpec, pick: str | None, pick_by: str | None) -> None:
    """Raise on a bad pick condition or ``pick_by`` (before anything is written)."""
    cond_text = pick if pick is not None else spec.pick
    if cond_text:
        parse_condition(cond_text)
    by = pick_by or spec.pick_by
    if by not in ("storage", "speed"):
        msg = f"--pick-by {by!r}: allowed: storage, speed"
        raise ConfigError(msg)
