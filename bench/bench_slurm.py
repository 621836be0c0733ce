"""Benchmark of batch generation through a real (single-node) Slurm against the local 2-worker run.

The same sharded run of the shipped ``ds1-photons-gan`` (same root seed, same shards) three times,
in one process, one after the other:

* ``local_2_workers``: the local process pool (``--workers 2``), the reference;
* ``dask_local_2_workers``: a Dask ``LocalCluster`` with 2 worker processes, which separates
  Dask's own cost from the batch system's;
* ``slurm_2_jobs``: ``--cluster`` with 2 Slurm jobs (``cores: 1``, ``processes: 1``) on a
  throw-away single-node Slurm (:mod:`simcompress.batch.localslurm`) started for the benchmark.

For each: ``showers_per_s`` (generation phase: workers connected, model loads, generation, ZSTD
ROOT writing), ``wall_s`` (the whole ``run_generation`` call) and ``end_to_end_showers_per_s``,
``overhead_s`` (everything outside the generation phase), and the load-independent
``showers_per_cpu_s`` (showers per CPU second of the workers) with ``cpu_share_per_worker`` (CPU
seconds the workers got per wall second: below 1 on a machine that other jobs load). For Slurm also ``submit_s`` (``sbatch``
of both jobs) and ``first_worker_s`` (submission until the first Dask worker in a job connected:
Slurm scheduling, job start, Python and Dask start-up in the job), ``warm_s`` (importing torch
and the task code on the connected workers) and ``close_s`` (closing the client, cancelling the
jobs, the workers leaving). ``slurm_over_local`` compares
the rates; ``identical_shards`` checks that the three runs wrote the same content hashes.

Needs root and Debian's ``slurm-wlm`` and ``munge`` (``make slurm-deps``); otherwise the result
holds only ``skipped`` with the reason.

Usage: ``python bench/bench_slurm.py [--quick]`` (prints JSON) or ``python -m bench --only slurm``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _shards(run: Path) -> list[str]:
    m = json.loads((run / "manifest.json").read_text())
    return [m["shards"][k]["sha256"] for k in sorted(m["shards"])]


def _row(summary: object, wall: float) -> dict[str, object]:
    s = summary  # a GenerationSummary
    row: dict[str, object] = {
        "workers": s.n_workers, "generated_events": s.generated_events,  # type: ignore[attr-defined]
        "seconds": s.seconds, "showers_per_s": s.showers_per_second,  # type: ignore[attr-defined]
        "overhead_s": s.overhead_seconds, "wall_s": wall,  # type: ignore[attr-defined]
        "end_to_end_showers_per_s": s.generated_events / wall,  # type: ignore[attr-defined]
        # load-independent: showers per CPU second the workers spent, and the CPU share they got
        "showers_per_cpu_s": s.generated_events / sum(s.shard_cpu_seconds),  # type: ignore[attr-defined]
        "cpu_share_per_worker": sum(s.shard_cpu_seconds) / s.seconds / s.n_workers,  # type: ignore[attr-defined]
    }
    if s.startup:  # type: ignore[attr-defined]
        row["submit_s"] = s.startup["submit_s"]  # type: ignore[attr-defined]
        row["first_worker_s"] = s.startup["first_worker_s"]  # type: ignore[attr-defined]
        row["warm_s"] = s.startup.get("warm_s")  # type: ignore[attr-defined]
        row["close_s"] = s.startup.get("close_s")  # type: ignore[attr-defined]
    return row


def run(quick: bool = True) -> dict[str, object]:
    """Return the benchmark numbers (``quick``: 80k showers in 8 shards; full: 400k in 8)."""
    from simcompress.batch import run_generation
    from simcompress.batch.localslurm import LocalSlurm, unavailable_reason

    reason = unavailable_reason()
    if reason:
        return {"skipped": reason}
    n = 80_000 if quick else 400_000
    shard = n // 8
    out: dict[str, object] = {"model": "ds1-photons-gan", "events_per_run": n, "shard_size": shard, "n_shards": 8,
                              "cpu_count": os.cpu_count(), "load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp_s:
        tmp = Path(tmp_s)
        t = time.perf_counter()
        slurm = LocalSlurm(tmp / "slurm").start()
        out["slurm_cluster_start_s"] = time.perf_counter() - t
        old_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(slurm.conf)
        try:
            site = tmp / "site.yaml"
            site.write_text(json.dumps({  # JSON is YAML
                "kind": "slurm", "queue": "debug", "cores": 1, "processes": 1, "memory": "2GB", "jobs": 2,
                "walltime": "00:30:00", "python": sys.executable, "log_directory": str(tmp / "logs"),
                "start_timeout": 300,
            }))
            runs = {"local_2_workers": {"executor": "local", "n_workers": 2},
                    "dask_local_2_workers": {"executor": "dask", "n_workers": 2},
                    "slurm_2_jobs": {"executor": "dask", "cluster": site}}
            hashes = {}
            for key, kw in runs.items():
                t = time.perf_counter()
                s = run_generation("ds1-photons-gan", n, shard, tmp / key, 7, chunk_size=10_000, **kw)  # type: ignore[arg-type]
                out[key] = _row(s, time.perf_counter() - t)
                hashes[key] = _shards(tmp / key)
            out["jobs_submitted"] = slurm.jobs_submitted()
        finally:
            if old_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old_conf
            out["slurm_stop_notes"] = slurm.stop()
    loc, sl = out["local_2_workers"], out["slurm_2_jobs"]
    out["slurm_over_local"] = {
        "generation_phase": sl["showers_per_s"] / loc["showers_per_s"],  # type: ignore[index]
        "per_cpu_second": sl["showers_per_cpu_s"] / loc["showers_per_cpu_s"],  # type: ignore[index]
        "end_to_end": sl["end_to_end_showers_per_s"] / loc["end_to_end_showers_per_s"],  # type: ignore[index]
        "extra_overhead_s": sl["overhead_s"] - loc["overhead_s"],  # type: ignore[index]
    }
    out["identical_shards"] = len({tuple(h) for h in hashes.values()}) == 1
    out["load_average_after"] = os.getloadavg()[0]
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
