"""Benchmark of the validation package: throughput with and without the cached reference.

Writes a GFlash reference file and two candidate files (ds1-photons, ZSTD(1) ROOT TTrees, other
seeds), then measures in one run:

* ``uproot_raw``: ``uproot.iterate`` over the first candidate file (all branches, 200 MB steps,
  numpy), the fastest of three reads: the raw read rate the validation is compared with;
* ``no_cache``: ``validate`` (default gate, no HTML) of candidate 1 with the cache off: reference
  and candidate read, features, noise floor, 1-D metrics, FPD/KPD, classifier, gate;
* ``first`` / ``second``: the same with the cache on (a fresh cache folder): the first run
  computes and writes the cached reference, the second validates candidate 2 against it, so it
  reads and computes only the candidate. ``speedup_second_vs_first`` is their wall-time ratio,
  ``speedup_second_vs_first_cpu`` the ratio of their CPU seconds (every thread); each run records
  the load average before it;
* ``features_1d_cached``: candidate throughput of reading + features + every 1-D metric (inclusive
  and per energy bin) with the cached reference, FPD/KPD and classifier off, as a ratio to the raw
  read rate (goal >= 0.3), in wall time and in CPU seconds (every thread; less sensitive to other
  load on a shared machine): three runs, each right after one raw read of a candidate file, the
  best run against the best of those reads (both see the same load);
* time shares of each stage (read, features, 1-D metrics, per-bin metrics, floor, FPD/KPD,
  classifier) of the no-cache run, as fractions of the summed stage times (the classifier runs on
  a worker thread next to the others, so stage times add up to more than the wall time), and the
  candidate's own shares in the cached second run (``second_with_cache.candidate_shares``);
* ``classifier_bfloat16``: the first / second pair again with the classifier's ``precision: bfloat16``
  (one torch thread, as the preset, and every core), with the held-out AUCs of both precisions;
* ``classifier_patience``: the first / second pair again with the classifier's opt-in early stopping
  (``patience: 5``), float32, with the epochs each run trained and its held-out AUC;
* ``report``: writing ``report.html`` for the no-cache result; peak resident memory.

Full mode: 1M showers per file; ``--quick``: 20k; ``--events N`` any size. Data files are cached in
``$SIMCOMPRESS_BENCH_CACHE`` (default: a temporary folder) so reruns skip the simulation.

Usage: ``python bench/bench_validation.py [--quick | --events N]`` (prints JSON) or
``python -m bench --only validation``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: interleaved raw reads and cached 1-D runs (best of each)
_REPEATS_1D = 3


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds of this process so far, every thread (user + system): less load-dependent than wall time."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _make_files(folder: Path, n: int) -> tuple[list[Path], float]:
    from simcompress.showers.io import write_showers
    from simcompress.showers.reference import iter_simulate

    paths = [folder / f"{name}_{n}.root" for name in ("ref", "cand", "cand2")]
    t = time.perf_counter()
    for path, seed in zip(paths, (1, 2, 3), strict=False):
        if not path.exists():
            write_showers(path, iter_simulate("ds1-photons", n, "ds1", seed, 100_000, False))
    return paths, time.perf_counter() - t


def _uproot_read(paths: list[Path], repeats: int = 3) -> tuple[int, float]:
    """(events, seconds) of the fastest of ``repeats`` reads: the ratios below are against the best raw rate."""
    import uproot

    best = math.inf
    n = 0
    for _ in range(repeats):
        t = time.perf_counter()
        n = 0
        for batch in uproot.iterate([f"{p}:showers" for p in paths], step_size="200 MB", library="np"):
            n += len(next(iter(batch.values())))
        best = min(best, time.perf_counter() - t)
    return n, best


def _run(ref: Path, cand: Path, spec: Any, cache: Any) -> tuple[Any, float]:
    from simcompress.validation import validate

    t = time.perf_counter()
    res = validate(str(ref), {"candidate": str(cand)}, spec, progress=False, html=False, cache=cache)
    return res, time.perf_counter() - t


def _load() -> list[float]:
    """1-, 5- and 15-minute load averages (other work on a shared machine moves every wall time)."""
    return [round(v, 2) for v in os.getloadavg()]


def _shares(res: Any) -> dict[str, Any]:
    (c,) = res.candidates.values()
    r = res.reference.timings
    stages = {
        "read": r.get("read", 0.0) + c.timings.get("read", 0.0),
        "features": r.get("features", 0.0) + c.timings.get("features", 0.0),
        "metrics_1d": c.timings.get("metrics_1d", 0.0) + r.get("sort", 0.0),
        "metrics_per_energy_bin": c.timings.get("per_energy_bin", 0.0),
        "noise_floor": r.get("floor", 0.0) + r.get("floor_per_bin", 0.0),
        "fpd_kpd": r.get("fpd_kpd", 0.0) + c.timings.get("fpd_kpd", 0.0),
        "classifier": r.get("classifier", 0.0) + c.timings.get("classifier", 0.0),
    }
    total = sum(stages.values())
    return {"stage_seconds": stages, "shares": {k: v / total for k, v in stages.items()} if total else {}}


def _candidate_shares(c: Any) -> dict[str, float]:
    """Shares of the candidate's own stages (read, features, 1-D, per-bin, FPD/KPD, classifier) in a cached run.

    The classifier trains on its own thread while the 1-D metrics and FPD/KPD run on the main one,
    so the shares are of the summed stage seconds, not of the wall time.
    """
    keys = ("read", "features", "metrics_1d", "per_energy_bin", "fpd_kpd", "classifier")
    secs = {k: float(c.timings.get(k, 0.0)) for k in keys}
    total = sum(secs.values())
    return {k: v / total for k, v in secs.items()} if total else {}


def run(quick: bool = False, events: int | None = None) -> dict[str, object]:
    from simcompress.validation.gate import load_gate_spec

    n = events or (20_000 if quick else 1_000_000)
    cache = os.environ.get("SIMCOMPRESS_BENCH_CACHE")
    tmp = None
    if cache:
        folder = Path(cache)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_validation_")
        folder = Path(tmp.name)
    try:
        (ref, cand, cand2), t_make = _make_files(folder, n)
        c0 = _cpu_s()
        n_read, t_raw = _uproot_read([cand])
        cpu_raw = (_cpu_s() - c0) / 3  # per read
        raw_rate = n_read / t_raw
        spec = load_gate_spec("default")
        res0, t_nocache = _run(ref, cand, spec, False)
        t = time.perf_counter()
        res0.write(folder / "out_report", html=True)
        t_report = time.perf_counter() - t
        rss_metrics = _rss_mb()
        with tempfile.TemporaryDirectory(prefix="bench_refcache_") as cdir:
            load_first = _load()
            c0 = _cpu_s()
            res1, t_first = _run(ref, cand, spec, cdir)
            cpu_first = _cpu_s() - c0
            load_second = _load()
            c0 = _cpu_s()
            res2, t_second = _run(ref, cand2, spec, cdir)
            cpu_second = _cpu_s() - c0
            load_after = _load()
            cache_files = list(Path(cdir).glob("*.npz"))
            cache_mb = sum(p.stat().st_size for p in cache_files) / 1e6
            # features + every 1-D metric with the cached reference (FPD/KPD and classifier off)
            one_d = spec.model_copy(
                update={
                    "fpd": spec.fpd.model_copy(update={"enabled": False}),
                    "kpd": spec.kpd.model_copy(update={"enabled": False}),
                    "classifier": spec.classifier.model_copy(update={"enabled": False}),
                    "per_energy_bin": True,
                }
            )
            _run(ref, cand, one_d, cdir)  # writes this spec's cached reference
            # interleaved with the raw read, best of each: both see the same load on a shared machine
            raw_1d: list[tuple[float, float]] = []
            runs_1d: list[tuple[float, float]] = []
            for _ in range(_REPEATS_1D):
                c0 = _cpu_s()
                _, t_r = _uproot_read([cand], repeats=1)
                raw_1d.append((t_r, _cpu_s() - c0))
                c0 = _cpu_s()
                res3, t_1d = _run(ref, cand2, one_d, cdir)
                runs_1d.append((t_1d, _cpu_s() - c0))
            t_raw_1d, cpu_raw_1d = min(w for w, _ in raw_1d), min(c for _, c in raw_1d)
            t_1d, cpu_1d = min(w for w, _ in runs_1d), min(c for _, c in runs_1d)
        # the same first / second pair with the classifier's matrix products in bfloat16 (``precision``), on the
        # preset's one torch thread and on every core: the second run is bound by the candidate's classifier
        bf16: dict[str, Any] = {}
        for key, threads in (("one_thread", 1), ("all_cores", 0)):
            sb = spec.model_copy(
                update={"classifier": spec.classifier.model_copy(update={"precision": "bfloat16", "threads": threads})}
            )
            with tempfile.TemporaryDirectory(prefix="bench_refcache_bf16_") as cdir:
                rb1, tb1 = _run(ref, cand, sb, cdir)
                rb2, tb2 = _run(ref, cand2, sb, cdir)
            (cb1,), (cb2,) = rb1.candidates.values(), rb2.candidates.values()
            bf16[key] = {
                "first_seconds": tb1,
                "second_seconds": tb2,
                "speedup_second_vs_first": tb1 / tb2,
                "second_candidate_stage_seconds": cb2.timings,
                "auc_high_first": cb1.classifier.get("high", {}).get("auc"),
                "auc_high_second": cb2.classifier.get("high", {}).get("auc"),
            }
        # the same pair with the opt-in early stopping (``patience: 5``, docs/classifier.md), float32
        sp_ = spec.model_copy(update={"classifier": spec.classifier.model_copy(update={"patience": 5})})
        with tempfile.TemporaryDirectory(prefix="bench_refcache_patience_") as cdir:
            rp1, tp1 = _run(ref, cand, sp_, cdir)
            rp2, tp2 = _run(ref, cand2, sp_, cdir)
        (cp1,), (cp2,) = rp1.candidates.values(), rp2.candidates.values()
        patience = {
            "first_seconds": tp1,
            "second_seconds": tp2,
            "speedup_second_vs_first": tp1 / tp2,
            "second_candidate_stage_seconds": cp2.timings,
            "epochs_run_first_second": [c.classifier.get("high", {}).get("settings", {}).get("epochs_run") for c in (cp1, cp2)],
            "auc_high_first": cp1.classifier.get("high", {}).get("auc"),
            "auc_high_second": cp2.classifier.get("high", {}).get("auc"),
        }
        (c2,) = res2.candidates.values()
        (c3,) = res3.candidates.values()
        stage_1d = sum(c3.timings.get(k, 0.0) for k in ("read", "features", "metrics_1d", "per_energy_bin"))
        return {
            "geometry": "ds1-photons",
            "events_per_file": n,
            "file_mb": {"reference": ref.stat().st_size / 1e6, "candidate": cand.stat().st_size / 1e6},
            "simulate_and_write_s": t_make,
            "uproot_raw_candidate": {"events": n_read, "seconds": t_raw, "showers_per_s": raw_rate, "cpu_seconds": cpu_raw},
            "no_cache": {
                "seconds": t_nocache,
                "candidate_showers_per_s": n / t_nocache,
                "ratio_to_raw_read": (n / t_nocache) / raw_rate,
                **_shares(res0),
            },
            "first_with_cache": {
                "seconds": t_first, "cpu_seconds": cpu_first, "cache": res1.reference.cache_info["status"],
                "load_before": load_first,
            },
            "second_with_cache": {
                "seconds": t_second,
                "cpu_seconds": cpu_second,
                "load_before": load_second,
                "load_after": load_after,
                "cache": res2.reference.cache_info["status"],
                "candidate_showers_per_s": n / t_second,
                "ratio_to_raw_read": (n / t_second) / raw_rate,
                "candidate_stage_seconds": c2.timings,
                "candidate_shares": _candidate_shares(c2),
            },
            "speedup_second_vs_first": t_first / t_second,
            # the same in CPU seconds (every thread): the work ratio, which two cores' overlap cannot move
            "speedup_second_vs_first_cpu": cpu_first / cpu_second,
            "cache_file_mb": cache_mb,
            "classifier_bfloat16": {
                **bf16,
                "auc_high_float32_first": res1.candidates["candidate"].classifier.get("high", {}).get("auc"),
                "auc_high_float32_second": c2.classifier.get("high", {}).get("auc"),
            },
            "classifier_patience": patience,
            "features_1d_cached": {
                # best of _REPEATS_1D runs, each right after a raw read of the candidate; ratios to the best of those reads
                "repeats": _REPEATS_1D,
                "wall_seconds": t_1d,
                "candidate_showers_per_s_wall": n / t_1d,
                "raw_read_wall_seconds": t_raw_1d,
                "ratio_to_raw_read_wall": t_raw_1d / t_1d,
                "stage_seconds": stage_1d,
                "ratio_to_raw_read_stages": t_raw_1d / stage_1d,
                # CPU seconds of the whole call (every thread) against those of one raw read: the work ratio
                "cpu_seconds": cpu_1d,
                "raw_read_cpu_seconds": cpu_raw_1d,
                "ratio_to_raw_read_cpu": cpu_raw_1d / cpu_1d,
                "runs_wall_cpu": runs_1d,
                "raw_reads_wall_cpu": raw_1d,
                "candidate_stage_seconds": c3.timings,
            },
            "report_html_s": t_report,
            "peak_rss_mb_after_metrics": rss_metrics,
            "peak_rss_mb": _rss_mb(),
            "gate_passed": bool(res0.passed),
            "n_checks": len(res0.checks),
        }
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    argv = sys.argv[1:]
    ev = int(argv[argv.index("--events") + 1]) if "--events" in argv else None
    print(json.dumps(run(quick="--quick" in argv, events=ev), indent=1))
