"""Benchmark of the gate's false-alarm rate: same physics must pass, distortions must not.

For each geometry, independent pairs of GFlash samples of the same physics (reference seed,
candidate seed, both fresh) go through the whole default gate (W1 and separation power of every
feature, FPD, KPD, classifier; its feature thresholds calibrated to the family-wise rate
``false_alarm.rate`` of the preset). Printed and returned per geometry:

* the observed false-alarm rate (pairs whose same-physics candidate failed any check) with its
  Clopper-Pearson 95 % interval, next to the stated rate;
* the same pairs under the previous uncalibrated per-check rule (``false_alarm.method: per-check``,
  ratio 3 / k 5 per check), evaluated on the same metrics;
* the power: how many checks a 2 % energy-scale shift and a 10 % radially wider shower of the
  same candidate fail, and in how many pairs they are caught.

Full mode: 20 ds1-photons pairs of 10,000 showers and 10 ds2 pairs of 5,000 showers; ``--quick``:
20 ds1-photons pairs of 2,500 (whole gate) and 10 ds2 pairs of 2,000 (the 814 feature checks only:
ds2's FPD needs at least 2,896 showers, and FPD/KPD/classifier on its 362 features cost minutes per pair).

Usage: ``python bench/bench_false_alarm.py [--quick] [--only ds1-photons|ds2]`` (prints JSON) or
``python -m bench --only false_alarm``.
"""

from __future__ import annotations

import json
import sys
import time


def _legacy(spec):  # the per-check rule of earlier versions (ratio 3, k 5 per check)
    from simcompress.validation.gate import FeatureRule

    return spec.model_copy(
        update={
            "name": spec.name + " (per-check)",
            "features": tuple(FeatureRule(metric=r.metric, features=r.features, exclude=r.exclude, ratio=3.0, k=5.0) for r in spec.features),
            "false_alarm": spec.false_alarm.model_copy(update={"method": "per-check"}),
        }
    )


def run_geometry(
    geometry: str, n_events: int, n_pairs: int, *, seed: int = 2020, verbose: bool = True, features_only: bool = False,
    energies: str = "ds1",
) -> dict[str, object]:
    from simcompress.validation.distortions import scale_energy, widen_radially
    from simcompress.validation.false_alarm import measure_false_alarm, simulated_pairs
    from simcompress.validation.gate import load_gate_spec

    spec = load_gate_spec("default")
    if features_only:  # the default gate's W1 / separation-power checks only (their thresholds are the calibrated ones)
        spec = spec.model_copy(
            update={
                "name": "default (feature checks only)",
                **{k: getattr(spec, k).model_copy(update={"enabled": False}) for k in ("fpd", "kpd", "classifier")},
            }
        )
    t0 = time.perf_counter()

    def tick(i: int, res: object) -> None:
        if verbose:
            same = [c for c in res.checks if c.candidate == "same"]  # type: ignore[attr-defined]
            bad = [f"{c.metric}({c.target})" for c in same if not c.passed]
            print(
                f"  {geometry} pair {i + 1}/{n_pairs}: {len(bad)} of {len(same)} checks failed {bad[:3]} "
                f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True,
            )

    m = measure_false_alarm(
        simulated_pairs(geometry, n_events, n_pairs, seed=seed, energies=energies),
        spec,
        compare={"per-check": _legacy(spec)},
        distortions={"scale_2pct": lambda s: scale_energy(s, 1.02), "wider_10pct": lambda s: widen_radially(s, 1.10)},
        progress=tick,
    )
    d = m.to_dict()
    d.update({"geometry": geometry, "n_events": n_events, "gate": spec.name, "energies": energies})
    if verbose:
        print(f"{geometry} ({n_events} vs {n_events} showers, gate {spec.name!r}): {m.sentence()}", file=sys.stderr, flush=True)
    return d


def run(quick: bool = False, only: str = "") -> dict[str, object]:
    # quick ds2: the 814 feature checks only, 2,000 showers (ds2's FPD needs >= 2,896 showers, and FPD/KPD and
    # the classifier on its 362 high-level features cost several CPU-minutes per pair on 2 shared cores)
    sizes = {"ds1-photons": (2_500 if quick else 10_000, 20, False), "ds2": (2_000 if quick else 5_000, 10, quick)}
    out: dict[str, object] = {}
    for geom, (n, pairs, feats_only) in sizes.items():
        if only and geom != only:
            continue
        try:
            r = run_geometry(geom, n, pairs, features_only=feats_only)
        except Exception as err:  # one geometry failing must not lose the other's numbers
            out[geom] = {"error": f"{type(err).__name__}: {err}"}
            continue
        out[geom] = {
            "sentence": r["sentence"],
            "gate": r["gate"],
            "pairs": r["n_pairs"],
            "events_per_sample": n,
            "same_physics_failed": r["n_failed"],
            "observed_rate_ci95": r["ci95"],
            "per_check_rule_failed": r["compared"]["per-check"]["pairs_failed"],  # type: ignore[index]
            "scale_2pct_caught": r["flagged"]["scale_2pct"]["pairs_caught"],  # type: ignore[index]
            "scale_2pct_checks_flagged": r["flagged"]["scale_2pct"]["failed_checks_per_pair"],  # type: ignore[index]
            "wider_10pct_caught": r["flagged"]["wider_10pct"]["pairs_caught"],  # type: ignore[index]
            "wider_10pct_checks_flagged": r["flagged"]["wider_10pct"]["failed_checks_per_pair"],  # type: ignore[index]
            "checks": r["n_checks"][0] if r["n_checks"] else 0,  # type: ignore[index]
            "critical_sigma": [c["critical_sigma"] for c in r["calibration"]],  # type: ignore[union-attr]
            "failed_checks": r["failed_checks"],
            "seconds": round(float(r["seconds"]), 1),  # type: ignore[arg-type]
        }
        print(json.dumps({geom: out[geom]}), file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    only = args[args.index("--only") + 1] if "--only" in args else ""
    print(json.dumps(run(quick="--quick" in args, only=only), indent=1))
