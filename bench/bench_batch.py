"""Benchmark of batch generation: showers/s with 1 and 2 Dask workers in the same run, and the scaling.

* ``in_process``: :func:`simcompress.batch.generate_to_file` in this process (no workers), the baseline.
* ``dask_1_worker`` / ``dask_2_workers``: :func:`simcompress.batch.run_generation` on a Dask
  ``LocalCluster`` (processes, 1 thread each, ``torch.set_num_threads(1)`` per task), same root
  seed, same shards; the two runs must give identical shard content hashes.
  ``showers_per_s`` counts the generation phase (workers started; model load, generation, ZSTD
  ROOT writing and renaming included). ``scaling_efficiency = rate(2) / (2 * rate(1))``.
* ``cpu_share_per_worker``: CPU seconds the workers got per wall second, per worker. On a shared
  machine (``load_average_*``) it shows whether a poor scaling comes from missing cores;
  ``showers_per_cpu_s`` and ``cpu_efficiency_2_over_1`` compare the CPU cost per shower, which
  does not depend on the machine's other load.
* ``ten_million``: the command that produces 10 million ds1-photons showers on this machine,
  with the time and disk space extrapolated from the 2-worker rate. ``--ten-million`` runs it
  for real (about 7 GB of disk) and reports the measured wall time.

The model is the shipped ``ds1-photons-gan`` bundle; while the zoo is not shipped, a bundle
with the same architecture and random weights (same cost per shower) stands in, and the
result says which one was used.

Usage: ``python bench/bench_batch.py [--quick] [--ten-million]`` (prints JSON) or
``python -m bench --only batch``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEN_MILLION_COMMAND = (
    "simcompress generate --model ds1-photons-gan --events 10_000_000 --shard-size 100_000 "
    "--energies ds1 --seed 7 --out runs/ds1-photons-10M/ --executor dask --workers 2"
)


def _model(tmp: Path) -> tuple[str, str]:
    from simcompress.generators import zoo_names

    if "ds1-photons-gan" in zoo_names():
        return "ds1-photons-gan", "zoo:ds1-photons-gan"
    import torch

    from simcompress.generators import GANGenerator, save_generator
    from simcompress.showers import Geometry

    torch.manual_seed(0)
    gen = GANGenerator(Geometry.from_name("ds1-photons"), latent_dim=64, hidden=[256, 512], threshold_mev=0.001)
    path = save_generator(gen, tmp / "gan-arch", card={"note": "random weights, ds1-photons-gan architecture"})
    return str(path), "random-weight GAN, ds1-photons-gan architecture (zoo bundle not shipped)"


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("shard_*"))


def run(quick: bool = True) -> dict[str, object]:
    """Return the benchmark numbers (``quick``: 80k showers per run instead of 400k)."""
    import torch

    from simcompress.batch import generate_to_file, run_generation

    n = 80_000 if quick else 400_000
    shard = n // 8
    out: dict[str, object] = {"events_per_run": n, "shard_size": shard, "n_shards": 8, "cpu_count": os.cpu_count(),
                              "load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp_s:
        tmp = Path(tmp_s)
        ref, label = _model(tmp)
        out["model"] = label
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one = generate_to_file(ref, n // 4, tmp / "one.root", 1, chunk_size=10_000)
        finally:
            torch.set_num_threads(threads)
        out["in_process"] = {"events": one.n_events, "seconds": one.seconds, "showers_per_s": one.showers_per_second,
                             "torch_threads": 1}
        hashes = {}
        for w in (1, 2):
            s = run_generation(ref, n, shard, tmp / f"w{w}", 7, executor="dask", n_workers=w, chunk_size=10_000)
            manifest = json.loads((tmp / f"w{w}" / "manifest.json").read_text())
            hashes[w] = [manifest["shards"][k]["sha256"] for k in sorted(manifest["shards"])]
            key = "dask_1_worker" if w == 1 else "dask_2_workers"
            out[key] = {"workers": s.n_workers, "seconds": s.seconds, "showers_per_s": s.showers_per_second,
                        "overhead_seconds": s.overhead_seconds,
                        "mean_shard_seconds": sum(s.shard_seconds) / len(s.shard_seconds),
                        "mean_shard_cpu_seconds": sum(s.shard_cpu_seconds) / len(s.shard_cpu_seconds),
                        # CPU time the workers got per wall second, per worker: < 1 means the machine
                        # did not give each worker a core (other load), not that the engine serialised
                        "cpu_share_per_worker": sum(s.shard_cpu_seconds) / s.seconds / s.n_workers,
                        # showers per CPU second of the workers: independent of how busy the machine is
                        "showers_per_cpu_s": n / sum(s.shard_cpu_seconds)}
            out["bytes_per_shower"] = _dir_bytes(tmp / f"w{w}") / n
        r1 = out["dask_1_worker"]["showers_per_s"]  # type: ignore[index]
        r2 = out["dask_2_workers"]["showers_per_s"]  # type: ignore[index]
        out["speedup_2_over_1"] = r2 / r1
        out["scaling_efficiency"] = r2 / (2 * r1)
        out["identical_shards_1_vs_2_workers"] = hashes[1] == hashes[2]
        # CPU cost per shower with 2 workers relative to 1 (1.0 = no parallel overhead in CPU terms)
        out["cpu_efficiency_2_over_1"] = (out["dask_2_workers"]["showers_per_cpu_s"]  # type: ignore[index]
                                          / out["dask_1_worker"]["showers_per_cpu_s"])  # type: ignore[index]
    out["ten_million"] = {
        "command": TEN_MILLION_COMMAND,
        "estimated_minutes_at_2_workers": 1e7 / r2 / 60,
        "estimated_disk_gb": 1e7 * float(out["bytes_per_shower"]) / 1e9,  # type: ignore[arg-type]
    }
    out["load_average_after"] = os.getloadavg()[0]
    return out


def ten_million(out_dir: str = "runs/ds1-photons-10M/") -> dict[str, object]:  # pragma: no cover - 10+ minutes
    """Run the 10-million-shower command for real and time it (resumes if interrupted)."""
    cmd = TEN_MILLION_COMMAND.replace("runs/ds1-photons-10M/", out_dir).split()
    cmd = [str(Path(sys.executable).with_name("simcompress")), *cmd[1:], "--no-progress", "--json"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    return {"command": " ".join(cmd), "wall_seconds": time.perf_counter() - t, "summary": summary}


if __name__ == "__main__":
    args = sys.argv[1:]
    result = run(quick="--quick" in args)
    if "--ten-million" in args:
        result["ten_million_measured"] = ten_million()
    print(json.dumps(result, indent=2))
