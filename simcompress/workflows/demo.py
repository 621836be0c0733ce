"""The plan and the summary of ``simcompress demo``: the whole chain on the embedded default.

Simulate a reference sample, take the shipped ds1-photons generator, compress it with the
shipped combined recipe and with the firmware recipe, generate showers with teacher and
students, validate all of them against the reference in one report, build the firmware IP
folder with its bit-exactness check, and summarise.

Each stage is one of the ordinary commands with the options a user would type; :func:`run_demo`
hands each to ``run_stage(stage, argv) -> (exit code, seconds)`` (the CLI runs it in-process and
prints it), so the demo exercises exactly what users run. A re-run reuses a reference sample
whose provenance matches and replaces everything else. :func:`demo_summary` reads what the
stages wrote; :meth:`DemoSummary.write` writes ``summary.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import write_text_atomic

__all__ = ["DemoRun", "DemoSummary", "config_path", "demo_summary", "reference_matches", "run_demo"]

RECIPES = "configs/compress"
GEOMETRY = "ds1-photons"

#: ``run_stage(stage, argv) -> (exit code, seconds)``
RunStage = Callable[[str, list[str]], tuple[int, float]]


def config_path(rel: str) -> Path:
    """A shipped config, from the repository checkout or the installed package."""
    from importlib import resources

    here = Path.cwd() / rel
    if here.is_file():
        return here
    return Path(str(resources.files("simcompress") / "_configs" / str(Path(rel).relative_to("configs"))))


def reference_matches(path: Path, events: int, seed: int, geometry: str) -> bool:
    """Whether ``path`` is an intact reference sample of ``events`` showers of ``geometry`` simulated with ``seed``."""
    if not path.is_file():
        return False
    from ..errors import ShowerFileError
    from ..showers.io import open_showers

    try:
        reader = open_showers(path)
    except ShowerFileError:
        return False
    meta = reader.metadata
    return (
        reader.n_events == events
        and reader.geometry.name == geometry
        and str(meta.get("seed")) == str(seed)
        and reader.verify()
    )


@dataclass
class DemoRun:
    """What the stages produced (paths) and how each went."""

    out: Path
    samples: dict[str, Path] = field(default_factory=dict)
    students: dict[str, Path] = field(default_factory=dict)
    compress_rc: dict[str, int] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    @property
    def firmware_dir(self) -> Path:
        return self.out / "firmware"


def run_demo(
    out: str | os.PathLike[str],
    run_stage: RunStage,
    *,
    model: str = "ds1-photons-gan",
    reference_events: int = 20_000,
    events: int = 10_000,
    combined_recipe: str = f"{RECIPES}/combined.yaml",
    firmware_recipe: str = f"{RECIPES}/fixed-point-ptq.yaml",
    firmware_config: str = "configs/firmware/vu9p-budget.yaml",
    firmware_samples: int = 2000,
    seed: int = 1,
    also: tuple[str, ...] = ("ds1-photons-flow",),
    say: Callable[[str], Any] | None = None,
    rule: Callable[[str], Any] | None = None,
) -> DemoRun:
    """Run the demo's stages through ``run_stage``; ``say`` gets the lines about stages not run, ``rule`` their
    titles (rich markup). ``also``: other shipped generators validated beside the teacher and its students
    (uncompressed; the spline flow is the one that passes most default-gate checks)."""
    tell = say or (lambda _m: None)
    title = rule or tell
    run = DemoRun(Path(out))
    run.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def stage(name: str, argv: list[str]) -> int:
        rc, dt = run_stage(name, argv)
        run.log.append({"stage": name, "command": "simcompress " + " ".join(argv), "exit_code": rc, "seconds": round(dt, 1)})
        return rc

    # 1. reference sample (reused when its provenance matches)
    ref = run.out / "reference.root"
    if reference_matches(ref, reference_events, seed, GEOMETRY):
        title("[bold]1/6 reference showers")
        tell(f"reusing {ref} ({reference_events} showers, seed {seed}, content hash verified)")
        run.log.append({"stage": "reference", "command": "(reused)", "exit_code": 0, "seconds": 0.0})
    else:
        stage("1/6 reference showers (GFlash)",
              ["simulate", "--geometry", GEOMETRY, "--events", str(reference_events), "--seed", str(seed),
               "--energies", "ds1", "--out", str(ref)])

    # 2-3. compression: combined recipe and firmware recipe
    for heading, name, recipe in (
        ("2/6 compress: combined recipe", "combined", combined_recipe),
        ("3/6 compress: firmware recipe", "firmware", firmware_recipe),
    ):
        dest = run.out / f"compressed-{name}"
        rc = stage(heading, ["compress", "--model", model, "--recipe", str(config_path(recipe)), "--reference", str(ref),
                           "--out", str(dest), "--n-events", str(min(events, 5000)), "--seed", "0"])
        run.compress_rc[name] = rc
        if rc == 0:
            run.students[name] = dest

    # 4. generate showers with teacher and students (same energies as the reference: ds1 spectrum)
    others = [(Path(str(m)).name.removeprefix(f"{GEOMETRY}-"), m) for m in also if m != model]
    for name, m in [("teacher", model), *run.students.items(), *others]:
        dest = run.out / "generated" / f"{name}.root"
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage(f"4/6 generate: {name}", ["generate", "--model", str(m), "--events", str(events), "--energies", "ds1",
                                        "--seed", str(seed + 6), "--out", str(dest)])
        run.samples[name] = dest

    # 5. one validation report with all candidates side by side
    argv = ["validate", "--reference", str(ref), "--out", str(run.report_dir)]
    for name, p in run.samples.items():
        argv += ["--candidate", f"{name}={p}"]
    stage("5/6 validate teacher and students", argv)

    # 6. firmware IP of the fixed-point student
    if "firmware" in run.students:
        stage("6/6 firmware (hls4ml IP, bit-exactness)",
              ["firmware", "--model", str(run.students["firmware"]), "--config", str(config_path(firmware_config)),
               "--out", str(run.firmware_dir), "--samples", str(firmware_samples), "--reference", str(ref), "--overwrite"])
    else:
        tell("[yellow]6/6 firmware skipped: the firmware recipe did not produce a bundle (see its report)[/yellow]")
    run.seconds = time.perf_counter() - t_start
    return run


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def count_label(n: Any) -> str:
    """``12000 -> '12k'``, ``250 -> '250'``, anything else ``'-'``."""
    if not isinstance(n, (int, float)):
        return "-"
    return f"{n / 1e3:.0f}k" if n >= 10_000 else str(int(n))


def fmt(x: Any, spec: str = ".3g") -> str:
    """A number formatted with ``spec``; ``None`` as ``'-'``."""
    if x is None:
        return "-"
    if isinstance(x, (int, float)):
        return format(x, spec)
    return str(x)


@dataclass
class DemoSummary:
    """The summary table's rows (one per model, then the recipes the gate rejected), the firmware
    outcome, and ``summary.json``'s content."""

    rows: list[tuple[str, ...]]
    firmware: dict[str, Any] | None
    data: dict[str, Any]

    def write(self, out: str | os.PathLike[str]) -> Path:
        path = Path(out) / "summary.json"
        write_text_atomic(path, json.dumps(self.data, indent=2, default=str))
        return path


def demo_summary(
    out: Path,
    samples: dict[str, Path],
    students: dict[str, Path],
    compress_rc: dict[str, int],
    report_dir: Path,
    fw_dir: Path,
    log: list[dict[str, Any]],
    seconds: float,
) -> DemoSummary:
    """Read the files the stages wrote (``report/metrics.json``, each ``compressed-*/report.json``, ``firmware/firmware.json``)."""
    metrics = _load_json(report_dir / "metrics.json") or {}
    cands = metrics.get("candidates", {})
    checks = metrics.get("checks", [])
    rows: list[tuple[str, ...]] = []
    models: dict[str, Any] = {}
    teacher_params = None
    for name in students:
        rep = _load_json(out / f"compressed-{name}" / "report.json")
        if rep:
            teacher_params = rep.get("original", {}).get("params")
            break
    for name in samples:
        rep = _load_json(out / f"compressed-{name}" / "report.json") if name != "teacher" else None
        cm = cands.get(name, {}) if isinstance(cands, dict) else {}
        mine = [c for c in checks if c.get("candidate") == name]
        n_pass = sum(1 for c in mine if c.get("passed"))
        fpd = (cm.get("multivariate") or {}).get("fpd") or {}
        auc = max((v.get("auc", 0.0) for v in (cm.get("classifier") or {}).values() if isinstance(v, dict)), default=None)
        if rep:
            params = f"{count_label(rep['original'].get('params'))}→{count_label(rep['compressed'].get('params'))}"
            storage = f"{rep['ratios'].get('storage', 0):.2f}x"
            speed = f"x{rep['ratios'].get('throughput', 0):.2f}"
            steps = rep.get("pipeline", {}).get("steps", [])
            # kept steps by name; a rolled-back step (it failed the compression gate) as -name
            verdict = " ".join(("-" if st.get("rolled_back") else "") + str(st.get("method", "?")) for st in steps) or "-"
        elif name == "teacher":
            params, storage, speed, verdict = count_label(teacher_params), "1x", "x1", "(teacher)"
        else:  # another shipped generator, shown beside the teacher, not compressed
            params, storage, speed, verdict = "-", "-", "-", "(shipped, uncompressed)"
        fpd_s = f"{1e3 * fpd['value']:.3g} ({1e3 * fpd['floor']:.2g})" if fpd else "-"
        models[name] = {"checks_passed": n_pass, "checks": len(mine), "fpd": fpd or None, "auc": auc, "steps": verdict}
        rows.append((name, params, storage, speed, verdict, f"{n_pass}/{len(mine)}", fpd_s, fmt(auc)))
    for name, rc in compress_rc.items():
        if rc != 0:
            rows.append((name, "-", "-", "-", "[red]gate failed: no bundle[/red]", "-", "-", "-"))
    fw = _load_json(fw_dir / "firmware.json") if students.get("firmware") else None
    data = {
        "seconds": round(seconds, 1),
        "stages": log,
        "models": models,
        "firmware": {"bit_exactness": fw.get("bit_exactness"), "estimate": fw.get("estimate")} if fw else None,
        "outputs": {
            "reference": str(out / "reference.root"),
            "generated": {k: str(v) for k, v in samples.items()},
            "compressed": {k: str(v) for k, v in students.items()},
            "validation_report": str(report_dir / "report.html"),
            "firmware": str(fw_dir) if fw else None,
        },
    }
    return DemoSummary(rows, fw, data)
