"""bench/bench_generators.py reads a staged bundle's training cost from its card."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_generators", ROOT / "bench" / "bench_generators.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_staged_cost_is_summed_and_a_single_stage_is_not() -> None:
    b = _bench()
    card = {"training": {"steps": 0, "history": [], "cost": {
        "stage_1": {"steps": 5500, "wall_seconds": 3114.5}, "stage_2": {"steps": 0, "wall_seconds": 403.0}}}}
    cost = b._training_cost(card)
    assert cost["steps"] == 0 and cost["wall_s"] is None  # the last stage alone: a calibration
    assert cost["stages"] == {"stage_1": {"steps": 5500, "wall_s": 3114.5}, "stage_2": {"steps": 0, "wall_s": 403.0}}
    assert cost["total_steps"] == 5500 and cost["total_wall_s"] == 3517.5
    card["training"]["cost"]["stage_2"] = {"steps": 10}  # a stage without a wall time: no total
    assert "total_wall_s" not in b._training_cost(card)
    plain = b._training_cost({"training": {"steps": 3, "history": [{"seconds": 7.0}]}})
    assert plain["wall_s"] == 7.0 and "stages" not in plain
