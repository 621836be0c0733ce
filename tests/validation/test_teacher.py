"""Compression damage measured directly: candidates against their teacher, and the compression gate's teacher rule."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest
from test_gate import _Replay  # same directory (rootdir-relative import mode)

from simcompress.errors import ConfigError
from simcompress.showers.data import ShowerSet
from simcompress.validation.checks import TEACHER_RULE, GateCheck, teacher_rule
from simcompress.validation.distortions import scale_energy
from simcompress.validation.gate import load_gate_spec, make_model_gate
from simcompress.validation.teacher import compare_to_teacher


@pytest.fixture(scope="module")
def third(geometry):
    from simcompress.showers.reference import simulate

    return simulate(geometry, 2500, seed=2, progress=False)


@pytest.fixture(scope="module")
def teacher_spec(fast_spec):
    return fast_spec.model_copy(update={"baseline": fast_spec.baseline.model_copy(update={"enabled": True, "rule": "teacher"})})


def _c(target: str, value: float, threshold: float = 1.0, metric: str = "w1") -> GateCheck:
    return GateCheck("m", metric, target, value, threshold, value <= threshold)


def test_teacher_rule_counts_damage_and_lost_reference_checks() -> None:
    teacher_ref = [_c("a", 0.9), _c("b", 2.0)]
    assert teacher_rule([_c("x", 0.1)], [_c("a", 0.95), _c("b", 3.0)], teacher_ref)[0]  # b: the teacher fails it too
    ok, failed, lost = teacher_rule([_c("x", 0.1)], [_c("a", 1.2), _c("b", 2.0)], teacher_ref)
    assert not ok and not failed and [c.target for c in lost] == ["a"]
    # a: the damage check of the same feature allows the model to be 0.2 further from the reference than its teacher
    assert teacher_rule([_c("a", 0.1, 0.2)], [_c("a", 1.05)], teacher_ref)[0]
    assert not teacher_rule([_c("a", 0.1, 0.2)], [_c("a", 1.15)], teacher_ref)[0]
    assert teacher_rule([_c("c", 0.55, 0.6, "auc")], [_c("c", 0.62, 0.6, "auc")], [_c("c", 0.58, 0.6, "auc")])[0]
    ok, failed, lost = teacher_rule([_c("x", 2.0)], [], None)  # no reference: only the damage counts
    assert not ok and [c.target for c in failed] == ["x"] and not lost
    assert load_gate_spec("compression").baseline.rule == "teacher"
    assert "teacher passes" in TEACHER_RULE


def test_compare_to_teacher_both_comparisons(reference, independent, third, fast_spec, tmp_path) -> None:
    cands = {"same": independent, "scaled": scale_energy(independent, 1.05)}
    res = compare_to_teacher(third, cands, fast_spec, reference=reference, cache=False)
    assert res.passed_for("same"), res.verdict("same")
    bad = res.verdict("scaled")
    assert not bad["passed"] and not bad["damage"]["passed"]
    assert set(res.vs_reference.candidates) == {"teacher", "same", "scaled"}
    row = res.features("same")["E_ratio"]
    assert row["teacher_floor"]["w1"] > 0 and {"vs_teacher", "student_vs_reference", "teacher_vs_reference"} <= set(row)
    out = res.write(tmp_path / "cmp", html=True)
    d = json.loads((out / "comparison.json").read_text())
    assert d["rule"] == TEACHER_RULE and d["candidates"]["same"]["passed"] and not d["candidates"]["scaled"]["passed"]
    assert (out / "vs_teacher" / "metrics.json").is_file() and (out / "vs_reference" / "metrics.json").is_file()
    assert html.escape(TEACHER_RULE) in (out / "report.html").read_text()


def test_teacher_and_candidate_at_different_energies_is_an_error(reference, independent, fast_spec) -> None:
    n = 600
    high = ShowerSet(np.full(n, 65536.0, np.float32), independent.showers[:n], independent.geometry, {"source": "s.root"})
    with pytest.raises(ConfigError, match=r"teacher .* and candidate 's' \(s\.root\).*different incident energies"):
        compare_to_teacher(reference, {"s": high}, fast_spec, cache=False)


def test_model_gate_teacher_rule(reference, independent, teacher_spec) -> None:
    off = _Replay(independent, scale=1.04)  # a teacher that is itself 4 % off: fails the reference gate
    gate = make_model_gate(reference, teacher_spec, n_events=2000, seed=3, baseline=off)
    assert not gate.baseline_result.passed and gate.teacher is not None
    same = gate(_Replay(independent, scale=1.04))
    assert same.passed, same.summary
    assert same.metrics["rule"] == "teacher" and same.metrics["rule_sentence"] == TEACHER_RULE
    assert same.metrics["damage"]["checks"] and same.metrics["damage"]["passed"]
    worse = gate(_Replay(independent, scale=1.08))  # damage of 4 % against the teacher
    assert not worse.passed and "damage vs teacher" in worse.summary
    assert not worse.metrics["damage"]["passed"]
