"""Showers per second of the shipped generators at batch 1, 100 and 10 000 on this CPU,
next to the reference (GFlash) simulator's rate measured in the same run.

Usage: ``python bench/bench_generators.py [--quick]`` (prints JSON); also run by ``python -m bench``.
"""

from __future__ import annotations

import json
import sys
import time

BATCHES = (1, 100, 10_000)


def _rate(fn, n_events: int, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return n_events * repeats / (time.perf_counter() - t0)


def _card(gen) -> dict:
    path = getattr(gen, "bundle_path", None)
    return json.loads(open(f"{path}/card.json").read()) if path else {}


def _training_cost(gen) -> dict:
    """Steps and wall seconds the card records (the training itself is not rerun here)."""
    tr = _card(gen).get("training", {})
    hist = tr.get("history") or [{}]
    return {"steps": tr.get("steps"), "wall_s": hist[-1].get("seconds"), "device": tr.get("device", "cpu")}


def _fidelity(gen, n: int, rng) -> dict:
    """Worst CaloChallenge separation power over the high-level features, n generated vs n fresh GFlash showers."""
    import numpy as np
    import torch

    from simcompress.showers.data import ShowerSet
    from simcompress.showers.reference import simulate
    from simcompress.validation.features import compute_features, feature_names
    from simcompress.validation.metrics import feature_binning, histogram_separation_power

    ref = simulate(gen.geometry, n, energies="ds1", seed=int(rng.integers(1 << 30)), progress=False)
    x = gen.sample(torch.as_tensor(ref.incident_energy), torch.Generator().manual_seed(3)).numpy()
    fr, fg = compute_features(ref), compute_features(ShowerSet(ref.incident_energy, x, ref.geometry, {}))
    sp = {}
    for k in feature_names(ref.geometry):
        a, b = np.asarray(fr[k]), np.asarray(fg[k])
        sp[k] = float(histogram_separation_power(a, b, feature_binning(a, [b], n_bins=50)))
    worst = max(sp, key=sp.get)
    return {"n_events": n, "max_separation_power": round(sp[worst], 4), "worst_feature": worst,
            "width_r_1": round(sp.get("width_r_1", float("nan")), 4)}


def run(quick: bool = False) -> dict:
    import numpy as np
    import torch

    from simcompress.generators import load_generator
    from simcompress.showers.geometry import Geometry
    from simcompress.showers.reference import simulate

    threads = 1
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        geometry = Geometry.from_name("ds1-photons")
        n_ref = 5_000 if quick else 20_000
        t0 = time.perf_counter()
        simulate(geometry, n_ref, energies="ds1", seed=0, progress=False)
        ref_rate = n_ref / (time.perf_counter() - t0)
        out: dict = {
            "torch_threads": threads,
            "reference_simulator_showers_per_s": round(ref_rate, 1),
            "models": {},
        }
        rng = np.random.default_rng(0)
        for name in ("ds1-photons-gan", "ds1-photons-flow"):
            gen = load_generator(name)
            res = {}
            for bs in BATCHES:
                e = torch.as_tensor(2.0 ** rng.integers(8, 23, size=bs), dtype=torch.float32)
                g = torch.Generator().manual_seed(0)
                repeats = {1: 20 if quick else 100, 100: 3 if quick else 20, 10_000: 1}[bs]
                if gen.kind == "flow" and bs == 1:
                    repeats = max(repeats // 4, 3)
                rate = _rate(lambda: gen.sample(e, generator=g, batch_size=bs), bs, repeats)  # noqa: B023
                res[f"batch_{bs}"] = {
                    "showers_per_s": round(rate, 1),
                    "speedup_vs_reference": round(rate / ref_rate, 3),
                }
            out["models"][name] = {
                "kind": gen.kind, "parameters": sum(p.numel() for p in gen.parameters()), **res,
                "training_cost_from_card": _training_cost(gen),
                "fidelity_measured_now": _fidelity(gen, n_ref, rng),
                "fidelity_100k_from_card": _card(gen).get("validation_100k", {}).get("max_separation_power"),
            }
        return out
    finally:
        torch.set_num_threads(prev)


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
