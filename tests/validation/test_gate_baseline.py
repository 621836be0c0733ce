"""The baseline margin rule (``baseline.rule: margin``, the compression gate of earlier versions)."""

from __future__ import annotations

import pytest
from test_gate import _Replay  # same directory (rootdir-relative import mode)

from simcompress.validation.gate import load_gate_spec, make_model_gate


@pytest.fixture(scope="module")
def spec(fast_spec):
    return fast_spec.model_copy(update={"baseline": fast_spec.baseline.model_copy(update={"enabled": True, "rule": "margin"})})


def test_compression_preset_enables_the_baseline_rule() -> None:
    s = load_gate_spec("compression")
    assert s.baseline.enabled and s.baseline.rule == "teacher"
    assert not load_gate_spec("default").baseline.enabled


def test_baseline_rule_passes_a_model_as_good_as_its_baseline(reference, independent, spec, fast_spec) -> None:
    off = _Replay(independent, scale=1.04)  # a baseline that is itself 4 % off: fails the absolute gate
    absolute = make_model_gate(reference, fast_spec, n_events=2000, seed=3)
    assert not absolute(off).passed

    gate = make_model_gate(reference, spec, n_events=2000, seed=3, baseline=off)
    assert not gate.baseline_result.passed  # the baseline's own absolute verdict is kept for the report
    same = gate(_Replay(independent, scale=1.04))
    assert same.passed, same.summary
    assert same.metrics["relative_to_baseline"] is True
    worse = gate(_Replay(independent, scale=1.12))  # three times further off than the baseline
    assert not worse.passed
    assert "E_ratio" in worse.summary or "E_tot" in worse.summary


def test_baseline_rule_is_inert_when_disabled(reference, independent, fast_spec) -> None:
    off = _Replay(independent, scale=1.04)
    gate = make_model_gate(reference, fast_spec, n_events=2000, seed=3, baseline=off)
    assert not gate(_Replay(independent, scale=1.04)).passed
