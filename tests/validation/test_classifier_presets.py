"""Classifier presets: CaloChallenge's DNN (calochallenge) and the cheap gate preset, their selection and report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from simcompress.errors import ConfigError, UnknownNameError
from simcompress.validation.classifier import (
    classifier_test,
    fit_classifier,
    isotonic_calibrate,
    run_classifier,
    settings_html,
    settings_lines,
)
from simcompress.validation.spec import (
    CLASSIFIER_PRESETS,
    ClassifierRule,
    GateSpec,
    load_gate_spec,
    with_classifier_preset,
)

# the calochallenge preset at test size: a narrow network, and batches small enough for a few
# hundred optimiser steps on a few thousand events (the recipe's 1000 would give a dozen)
TINY = {"n_hidden": 32, "epochs": 6, "batch_size": 64, "lr": 1e-3, "threads": 1}


def test_calochallenge_preset_is_evaluate_py_dnn() -> None:
    r = ClassifierRule(preset="calochallenge")
    assert (r.n_hidden, r.n_layers, r.epochs, r.batch_size, r.lr) == (2048, 3, 50, 1000, 2e-4)
    assert r.calibrate and not r.standardize and r.dropout == 0.0 and r.threads == 0
    g = ClassifierRule()
    assert (g.preset, g.n_hidden, g.n_layers, g.epochs, g.threads, g.standardize) == ("gate", 256, 2, 20, 1, True)
    # a setting next to the preset overrides only itself
    o = ClassifierRule(preset="calochallenge", n_hidden=16)
    assert (o.n_hidden, o.epochs, o.lr) == (16, 50, 2e-4)


def test_unknown_preset_is_a_one_line_error_naming_the_allowed(tmp_path) -> None:
    with pytest.raises(UnknownNameError) as e:
        classifier_test(np.zeros((300, 2)), np.ones((300, 2)), preset="calo")
    msg = str(e.value)
    assert "\n" not in msg and "'calo'" in msg and "calochallenge, gate" in msg
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"classifier": {"preset": "big"}}))
    with pytest.raises(ConfigError) as e2:
        load_gate_spec(p)
    msg = str(e2.value)
    assert "\n" not in msg and str(p) in msg and "classifier.preset" in msg and "'gate'" in msg and "'calochallenge'" in msg
    with pytest.raises(UnknownNameError, match="allowed: calochallenge, gate"):
        with_classifier_preset(GateSpec(), "large")
    with pytest.raises(ConfigError, match="unknown setting 'width'"):
        fit_classifier(np.zeros((300, 2)), np.ones((300, 2)), width=3)


def test_with_classifier_preset_replaces_the_training_settings_only() -> None:
    spec = load_gate_spec("strict")  # inputs [high, low], max_auc 0.55, epochs 30
    cc = with_classifier_preset(spec, "calochallenge").classifier
    assert cc.preset == "calochallenge" and cc.epochs == 50 and cc.n_hidden == 2048 and cc.max_events == 121_000
    assert cc.inputs == ("high", "low") and cc.max_auc == 0.55
    back = with_classifier_preset(with_classifier_preset(spec, "calochallenge"), "gate").classifier
    assert back == ClassifierRule(inputs=("high", "low"), max_auc=0.55)


def test_identical_distributions_give_half() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2500, 5)), rng.normal(size=(2500, 5))
    r = classifier_test(a, b, preset="calochallenge", seed=1, **TINY)
    assert abs(r.auc - 0.5) < 0.04 and r.jsd < 0.03  # calibration on a finite split: JSD can be below 0
    assert (r.n_train, r.n_test, r.n_heldout) == (3000, 1000, 1000)


def test_visibly_different_samples_give_auc_near_one() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(1500, 5))
    b = rng.normal(size=(1500, 5)) * np.array([1.0, 1.0, 1.0, 1.0, 3.0])  # one feature three times wider
    r = classifier_test(a, b, preset="calochallenge", seed=0, **TINY)
    # the best possible AUC (cut on |x_5|) is P(3 |z1| > |z2|) = (2 / pi) arctan 3 = 0.795: close to it, not above
    assert 0.75 < r.auc < 0.83 and r.jsd > 0.15
    s = np.concatenate([a, b])
    r2 = classifier_test(s[:1500] + 4.0, s[1500:], preset="calochallenge", seed=0, **TINY)
    assert r2.auc > 0.99


def test_best_epoch_is_the_best_test_accuracy_and_its_network_is_used() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(400, 6)), rng.normal(size=(400, 6))
    b[:, 0] += 0.5
    kw = {"preset": "calochallenge", "n_hidden": 64, "lr": 1e-2, "batch_size": 32, "threads": 1, "seed": 3}
    f = fit_classifier(a, b, epochs=10, **kw)
    acc = np.asarray(f.test_accuracy)
    assert acc.size == 10 and f.best_epoch == int(np.argmax(acc))  # the first epoch of the best accuracy
    assert f.best_epoch < 9 and acc[f.best_epoch] > acc[-1]  # it overfits: the last epoch is worse
    # the same run stopped at the selected epoch ends with that epoch's network: identical outputs
    g = fit_classifier(a, b, epochs=f.best_epoch + 1, **kw)
    assert np.array_equal(g.p_heldout, f.p_heldout) and np.array_equal(g.p_test, f.p_test)
    r = f.result()
    assert r.settings["selected_epoch"] == f.best_epoch + 1 and r.settings["epochs_run"] == 10
    assert r.settings["best_test_accuracy"] == acc.max()


def test_isotonic_calibration_is_applied() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(800, 3)), rng.normal(size=(800, 3)) + np.array([1.0, 0.0, 0.0])
    f = fit_classifier(a, b, preset="calochallenge", seed=2, **TINY)
    r = f.result()
    p = isotonic_calibrate(f.p_test, f.y_test, f.p_heldout)
    y = f.y_heldout
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert r.calibrated and r.bce == pytest.approx(bce, rel=1e-12)
    f.settings["calibrate"] = False
    raw = f.result()
    assert not raw.calibrated and raw.bce != pytest.approx(r.bce, rel=1e-6)
    # out of the fitted range: clipped, and bounded away from 0 and 1 (evaluate.py's y_min / y_max)
    q = isotonic_calibrate(np.array([0.2, 0.4, 0.6, 0.8]), np.array([0.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.5, 1.0]))
    assert np.allclose(q, [1e-6, 0.5, 1 - 1e-6])


def test_calochallenge_preset_uses_every_core_and_restores_torch_threads() -> None:
    import os

    before = torch.get_num_threads()
    rng = np.random.default_rng(7)
    r = classifier_test(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)), preset="calochallenge",
                        n_hidden=8, epochs=1)
    assert r.settings["threads"] == len(os.sched_getaffinity(0))
    assert torch.get_num_threads() == before
    assert classifier_test(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)), n_hidden=8, epochs=1).settings["threads"] == 1


def test_run_classifier_reports_the_rules_preset_and_settings() -> None:
    rng = np.random.default_rng(8)
    rule = ClassifierRule(preset="calochallenge", n_hidden=16, epochs=3, threads=1, min_events=100)
    d = run_classifier(rule, rng.normal(size=(500, 4)), rng.normal(size=(500, 4)), seed=4)
    s = d["settings"]
    json.dumps(d)  # JSON-able as it is written into metrics.json
    assert s["preset"] == "calochallenge (modified: epochs=3, n_hidden=16, threads=1)"
    assert s["label"].startswith("CaloChallenge") and s["input_scaling"].startswith("none")
    assert s["architecture"] == "4 -> 3 x [Linear(16) -> LeakyReLU] -> Linear(1), BCEWithLogits"
    assert s["n_parameters"] == (4 * 16 + 16) + 2 * (16 * 16 + 16) + 17
    assert (s["n_train"], s["n_test"], s["n_heldout"], s["seed"]) == (600, 200, 200, 4)
    assert s["optimizer"] == "Adam, lr 0.0002, batch 1000"
    lines = settings_lines({"high": d, "low": {"skipped": "too few"}})
    assert len(lines) == 1 and "classifier (high): preset 'calochallenge (modified" in lines[0]
    assert f"selected epoch {s['selected_epoch']} of 3 run" in lines[0] and "train/test/held-out 600/200/200" in lines[0]
    assert "seed 4" in lines[0] and "isotonic" in lines[0]
    h = settings_html({"high": d})
    assert "<th>selected epoch</th>" in h and "3 x [Linear(16) -&gt; LeakyReLU]" in h and "<th>held-out</th><td>200</td>" in h
    assert settings_html({"high": {"skipped": "x"}}) == ""


def test_presets_table_matches_the_rule_fields() -> None:
    for name, values in CLASSIFIER_PRESETS.items():
        r = ClassifierRule(preset=name)
        assert {k: getattr(r, k) for k in values} == values


def test_bfloat16_precision_finds_what_float32_finds_reproducibly() -> None:
    """``precision: bfloat16`` (matrix products under autocast): the same AUC as float32 within its error."""
    rng = np.random.default_rng(11)
    a = rng.normal(size=(3000, 5))
    b = rng.normal(size=(3000, 5)) * np.array([1.0, 1.0, 1.0, 1.0, 3.0])  # best possible AUC 0.795 (above)
    kw = {"preset": "gate", "n_hidden": 32, "epochs": 6, "seed": 4}
    f32 = classifier_test(a, b, **kw)
    b16 = classifier_test(a, b, precision="bfloat16", **kw)
    # held-out 600 per class: the AUC's statistical error is about 0.015
    assert 0.74 < b16.auc < 0.83 and abs(b16.auc - f32.auc) < 0.03
    assert b16.auc != f32.auc  # bfloat16 products round differently: a different (equally good) network
    again = classifier_test(a, b, precision="bfloat16", **kw)
    assert again.auc == b16.auc and again.test_accuracy == b16.test_accuracy
    assert b16.settings["precision"] == "bfloat16" and b16.settings["matmul"].startswith("bfloat16 (torch.autocast")
    assert b16.settings["preset"] == "gate (modified: epochs=6, n_hidden=32, precision=bfloat16)"
    assert f32.settings["precision"] == "float32" and f32.settings["matmul"] == "float32"
    same = classifier_test(a, a[::-1].copy(), precision="bfloat16", **kw)
    assert abs(same.auc - 0.5) < 0.05
    lines = settings_lines({"high": b16.to_dict()})
    assert "matrix products bfloat16 (torch.autocast" in lines[0]
    assert "<th>matrix products</th><td>bfloat16" in settings_html({"high": b16.to_dict()})


def test_bfloat16_precision_reaches_the_classifier_from_a_gate_spec_and_bad_values_are_refused(tmp_path) -> None:
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"classifier": {"precision": "bfloat16", "n_hidden": 16, "epochs": 2}}))
    rule = load_gate_spec(p).classifier
    assert rule.precision == "bfloat16"
    rng = np.random.default_rng(12)
    d = run_classifier(rule, rng.normal(size=(500, 3)), rng.normal(size=(500, 3)), seed=1)
    assert d["settings"]["precision"] == "bfloat16"
    p.write_text(yaml.safe_dump({"classifier": {"precision": "float16"}}))
    with pytest.raises(ConfigError) as e:
        load_gate_spec(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "classifier.precision" in msg and "'bfloat16'" in msg
    with pytest.raises(ConfigError) as e2:
        classifier_test(np.zeros((300, 2)), np.ones((300, 2)), precision="half")
    assert str(e2.value) == "classifier: unknown precision 'half'; allowed: float32, bfloat16"


def test_patience_stops_at_chance_and_equals_the_shorter_run() -> None:
    """``patience``: the run ends ``patience`` epochs after its best; the same run with that many epochs is identical."""
    rng = np.random.default_rng(21)
    a, b = rng.normal(size=(1500, 4)), rng.normal(size=(1500, 4))  # the same distribution: accuracy at chance
    kw = {"preset": "gate", "n_hidden": 32, "threads": 1, "seed": 2, "epochs": 20}
    f = fit_classifier(a, b, patience=3, **kw)
    n = len(f.test_accuracy)
    assert n < 20 and n - 1 - f.best_epoch == 3  # stopped exactly 3 epochs after the best
    assert max(f.test_accuracy[f.best_epoch + 1:]) <= f.test_accuracy[f.best_epoch]
    full = fit_classifier(a, b, patience=0, **kw)  # every epoch: the first n are the same epochs
    assert len(full.test_accuracy) == 20 and full.test_accuracy[:n] == f.test_accuracy
    short = fit_classifier(a, b, patience=0, **{**kw, "epochs": n})
    assert np.array_equal(short.p_heldout, f.p_heldout) and short.best_epoch == f.best_epoch
    r = f.result()
    assert r.settings["patience"] == 3 and r.settings["epochs_run"] == n
    assert r.settings["selection"] == "best test-split accuracy, stopped after 3 epochs without a better one"
    # separable samples: the accuracy keeps rising, so the run is not cut while it improves
    c = rng.normal(size=(1500, 4)) + np.array([0.8, 0.0, 0.0, 0.0])
    g = fit_classifier(a, c, patience=3, **kw)
    m = len(g.test_accuracy)
    assert m == 20 or m - 1 - g.best_epoch == 3
    assert g.test_accuracy[g.best_epoch] > 0.6


def test_patience_defaults_and_bad_values() -> None:
    # opt-in: both presets run every epoch, as evaluate.py
    assert CLASSIFIER_PRESETS["gate"]["patience"] == 0 and CLASSIFIER_PRESETS["calochallenge"]["patience"] == 0
    assert ClassifierRule().patience == 0 and ClassifierRule(preset="calochallenge").patience == 0
    assert ClassifierRule(patience=5).patience == 5
    with pytest.raises(ValueError, match="patience"):
        ClassifierRule(patience=-1)
    rng = np.random.default_rng(3)
    with pytest.raises(ConfigError, match="patience must be >= 0"):
        classifier_test(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)), n_hidden=8, epochs=1, patience=-2)
