"""A fine-tuned recipe step gets the same verdict against five independent reference samples.

The first step of the shipped ``combined`` recipe (structured pruning of 12.5 % of the hidden
units, then its fine-tuning: distillation toward the teacher, the default of
``generator_finetune``) on the shipped GAN goes through the ``compression`` gate built against
five GFlash reference samples: accepted each time. The same pruning without its fine-tuning is
rejected each time (the fine-tuning is what repairs the damage).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from stability_helpers import cheap_compression_spec

from simcompress.compress import compress, config_from_dict
from simcompress.compress.pipeline import Pipeline, load_recipe
from simcompress.generators import load_generator
from simcompress.showers.reference import simulate
from simcompress.validation.gate import make_model_gate
from simcompress.workflows import generator_finetune

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SEEDS = (201, 202, 203, 204, 205)
RECIPE = Path(__file__).resolve().parents[2] / "configs" / "compress" / "combined.yaml"


def test_finetuned_step_verdict_is_the_same_for_five_reference_samples(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SIMCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    spec = cheap_compression_spec()
    gan = load_generator("ds1-photons-gan").eval()
    first = load_recipe(RECIPE).steps[0]
    assert first["method"] == "structured_prune" and first["finetune"]["steps"] > 0
    tuned = Pipeline([first], finetune=generator_finetune(gan, None, seed=0, batch_size=256)).run(gan).model.eval()
    raw = compress(gan, config_from_dict({k: v for k, v in first.items() if k != "finetune"})).model.eval()
    verdicts = []
    for seed in SEEDS:
        ref = simulate(gan.geometry, 2000, seed=seed, progress=False)
        gate = make_model_gate(ref, spec, n_events=1200, seed=0, baseline=gan)
        good, bad = gate(tuned), gate(raw)
        assert good.metrics["rule"] == "teacher"
        verdicts.append((good.passed, bad.passed, good.summary, bad.summary))
    assert [v[0] for v in verdicts] == [True] * 5, [v[2] for v in verdicts]
    assert [v[1] for v in verdicts] == [False] * 5, [v[3] for v in verdicts]
