"""Gate specs, the noise floor and the default gate's sensitivity to known distortions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from simcompress.errors import ConfigError, GeometryError, ShowerFileError, UnknownNameError
from simcompress.showers.data import ShowerSet
from simcompress.showers.geometry import Geometry
from simcompress.validation import EnergyMismatchWarning, PreparedReference, TooFewEventsError, validate
from simcompress.validation.distortions import radial_stretch_matrix, scale_energy, widen_radially
from simcompress.validation.gate import FeatureRule, feature_threshold, load_gate_spec, make_model_gate, preset_names


@pytest.fixture(scope="module")
def prepared(reference, fast_spec) -> PreparedReference:
    return PreparedReference.build(reference, fast_spec, progress=False)


@pytest.fixture(scope="module")
def outcome(prepared, reference, independent):
    """One run over the four canonical candidates."""
    cands = {
        "identical": reference,
        "independent": independent,
        "scale_2pct": scale_energy(independent, 1.02),
        "wider_10pct": widen_radially(independent, 1.10),
    }
    return validate(prepared, cands, prepared.spec, progress=False)


def test_presets_load_and_unknown_keys_are_rejected(tmp_path) -> None:
    assert {"default", "strict", "loose"} <= set(preset_names())
    d = load_gate_spec("default")
    assert d.name == "default" and d.classifier.max_auc == 0.6
    # presets differ by their family-wise false-alarm rate (strict: more power, more false alarms)
    assert load_gate_spec("strict").false_alarm.rate > d.false_alarm.rate > load_gate_spec("loose").false_alarm.rate
    assert all(load_gate_spec(n).false_alarm.method == "max-statistic" for n in preset_names())
    assert all(f"{100 * load_gate_spec(n).false_alarm.rate:g} %" in load_gate_spec(n).description for n in preset_names())
    bad = tmp_path / "g.yaml"
    bad.write_text("features:\n  - {metric: w1, ratoi: 2}\n")
    with pytest.raises(ConfigError, match=r"features\[0\]\.ratoi.*did you mean 'ratio'"):
        load_gate_spec(bad)
    with pytest.raises(UnknownNameError, match="did you mean 'strict'"):
        load_gate_spec("strct")


def test_feature_threshold_formula() -> None:
    r = FeatureRule(metric="w1", ratio=3.0, k=5.0)
    assert feature_threshold(r, 1.0, 0.1) == 3.0
    assert feature_threshold(r, 1.0, 1.0) == 6.0
    assert feature_threshold(r, 0.0, 0.0, 0.01) == pytest.approx(0.05)  # degenerate floor: k events
    assert r.selects("E_layer_3") and not FeatureRule(metric="ks", features=("E_*",), exclude=("E_layer_3",)).selects("E_layer_3")


def test_identical_input_has_zero_distances_and_passes(outcome) -> None:
    c = outcome.candidates["identical"]
    assert all(m["w1"] == 0 and m["ks"] == 0 and m["sp"] == 0 for m in c.features.values())
    assert outcome.passed_for("identical")


def test_independent_sample_of_the_same_physics_passes(outcome) -> None:
    assert outcome.passed_for("independent"), [c for c in outcome.failed_checks() if c.candidate == "independent"]


def test_energy_scale_shift_is_flagged(outcome) -> None:
    assert not outcome.passed_for("scale_2pct")
    failed = {(c.metric, c.target) for c in outcome.failed_checks() if c.candidate == "scale_2pct"}
    assert ("w1", "E_ratio") in failed and ("separation_power", "E_ratio") in failed


def test_wider_shower_is_flagged(outcome) -> None:
    assert not outcome.passed_for("wider_10pct")
    failed = {c.target for c in outcome.failed_checks() if c.candidate == "wider_10pct"}
    assert {"width_r_1", "width_r_2"} <= failed
    assert not outcome.passed


def test_floor_is_rescaled_to_candidate_size(outcome, prepared) -> None:
    m = outcome.candidates["independent"].features["E_ratio"]
    raw = prepared.floor.stats["E_ratio"]
    n = prepared.n_events
    s = np.sqrt((1 / n + 1 / 2500) / (2 / prepared.floor.n_half))
    assert m["floor"]["w1"] == pytest.approx(raw["w1"] * s)
    assert m["floor"]["sp"] == pytest.approx(raw["sp"] * s * s)
    assert set(m) >= {"ks", "pvalue", "w1", "sp", "ks_err", "w1_err", "sp_err"}
    assert m["w1_err"] > 0


def test_result_json_has_every_number(outcome) -> None:
    d = json.loads(outcome.to_json())
    assert d["passed"] is False
    assert d["candidates"]["independent"]["passed"] is True
    assert len(d["reference"]["energy_bins"]) == 15
    assert "fpd" in d["candidates"]["wider_10pct"]["multivariate"]
    assert d["candidates"]["wider_10pct"]["classifier"]["high"]["auc"] > 0.6
    assert len(d["checks"]) == len(outcome.checks)


def test_multivariate_metrics_see_the_wider_shower(outcome) -> None:
    ind = outcome.candidates["independent"].multivariate
    wide = outcome.candidates["wider_10pct"].multivariate
    assert wide["fpd"]["value"] > 4 * max(ind["fpd"]["value"], ind["fpd"]["floor"])
    fpd_checks = {c.candidate: c.passed for c in outcome.checks if c.metric == "fpd"}
    assert fpd_checks["independent"] and fpd_checks["identical"] and not fpd_checks["wider_10pct"]
    assert wide["kpd"]["value"] > wide["kpd"]["floor"] + 3 * wide["kpd"]["err"]


def test_energy_mismatch_warns_and_per_bin_comparison(prepared, independent, fast_spec) -> None:
    high = independent[independent.incident_energy > 5e4]
    with pytest.warns(EnergyMismatchWarning, match="incident-energy distribution differs"):
        res = validate(prepared, {"high_only": high}, fast_spec.model_copy(update={"per_energy_bin": True}), progress=False)
    c = res.candidates["high_only"]
    assert c.incident_energy["mismatch"]
    # per-bin comparison of the same physics in the populated bins passes
    per_bin = [k for k in res.checks if k.energy_bin]
    assert per_bin and all(k.passed for k in per_bin)
    # with the E_inc mismatch only per-bin checks gate; the inclusive numbers are still reported
    assert len(per_bin) == len(res.checks) and res.passed
    assert c.features["E_tot"]["w1"] > 3 * c.features["E_tot"]["floor"]["w1"]
    assert "_skipped" in c.per_energy_bin["256 MeV"]
    strict = fast_spec.model_copy(update={"energy_mismatch": "error"})
    prep2 = PreparedReference(prepared.sample, strict, prepared.sorted_cols, prepared.floor)
    with pytest.raises(ConfigError, match="incident-energy"):
        validate(prep2, {"high_only": high}, strict, progress=False)


def test_bad_inputs(prepared, reference, fast_spec) -> None:
    pions = Geometry.from_name("ds1-pions")
    other = ShowerSet(np.full(300, 1000.0), np.ones((300, pions.n_voxels)), pions)
    with pytest.raises(GeometryError, match="does not match the reference geometry"):
        validate(prepared, {"pions": other}, progress=False)
    with pytest.raises(TooFewEventsError, match="50 candidate events"):
        validate(prepared, {"tiny": reference[:50]}, progress=False)
    nan = ShowerSet(reference.incident_energy[:300].copy(), reference.showers[:300].copy(), reference.geometry)
    nan.showers[7, 3] = np.nan
    with pytest.raises(ShowerFileError, match="NaN"):
        validate(prepared, {"nan": nan}, progress=False)
    with pytest.raises(ShowerFileError, match="no events"):
        validate(prepared, {"empty": reference[:0]}, progress=False)
    with pytest.raises(TooFewEventsError, match="reference events"):
        PreparedReference.build(reference[:100], fast_spec, progress=False)
    with pytest.raises(ConfigError, match="no candidates"):
        validate(prepared, {}, progress=False)


def test_distortions() -> None:
    m = radial_stretch_matrix([0, 1, 2, 4], 1.1)
    assert np.allclose(m.sum(axis=1), 1.0)
    assert np.allclose(radial_stretch_matrix([0, 1, 2, 4], 1.0), np.eye(3))
    # bin [0,1] -> [0,1.1]: 1/1.1 stays, 0.1/1.1 moves out
    assert m[0, 0] == pytest.approx(1 / 1.1) and m[0, 1] == pytest.approx(0.1 / 1.1)


def test_widen_conserves_energy_and_widens(reference) -> None:
    w = widen_radially(reference[:200], 1.1)
    assert np.allclose(w.showers.sum(axis=1), reference.showers[:200].sum(axis=1), rtol=1e-5)
    from simcompress.validation.features import compute_features

    a, b = compute_features(reference[:200]), compute_features(w)
    assert b["width_r_2"].mean() > 1.04 * a["width_r_2"].mean()
    s = scale_energy(reference[:10], 1.02)
    assert np.allclose(s.showers, reference.showers[:10] * 1.02)


class _Replay(torch.nn.Module):
    """A 'generator' that replays showers of a pool at the nearest incident energy, optionally scaled."""

    def __init__(self, pool: ShowerSet, scale: float = 1.0) -> None:
        super().__init__()
        self.geometry = pool.geometry
        self.pool = pool
        self.scale = scale
        self.w = torch.nn.Parameter(torch.zeros(1))

    def sample(self, e, generator=None, batch_size=10_000):
        pe = self.pool.incident_energy
        out = np.empty((len(e), self.geometry.n_voxels), np.float32)
        u = torch.rand(len(e), generator=generator).numpy()
        for i, ei in enumerate(e.numpy()):
            idx = np.flatnonzero(np.isclose(pe, ei))
            out[i] = self.pool.showers[idx[int(u[i] * len(idx))]] * self.scale
        return torch.from_numpy(out)


def test_model_gate(reference, independent, fast_spec) -> None:
    gate = make_model_gate(reference, fast_spec, n_events=2000, seed=3)
    good = gate(_Replay(independent))
    assert good.passed, good.summary
    assert good.metrics["n_events"] == 2000 and len(good.metrics["checks"]) > 50
    assert good.metrics == gate(_Replay(independent)).metrics  # reproducible
    bad = gate(_Replay(independent, scale=1.02))
    assert not bad.passed and "E_ratio" in bad.summary or "E_tot" in bad.summary
    with pytest.raises(ConfigError, match="min_events"):
        make_model_gate(reference, fast_spec, n_events=10)


def test_degenerate_candidate_fails_cleanly(prepared, reference) -> None:
    """An untrained generator emitting empty showers: every number finite or null in JSON, gate fails."""
    zeros = ShowerSet(reference.incident_energy[:600].copy(), np.zeros((600, reference.geometry.n_voxels)), reference.geometry)
    res = validate(prepared, {"zeros": zeros}, progress=False)
    assert not res.passed
    d = json.loads(res.to_json())
    assert d["candidates"]["zeros"]["features"]["E_ratio"]["w1"] == pytest.approx(float(np.mean(prepared.features["E_ratio"])), rel=1e-5)
    assert {c.metric for c in res.failed_checks()} >= {"w1", "separation_power", "fpd"}
