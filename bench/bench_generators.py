"""The shipped generators: sampling rate, training cost (from the zoo card) and fidelity measured in this run.

For both shipped bundles (``simcompress/generators/zoo/*``):

* showers per second at batch 1, 100 and 10 000 on this CPU (one torch thread), next to the
  reference (GFlash) simulator's rate measured in the same run;
* the training cost the bundle's ``card.json`` records: steps, wall time, machine (the training
  itself is not rerun here);
* fidelity measured now, against ``--events`` fresh GFlash showers at the ds1 energies (sample A),
  each figure next to the reference-versus-reference floor: the same figure for a second,
  independent GFlash sample B of the same size against A:
  - the worst high-level feature separation power (CaloChallenge's, 50 quantile bins of A; 1 MeV voxel threshold);
  - the per-energy mean response and resolution deviations (worst |deviation| in %, over the 15 energies);
  - the classifier AUC (high-level and low-level inputs; the cheap ``gate`` preset by default,
    ``--classifier calochallenge`` for CaloChallenge's DNN, which takes hours at 100k on 2 cores).

Usage: ``python bench/bench_generators.py [--quick] [--events N] [--classifier gate|calochallenge]
[--inputs high,low] [--no-rates]`` (prints JSON; progress on standard error); also run by ``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

BATCHES = (1, 100, 10_000)
MODELS = ("ds1-photons-gan", "ds1-photons-flow")
SEED_A, SEED_B, SEED_GEN = 7001, 7002, 3  # sample A, floor sample B, generator noise


def _rate(fn, n_events: int, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return n_events * repeats / (time.perf_counter() - t0)


def _card(gen) -> dict:
    path = getattr(gen, "bundle_path", None)
    return json.loads(open(f"{path}/card.json").read()) if path else {}


def _training_cost(card: dict) -> dict:
    """Steps, wall time and machine as the card records them (``None`` where the card has no such entry)."""
    tr = card.get("training", {})
    hist = tr.get("history") or []
    wall, wall_from = None, None
    for key in ("wall_s", "wall_seconds", "wall_time_s"):
        if tr.get(key) is not None:
            wall, wall_from = tr[key], f"training.{key}"
            break
    if wall is None and hist and hist[-1].get("seconds") is not None:
        wall, wall_from = hist[-1]["seconds"], "training.history[-1].seconds"
    machine = tr.get("machine") or {"device": tr.get("device", (tr.get("recipe") or {}).get("device")),
                                    "torch_threads": (tr.get("recipe") or {}).get("threads")}
    out = {"steps": tr.get("steps"), "recipe_steps": (tr.get("recipe") or {}).get("steps"), "wall_s": wall,
           "wall_s_from": wall_from, "machine": machine, "resumed_from_checkpoint": bool(tr.get("from_checkpoint")),
           "command": tr.get("command_used") or card.get("retrain_command")}
    # a bundle trained in stages (init_from) records each stage's cost in training.cost.stage_N; the
    # last stage's own steps and wall time alone would understate it (a calibration-only stage: 0 steps)
    stages = {k: v for k, v in (tr.get("cost") or {}).items() if k.startswith("stage_") and isinstance(v, dict)}
    if stages:
        per = {k: {"steps": v.get("steps"), "wall_s": v.get("wall_seconds", v.get("seconds"))} for k, v in sorted(stages.items())}
        out["stages"] = per
        if all(v["steps"] is not None and v["wall_s"] is not None for v in per.values()):
            out["total_steps"] = sum(v["steps"] for v in per.values())
            out["total_wall_s"] = round(sum(v["wall_s"] for v in per.values()), 1)
    return out


def _separation(fa, fx, names) -> dict[str, float]:
    import numpy as np

    from simcompress.validation.metrics import feature_binning, histogram_separation_power

    out = {}
    for k in names:
        a, b = np.asarray(fa[k]), np.asarray(fx[k])
        out[k] = float(histogram_separation_power(a, b, feature_binning(a, [b], n_bins=50)))
    return out


def _classifier_inputs(kind: str, s, feats):
    import numpy as np

    from simcompress.validation.classifier import low_level_inputs
    from simcompress.validation.features import high_level_vector

    if kind == "high":
        return high_level_vector(feats)
    return low_level_inputs(s.incident_energy, np.where(s.showers >= feats.threshold_mev, s.showers, 0.0))


def _figures(a, fa, x, fx, names, classifier: str, inputs: tuple[str, ...], bar, what: str) -> dict[str, Any]:
    """The fidelity figures of sample ``x`` against sample A."""
    from simcompress.generators.fidelity import compare_response
    from simcompress.validation.classifier import classifier_test

    sp = _separation(fa, fx, names)
    worst = max(sp, key=sp.get)
    resp = compare_response(a.incident_energy, a.showers, x.incident_energy, x.showers, a.geometry.layer_offsets)
    out: dict[str, Any] = {
        "max_separation_power": round(sp[worst], 5), "worst_feature": worst,
        "max_abs_mean_response_dev_pct": round(float(resp["max_abs_mean_dev_pct"]), 3),
        "max_abs_resolution_dev_pct": round(float(resp["max_abs_resolution_dev_pct"]), 2),
        "separation_power": {k: round(v, 5) for k, v in sp.items()},
    }
    for kind in inputs:
        def on_epoch(e: int, n: int, acc: float, kind: str = kind) -> None:
            bar.update(description=f"{what}: classifier ({kind}) epoch {e}/{n}, test accuracy {acc:.3f}")

        t0 = time.perf_counter()
        r = classifier_test(_classifier_inputs(kind, a, fa), _classifier_inputs(kind, x, fx), preset=classifier,
                            max_events=len(a.incident_energy), seed=0, on_epoch=on_epoch, label=kind)
        out[f"auc_{kind}"] = round(r.auc, 4)
        out[f"classifier_{kind}_s"] = round(time.perf_counter() - t0, 1)
        out[f"classifier_{kind}_selected_epoch"] = r.settings["selected_epoch"]
    bar.advance(1)
    return out


def _fidelity(models: dict, n: int, classifier: str, inputs: tuple[str, ...], progress: bool) -> dict[str, Any]:
    import torch

    from simcompress._progress import progress_bar
    from simcompress.showers.data import ShowerSet
    from simcompress.showers.reference import simulate
    from simcompress.validation.features import compute_features, feature_names

    geometry = next(iter(models.values())).geometry
    a = simulate(geometry, n, energies="ds1", seed=SEED_A, progress=False)
    b = simulate(geometry, n, energies="ds1", seed=SEED_B, progress=False)
    fa, fb = compute_features(a), compute_features(b)
    names = feature_names(geometry)
    out: dict[str, Any] = {}
    with progress_bar("fidelity", 1 + len(models), enabled=progress) as bar:
        bar.update(description="fidelity: reference vs reference floor")
        floor = _figures(a, fa, b, fb, names, classifier, inputs, bar, "floor")
        for name, gen in models.items():
            bar.update(description=f"fidelity: {name}")
            x = gen.sample(torch.as_tensor(a.incident_energy), torch.Generator().manual_seed(SEED_GEN)).numpy()
            s = ShowerSet(a.incident_energy, x, geometry, {})
            fig = _figures(a, fa, s, compute_features(s), names, classifier, inputs, bar, name)
            # each figure next to its floor; the worst feature's own floor too
            fig["floor"] = {k: v for k, v in floor.items() if k != "separation_power"}
            fig["floor"]["separation_power_of_worst_feature"] = floor["separation_power"][fig["worst_feature"]]
            out[name] = fig
    return {"n_events": n, "reference": f"GFlash ds1 energies, seed {SEED_A} (A); floor sample seed {SEED_B} (B)",
            "classifier_preset": classifier, "models": out}


def run(quick: bool = False, events: int | None = None, classifier: str = "gate",
        inputs: tuple[str, ...] = ("high", "low"), rates: bool = True, progress: bool = False) -> dict:
    import numpy as np
    import torch

    from simcompress.generators import load_generator
    from simcompress.showers.geometry import Geometry
    from simcompress.showers.reference import simulate
    from simcompress.validation.spec import classifier_preset

    classifier_preset(classifier)  # an unknown name fails before any work
    threads = 1
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        geometry = Geometry.from_name("ds1-photons")
        n_ref = 5_000 if quick else 20_000
        t0 = time.perf_counter()
        simulate(geometry, n_ref, energies="ds1", seed=0, progress=False)
        ref_rate = n_ref / (time.perf_counter() - t0)
        out: dict = {"torch_threads": threads, "reference_simulator_showers_per_s": round(ref_rate, 1), "models": {}}
        rng = np.random.default_rng(0)
        gens = {name: load_generator(name) for name in MODELS}
        for name, gen in gens.items():
            res = {}
            for bs in BATCHES if rates else ():
                e = torch.as_tensor(2.0 ** rng.integers(8, 23, size=bs), dtype=torch.float32)
                g = torch.Generator().manual_seed(0)
                repeats = {1: 20 if quick else 100, 100: 3 if quick else 20, 10_000: 1}[bs]
                if gen.kind == "flow" and bs == 1:
                    repeats = max(repeats // 4, 3)
                rate = _rate(lambda: gen.sample(e, generator=g, batch_size=bs), bs, repeats)  # noqa: B023
                res[f"batch_{bs}"] = {"showers_per_s": round(rate, 1), "speedup_vs_reference": round(rate / ref_rate, 3)}
            card = _card(gen)
            out["models"][name] = {
                "kind": gen.kind, "parameters": sum(p.numel() for p in gen.parameters()), **res,
                "training_cost_from_card": _training_cost(card),
                "fidelity_100k_from_card": (card.get("validation_100k") or {}).get("max_separation_power"),
            }
        fid = _fidelity(gens, events or n_ref, classifier, tuple(inputs), progress)
        out["fidelity_measured_now"] = {k: v for k, v in fid.items() if k != "models"}
        for name, fig in fid["models"].items():
            out["models"][name]["fidelity_measured_now"] = fig
        return out
    finally:
        torch.set_num_threads(prev)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_generators.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (5,000 showers instead of 20,000)")
    ap.add_argument("--events", type=int, default=None, help="showers per sample for the fidelity figures (default 20,000; 5,000 with --quick)")
    ap.add_argument("--classifier", default="gate", choices=("gate", "calochallenge"),
                    help="classifier preset for the AUC (gate: cheap; calochallenge: CaloChallenge's DNN, hours at 100k)")
    ap.add_argument("--inputs", default="high,low", help="classifier inputs, comma-separated: high, low")
    ap.add_argument("--no-rates", action="store_true", help="skip the sampling-rate measurement")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    inputs = tuple(k.strip() for k in args.inputs.split(",") if k.strip())
    bad = [k for k in inputs if k not in ("high", "low")]
    if bad or not inputs or (args.events is not None and args.events < 500):
        ap.error(f"--inputs takes high and/or low (got {args.inputs!r}); --events at least 500")
    print(json.dumps(run(args.quick, args.events, args.classifier, inputs, not args.no_rates, not args.quiet), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
