"""Benchmark of the validation package: showers per second through ``simcompress validate``.

Writes a GFlash reference file and a candidate file (ds1-photons, ZSTD(1) ROOT TTrees, the
candidate with a different seed), then in the same run measures

* ``uproot_raw``: ``uproot.iterate`` over both files (all branches, 200 MB steps, numpy), the raw
  read rate of the same bytes;
* ``validate_metrics``: the ``simcompress validate`` command (default gate, ``--no-html``):
  streaming read, features, noise floor, KS/W1/separation power with bootstrap, FPD, KPD,
  classifier test, gate;
* ``validate_report``: the same plus the HTML report (figures);

each as (reference + candidate showers) / wall seconds, and the peak resident memory of the
process (``ru_maxrss``) so memory boundedness is visible. Full mode: 1M + 1M showers;
``--quick``: 20k + 20k. Data files are cached in ``$SIMCOMPRESS_BENCH_CACHE`` (default: a
temporary folder) so reruns skip the simulation.

Usage: ``python bench/bench_validation.py [--quick]`` (prints JSON) or ``python -m bench --only validation``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _make_files(folder: Path, n: int) -> tuple[Path, Path, float]:
    from simcompress.showers.io import write_showers
    from simcompress.showers.reference import iter_simulate

    ref, cand = folder / f"ref_{n}.root", folder / f"cand_{n}.root"
    t = time.perf_counter()
    for path, seed in ((ref, 1), (cand, 2)):
        if not path.exists():
            write_showers(path, iter_simulate("ds1-photons", n, "ds1", seed, 100_000, False))
    return ref, cand, time.perf_counter() - t


def _uproot_read(paths: list[Path]) -> tuple[int, float]:
    import uproot

    t = time.perf_counter()
    n = 0
    for batch in uproot.iterate([f"{p}:showers" for p in paths], step_size="200 MB", library="np"):
        n += len(next(iter(batch.values())))
    return n, time.perf_counter() - t


def _validate(ref: Path, cand: Path, out: Path, html: bool) -> tuple[int, float]:
    from simcompress.cli import main

    args = ["validate", "-r", str(ref), "-c", str(cand), "--out", str(out), "-q"]
    if not html:
        args.append("--no-html")
    import contextlib
    import io

    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # keep the command's summary table out of the JSON
        rc = main(args)
    dt = time.perf_counter() - t
    if rc not in (0, 1):
        raise RuntimeError(f"simcompress validate exited {rc}")
    return rc, dt


def run(quick: bool = False) -> dict[str, object]:
    n = 20_000 if quick else 1_000_000
    cache = os.environ.get("SIMCOMPRESS_BENCH_CACHE")
    tmp = None
    if cache:
        folder = Path(cache)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_validation_")
        folder = Path(tmp.name)
    try:
        ref, cand, t_make = _make_files(folder, n)
        n_read, t_raw = _uproot_read([ref, cand])
        rc_m, t_metrics = _validate(ref, cand, folder / "out_metrics", html=False)
        rss_metrics = _rss_mb()
        rc_r, t_report = _validate(ref, cand, folder / "out_report", html=True)
        metrics = json.loads((folder / "out_metrics" / "metrics.json").read_text())
        total = 2 * n
        return {
            "geometry": "ds1-photons",
            "events_per_file": n,
            "file_mb": {"reference": ref.stat().st_size / 1e6, "candidate": cand.stat().st_size / 1e6},
            "simulate_and_write_s": t_make,
            "uproot_raw": {"events": n_read, "seconds": t_raw, "showers_per_s": n_read / t_raw},
            "validate_metrics": {"seconds": t_metrics, "showers_per_s": total / t_metrics, "exit_code": rc_m},
            "validate_report": {"seconds": t_report, "showers_per_s": total / t_report, "exit_code": rc_r},
            "ratio_validate_metrics_over_raw_read": (total / t_metrics) / (n_read / t_raw),
            "peak_rss_mb_after_metrics": rss_metrics,
            "peak_rss_mb": _rss_mb(),
            "gate_passed": metrics["passed"],
            "n_checks": len(metrics["checks"]),
        }
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=1))
