"""What the ``gate`` classifier's early stopping (``patience``) changes, on two 100k-shower samples.

usage: python bench/classifier_patience.py REF.root (CAND.root | BUNDLE) OUT.json

A full 20-epoch run of the ``gate`` preset (``patience=0``) on the high-level inputs records the
test accuracy of every epoch; the stopping rule is replayed on them for patience 2-5, and a run the
rule would cut is re-run with ``epochs`` set to where it stops (the identical run, tested in
tests/validation/test_classifier_presets.py), so its AUC is measured, not guessed. A bundle as
candidate is sampled at the reference's incident energies (torch seed 11). Figures: docs/classifier.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from simcompress.generators import load_generator
from simcompress.showers import ShowerSet
from simcompress.showers.io import open_showers
from simcompress.validation.classifier import classifier_test
from simcompress.validation.features import compute_features, high_level_vector


def stop_epoch(acc: list[float], patience: int) -> int:
    """Epochs the rule runs: it stops ``patience`` epochs after the first best so far."""
    best = 0
    for i in range(len(acc)):
        if acc[i] > acc[best]:
            best = i
        if i - best >= patience:
            return i + 1
    return len(acc)


def main() -> None:
    refp, candp, out = sys.argv[1:4]
    ref = open_showers(refp).read()
    if Path(candp).is_dir():
        gen = load_generator(candp)
        with torch.no_grad():
            e = torch.as_tensor(ref.incident_energy, dtype=torch.float32)
            x = gen.sample(e, torch.Generator().manual_seed(11), batch_size=2000).numpy()
        cand = ShowerSet(ref.incident_energy, x, ref.geometry)
    else:
        cand = open_showers(candp).read()
    hr, hc = high_level_vector(compute_features(ref)), high_level_vector(compute_features(cand))
    t = time.perf_counter()
    r = classifier_test(hr, hc, preset="gate", seed=0, patience=0)
    res: dict[str, dict[str, object]] = {
        "full": {"auc": r.auc, "selected_epoch": r.best_epoch + 1, "test_accuracy": list(r.test_accuracy),
                 "seconds": round(time.perf_counter() - t, 2)},
    }
    print(candp, res["full"], flush=True)
    for p in (2, 3, 4, 5):
        n = stop_epoch(list(r.test_accuracy), p)
        if n == len(r.test_accuracy):
            res[f"patience_{p}"] = {"epochs_run": n, "auc": r.auc, "selected_epoch": r.best_epoch + 1}
        else:
            t = time.perf_counter()
            rp = classifier_test(hr, hc, preset="gate", seed=0, patience=0, epochs=n)
            res[f"patience_{p}"] = {"epochs_run": n, "auc": rp.auc, "selected_epoch": rp.best_epoch + 1,
                                    "seconds": round(time.perf_counter() - t, 2)}
        print(p, res[f"patience_{p}"], flush=True)
    with open(out, "w") as fh:
        json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
