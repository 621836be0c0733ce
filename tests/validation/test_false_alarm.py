"""The gate's family-wise false-alarm rate: calibrated, stated, measured; and its power on ds1 and ds2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simcompress.errors import ConfigError
from simcompress.validation import PreparedReference, validate
from simcompress.validation import metrics as M
from simcompress.validation.calibration import (
    FamilyCalibration,
    _split_labels,
    _split_statistics,
    calibrate_family,
    clopper_pearson,
    family_calibration,
)
from simcompress.validation.distortions import scale_energy, widen_radially
from simcompress.validation.false_alarm import half_split_pairs, measure_false_alarm, simulated_pairs
from simcompress.validation.gate import FeatureRule, GateSpec, evaluate_gate, load_gate_spec

_OFF = {"classifier": {"enabled": False}, "fpd": {"enabled": False}, "kpd": {"enabled": False}}
#: the bootstrap errors do not enter the calibrated thresholds: keep them cheap
_CHEAP = {"bootstrap": {"n_boot": 2, "n_boot_hist": 2}}


def _features_only(**kw) -> GateSpec:
    """The default gate's feature checks (W1 and separation power of every feature), no FPD/KPD/classifier."""
    return GateSpec(name="features-only", **_OFF, **_CHEAP, **kw)


def _per_check(spec: GateSpec) -> GateSpec:
    """The uncalibrated rule of earlier versions (3x floor or floor + 5 sigma per check)."""
    return spec.model_copy(update={"false_alarm": spec.false_alarm.model_copy(update={"method": "per-check"})})


def _mode(fn):
    """Run ``fn`` with the reference cache off where ``validate`` has one (no files in the user's cache)."""
    import inspect

    return {"cache": False} if "cache" in inspect.signature(fn).parameters else {}


def test_split_statistics_equal_the_metrics_functions() -> None:
    """The vectorised half-split KS / W1 / separation power equal metrics.ks_w1 and histogram_separation_power."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=300), np.zeros(60), np.round(rng.exponential(size=140), 1)])  # ties
    h = 200
    labels = _split_labels(x.size, h, 6, rng)
    edges = M.feature_binning(np.sort(x), n_bins=20)
    got = _split_statistics(x, labels, h, {"w1", "ks", "separation_power"}, edges)
    for s in range(6):
        a, b = x[labels[s] == 1], x[labels[s] == -1]
        ref = M.ks_w1(a, b)
        assert got["w1"][s] == pytest.approx(ref.w1, rel=1e-12, abs=1e-15)
        assert got["ks"][s] == pytest.approx(ref.ks, rel=1e-12)
        assert got["separation_power"][s] == pytest.approx(M.histogram_separation_power(a, b, edges), rel=1e-10)


@pytest.fixture(scope="module")
def prep_ds1(reference):
    return PreparedReference.build(reference, _features_only(per_energy_bin=True), progress=False, **_mode(PreparedReference.build))


def test_critical_value_grows_with_the_number_of_checks_and_falls_with_the_rate(prep_ds1) -> None:
    few = calibrate_family(prep_ds1, _features_only(features=(FeatureRule(metric="w1", features=("E_ratio", "E_tot")),)))
    incl = calibrate_family(prep_ds1, _features_only())
    binned = calibrate_family(prep_ds1, _features_only(per_energy_bin=True))
    assert few.n_checks == 2 and incl.n_checks == 2 * len(prep_ds1.features.names)
    assert binned.n_checks > 10 * incl.n_checks  # the per-energy-bin checks are part of the family
    assert few.critical < incl.critical < binned.critical
    loose = calibrate_family(prep_ds1, _features_only(false_alarm={"rate": 0.001}))
    strict = calibrate_family(prep_ds1, _features_only(false_alarm={"rate": 0.2}))
    assert strict.critical < incl.critical < loose.critical
    # the held-out half-splits are the calibration's own out-of-sample check
    assert strict.n_holdout == 50 and 2 <= strict.holdout_failed <= 22


def test_calibration_round_trip_and_rescaling(prep_ds1) -> None:
    cal = family_calibration(prep_ds1, _features_only())
    assert family_calibration(prep_ds1, _features_only()) is cal  # computed once per reference and spec
    back = FamilyCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.threshold("w1", "E_ratio", "", 1000) == cal.threshold("w1", "E_ratio", "", 1000)
    blk = cal.blocks[""]
    mean, sd = blk["checks"]["w1"]["E_ratio"]
    thr, _, _ = cal.threshold("w1", "E_ratio", "", blk["h"] * blk["n_ref"] // (2 * blk["n_ref"] - blk["h"]))
    # candidate sizes whose sqrt(1/n_ref + 1/n) equals the half-split's sqrt(2/h): no rescaling
    assert thr == pytest.approx(mean + cal.critical * sd, rel=2e-3)
    t4, _, _ = cal.threshold("separation_power", "E_ratio", "", 4 * blk["n_ref"])
    t1, _, _ = cal.threshold("separation_power", "E_ratio", "", blk["n_ref"])
    assert t4 < t1  # more candidate events, smaller separation-power noise
    assert cal.threshold("w1", "no_such_feature", "", 100) is None
    with pytest.raises(ConfigError, match="bad stored calibration"):
        FamilyCalibration.from_dict({"rate": 0.01})


def test_bad_false_alarm_settings(prep_ds1) -> None:
    with pytest.raises(ConfigError, match=r"false_alarm\.rate"):
        load_gate_spec(_write_yaml("false_alarm: {rate: 0.7}\n"))
    with pytest.raises(ConfigError, match=r"false_alarm.*need at least 10 splits"):
        load_gate_spec(_write_yaml("false_alarm: {n_splits: 20, n_holdout: 15}\n"))
    with pytest.raises(ConfigError, match=r"false_alarm\.methd.*did you mean 'method'"):
        load_gate_spec(_write_yaml("false_alarm: {methd: per-check}\n"))
    with pytest.raises(ConfigError, match="pass reference="):
        evaluate_gate(_features_only(), {})
    with pytest.raises(ConfigError, match="no feature check"):
        calibrate_family(prep_ds1, _features_only(features=(FeatureRule(metric="w1", features=("nothing*",)),)))


def _write_yaml(text: str):
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    p = d / "gate.yaml"
    p.write_text(text)
    return p


def test_the_rate_is_stated_in_metrics_json_report_and_model_gate(reference, independent, fast_spec, tmp_path) -> None:
    res = validate(reference, {"independent": independent}, fast_spec, progress=False, html=False, **_mode(validate))
    d = json.loads(res.to_json())
    fa = d["false_alarm"]
    assert fa["method"] == "max-statistic" and fa["rate"] == 0.01 and fa["n_checks"] == 70
    assert fa["sentence"].startswith("Family-wise false-alarm rate 1.0 % per candidate by construction (70 feature checks")
    assert "held-out same-physics half-splits" in fa["sentence"]
    assert set(fa["rate_other"]) == {"fpd", "kpd", "classifier:high"} and sum(fa["rate_other"].values()) <= 0.001
    from simcompress.validation.checks import _n_candidate

    c = res.candidates["independent"]
    assert _n_candidate(c.features["E_ratio"]) == len(independent)  # the candidate size the thresholds rescale to
    b0 = res.reference.bins[0]
    assert _n_candidate(c.per_energy_bin[b0.label]["E_ratio"]) == int(b0.mask(independent.incident_energy).sum())
    per = validate(res.reference, {"independent": independent}, _per_check(fast_spec), progress=False, html=False)
    assert "not controlled" in json.loads(per.to_json())["false_alarm"]["sentence"]
    from test_gate import _Replay  # same directory (rootdir-relative import mode)

    from simcompress.validation.gate import make_model_gate

    gate = make_model_gate(reference, fast_spec, n_events=1000, seed=3)
    g = gate(_Replay(independent))
    assert "family-wise false-alarm rate 1 %" in g.summary and g.metrics["false_alarm"]["rate"] == 0.01


def test_same_physics_pairs_pass_at_the_stated_rate() -> None:
    """Small version of bench/bench_false_alarm.py: independent GFlash pairs pass; the per-check rule does not."""
    spec = _features_only()
    ds1 = measure_false_alarm(simulated_pairs("ds1-photons", 2500, 6, seed=11), spec, compare={"per-check": _per_check(spec)})
    assert ds1.n_failed == 0, ds1.failed_checks
    ds2 = measure_false_alarm(
        simulated_pairs("ds2", 1500, 3, seed=12, energies="log-uniform:1e3,1e6"), spec, compare={"per-check": _per_check(spec)}
    )
    assert ds2.n_failed == 0, ds2.failed_checks
    assert min(ds2.n_checks) > 700
    # the uncalibrated per-check rule fails identical physics on ds2's ~800 checks
    assert sum(1 for k in ds2.compared["per-check"] if k) >= 1, ds2.compared
    assert ds2.sentence().startswith("false-alarm rate 1.0 % by construction; observed 0 of 3 same-physics pairs")


def test_observed_rate_agrees_with_a_high_stated_rate() -> None:
    """At a stated 20 % the observed rate of fresh same-physics pairs is measurable: it must be consistent."""
    spec = _features_only(false_alarm={"rate": 0.2})
    m = measure_false_alarm(simulated_pairs("ds1-photons", 1000, 30, seed=13), spec)
    lo, hi = m.ci95
    assert lo <= 0.2 <= hi, (m.n_failed, m.n_pairs)
    assert 0 < m.n_failed < m.n_pairs


def test_half_split_pairs_for_users_without_a_simulator(reference) -> None:
    m = measure_false_alarm(half_split_pairs(reference, 2, seed=1), _features_only())
    assert m.n_pairs == 2 and m.n_failed == 0 and m.n_checks == [70, 70]


def test_clopper_pearson() -> None:
    lo, hi = clopper_pearson(0, 40)
    assert lo == 0.0 and hi == pytest.approx(0.0881, abs=1e-4)
    lo, hi = clopper_pearson(1, 3)
    assert lo == pytest.approx(0.0084, abs=1e-4) and hi == pytest.approx(0.9057, abs=1e-4)


@pytest.fixture(scope="module")
def ds2_outcome():
    from simcompress.showers.reference import simulate

    a = simulate("ds2", 2000, energies="log-uniform:1e3,1e6", seed=21, progress=False)
    b = simulate("ds2", 2000, energies="log-uniform:1e3,1e6", seed=22, progress=False)
    cands = {"independent": b, "scale_2pct": scale_energy(b, 1.02), "wider_10pct": widen_radially(b, 1.10)}
    return validate(a, cands, _features_only(), progress=False, html=False, **_mode(validate))


def test_ds2_distortions_are_caught_and_same_physics_passes(ds2_outcome) -> None:
    res = ds2_outcome
    n = {c: sum(1 for k in res.checks if k.candidate == c and not k.passed) for c in res.candidates}
    assert n["independent"] == 0, [k for k in res.failed_checks() if k.candidate == "independent"][:5]
    assert n["scale_2pct"] >= 1 and n["wider_10pct"] >= 20, n
    failed = {(k.candidate, k.target) for k in res.failed_checks()}
    assert ("scale_2pct", "E_ratio") in failed
    assert any(c == "wider_10pct" and t.startswith(("width_r_", "EC_r_")) for c, t in failed)
