"""The generic sweep runner (simcompress.compress.sweep.run_points / write_sweep) with an injected evaluator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simcompress.compress.sweep import expand, parse_grid, run_points, sweep_from_grid, write_json, write_sweep


def _evaluate(task: dict[str, Any]) -> dict[str, Any]:
    """A stand-in evaluator: the 'storage ratio' is 1 / (1 - sparsity), damage grows with it."""
    s = float(task["values"]["sparsity"])
    rec = {"id": task["id"], "key": task["key"], "status": "done", "label": task["label"], "method": task["method"],
           "values": task["values"], "storage_ratio": 1 / (1 - s), "fpd": s**2, "validation_report": "x"}
    bundle = Path(task["dir"]) / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text("{}")
    write_json(Path(task["dir"]) / "point.json", rec)
    return rec


def test_points_evaluated_once_then_reused(tmp_path: Path) -> None:
    spec = sweep_from_grid("magnitude_prune", parse_grid(["sparsity=0.5,0.75,0.9"]))
    points = expand(spec)
    finished: list[tuple[str, bool]] = []

    def make_task(p: Any, key: str) -> dict[str, Any]:
        return {"id": p.id, "key": key, "label": p.label, "method": p.method, "values": p.values, "dir": str(tmp_path / "points" / p.id)}

    def run() -> tuple[list[dict[str, Any]], int]:
        return run_points(points, tmp_path, "ctx", make_task=make_task, evaluate=_evaluate,
                          finish=lambda rec, reused: finished.append((rec["id"], reused)), stale=lambda rec: rec["fpd"] > 0.7)
    records, reused = run()
    assert reused == 0 and [r["values"]["sparsity"] for r in records] == [0.5, 0.75, 0.9]
    assert [f[1] for f in finished] == [False, False, False]
    finished.clear()
    records, reused = run()  # everything reused; only the stale point is finished again
    assert reused == 3 and finished == [(points[2].id, True)]
    res = write_sweep(tmp_path, spec, records, model="m", reference=None, context={}, pick="fpd<=0.6")
    assert res.picked is not None and res.picked["values"]["sparsity"] == 0.75  # largest storage ratio within the pick
    assert (tmp_path / "picked" / "config.json").is_file() and (tmp_path / "sweep.html").is_file()
    table = json.loads((tmp_path / "sweep.json").read_text())
    assert table["pareto"]["fpd_vs_storage_ratio"] == [p.id for p in points]


def test_before_steps_make_a_combination_point(tmp_path: Path) -> None:
    import pytest

    from simcompress.compress.sweep import SweepSpec, load_sweep, point_key
    from simcompress.errors import ConfigError

    def spec_of(before: list[dict[str, Any]]) -> SweepSpec:
        f = tmp_path / "s.yaml"
        import yaml

        f.write_text(yaml.safe_dump({"sweeps": [{"method": "qat", "grid": {"bits": [8, 4]}, "before": before}]}))
        return load_sweep(f)

    plain = expand(spec_of([]))
    combo = expand(spec_of([{"method": "structured_prune", "amount": 0.5, "finetune": {"steps": 10, "lr": 1e-3}}]))
    assert [p.label for p in combo] == ["structured_prune + qat bits=8", "structured_prune + qat bits=4"]
    assert combo[0].before[0]["method"] == "structured_prune" and combo[0].before[0]["amount"] == 0.5
    assert combo[0].before[0]["finetune"] == {"steps": 10, "lr": 1e-3}
    assert plain[0].before == [] and plain[0].step == combo[0].step
    assert plain[0].id.rsplit("-", 1)[1] != combo[0].id.rsplit("-", 1)[1]  # the fixed steps are part of the point's identity
    assert point_key("c", plain[0]) != point_key("c", combo[0])
    with pytest.raises(ConfigError, match=r"sweeps\[0\]\.before\[0\].*structured_prun"):
        spec_of([{"method": "structured_prun", "amount": 0.5}])


def test_publish_copies_the_page_and_linked_reports_but_no_bundles(tmp_path: Path) -> None:
    from simcompress.compress.sweep import SweepSpec

    out, dest = tmp_path / "run", tmp_path / "docs" / "pareto" / "m"
    spec = sweep_from_grid("magnitude_prune", parse_grid(["sparsity=0.5,0.9"]))
    points = expand(spec)
    records = []
    for p in points:
        vdir = out / "points" / p.id / "validation"
        vdir.mkdir(parents=True)
        (vdir / "metrics.json").write_text(json.dumps({"candidates": {"student": {"features": {"a": 1}, "per_energy_bin": [1] * 50}}}, indent=2))
        (out / "points" / p.id / "bundle").mkdir()
        (out / "points" / p.id / "bundle" / "weights.safetensors").write_bytes(b"0" * 100)
        records.append({"id": p.id, "status": "done", "label": p.label, "method": p.method, "values": p.values,
                        "storage_ratio": 2.0, "fpd": 0.1,
                        "validation_report": f"points/{p.id}/validation/metrics.json"})
    spec = SweepSpec.model_validate({**spec.model_dump(), "publish": str(dest)})
    write_sweep(out, spec, records, model="m", reference=None, context={})
    files = sorted(str(f.relative_to(dest)) for f in dest.rglob("*") if f.is_file())
    assert files == sorted(["sweep.html", "sweep.json", *(f"points/{p.id}/validation/metrics.json" for p in points)])
    assert (dest / "sweep.html").read_text() == (out / "sweep.html").read_text()
    pub = json.loads((dest / "points" / points[0].id / "validation" / "metrics.json").read_text())
    assert pub["candidates"]["student"] == {"features": {"a": 1}} and "per-energy-bin" in pub["published"]
    assert "per_energy_bin" in (out / "points" / points[0].id / "validation" / "metrics.json").read_text()  # the run keeps it
