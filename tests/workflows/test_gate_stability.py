"""The compression gate's verdict does not depend on which reference sample it is given.

One recipe-sized step (int8 PTQ of the shipped GAN) goes through the ``compression`` gate built
against five independent GFlash reference samples: accepted each time; a damaging step (2-bit
weights) rejected each time. The shipped GAN itself fails the reference gate at these sizes,
so a rule judging the student against the reference alone could not give a stable verdict.
"""

from __future__ import annotations

import pytest
from stability_helpers import cheap_compression_spec

from simcompress.compress import compress, config_from_dict
from simcompress.generators import load_generator
from simcompress.showers.reference import simulate
from simcompress.validation.gate import make_model_gate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SEEDS = (101, 102, 103, 104, 105)


def test_compression_verdict_is_the_same_for_five_reference_samples(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SIMCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    spec = cheap_compression_spec()
    assert spec.baseline.enabled and spec.baseline.rule == "teacher"
    gan = load_generator("ds1-photons-gan").eval()
    int8 = compress(gan, config_from_dict({"method": "ptq", "weights": {"bits": 8}})).model.eval()
    two_bit = compress(gan, config_from_dict({"method": "ptq", "weights": {"bits": 2}})).model.eval()
    verdicts = []
    for seed in SEEDS:
        ref = simulate(gan.geometry, 2000, seed=seed, progress=False)
        gate = make_model_gate(ref, spec, n_events=1200, seed=0, baseline=gan)
        good, bad = gate(int8), gate(two_bit)
        assert good.metrics["rule"] == "teacher" and good.metrics["damage"]["checks"]
        verdicts.append((gate.baseline_result.passed, good.passed, bad.passed, good.summary, bad.summary))
    assert [v[1] for v in verdicts] == [True] * 5, [v[3] for v in verdicts]
    assert [v[2] for v in verdicts] == [False] * 5, [v[4] for v in verdicts]
    assert all("damage vs teacher" in v[4] for v in verdicts)
    assert not any(v[0] for v in verdicts)  # the teacher itself fails the reference gate every time
