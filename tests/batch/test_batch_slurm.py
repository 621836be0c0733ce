"""Batch generation on a real batch system: a single-node Slurm started by the ``slurm`` fixture.

Worker jobs are dask-jobqueue ``SLURMCluster`` jobs submitted with ``sbatch`` to the local
``debug`` partition. The stand-in runs sleep between chunks (``batch_standin.SLEEP_ENV``, set
in the job prologue) so that a run lasts long enough to be cancelled, or to outlive its
walltime, without using CPU; the sleeps do not change the showers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import batch_standin
import pytest
import yaml
from batch_slurm_helpers import slurm_or_skip

from simcompress.batch import MANIFEST_NAME, generate_to_file, run_generation, shard_seed
from simcompress.batch.executors import BatchError
from simcompress.batch.localslurm import LocalSlurm, _alive, _environ, unavailable_reason
from simcompress.batch.worker import PARTIAL_DIR
from simcompress.cli import main

HERE = Path(__file__).resolve().parent
SPEC = batch_standin.SPEC
# stand-in runs: 8 shards of 500 showers, 2 chunks each
N, SHARD, CHUNK = 4000, 500, 250
N_SHARDS = N // SHARD


def _site(path: Path, **over: object) -> Path:
    """A site file for the local cluster; ``prologue`` adds job prologue lines."""
    prologue = list(over.pop("prologue", []))  # type: ignore[call-overload]
    cfg: dict[str, object] = {
        "kind": "slurm", "queue": "debug", "cores": 1, "processes": 1, "memory": "1GB", "jobs": 2,
        "walltime": "00:10:00", "python": sys.executable, "log_directory": str(path.parent / "logs"),
        "death_timeout": 30, "start_timeout": 120,
        "job_prologue": [f"export PYTHONPATH={HERE}${{PYTHONPATH:+:$PYTHONPATH}}", *prologue],
    }
    cfg.update(over)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _manifest(run: Path) -> dict:
    return json.loads((run / MANIFEST_NAME).read_text())


def _checksums(run: Path) -> dict[str, tuple[int, str]]:
    return {k: (v["n_events"], v["sha256"]) for k, v in _manifest(run)["shards"].items()}


def _assert_exact(run: Path, n_shards: int, n_events: int) -> None:
    """Every shard once, exact counts, nothing half-written left."""
    m = _manifest(run)
    assert m["complete"] is True
    assert sorted(m["shards"]) == [f"{i:05d}" for i in range(n_shards)]
    assert sum(s["n_events"] for s in m["shards"].values()) == n_events
    files = sorted(p.name for p in run.iterdir())
    assert files == sorted([MANIFEST_NAME] + [f"shard_{i:05d}.root" for i in range(n_shards)])
    assert not (run / PARTIAL_DIR).exists()


def _no_jobs_left(slurm: LocalSlurm, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while (ids := slurm.job_ids()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return ids


# ---------------------------------------------------------------------------------------------
# the fixture's own machinery
# ---------------------------------------------------------------------------------------------
def test_not_root_is_the_only_skip_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in (unavailable_reason() or "")


@pytest.mark.timeout(60)
def test_local_slurm_stops_exactly_what_it_started(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Start a second throw-away cluster, leave a job running, stop it: no daemon, stepd or job process left."""
    slurm_or_skip()
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="sc-slurm-life-"))
    cluster = LocalSlurm(root, cpus=1, memory_mb=1024).start()
    try:
        assert cluster.node_state() == "idle"
        assert set(cluster.pids) == {"munged", "slurmctld", "slurmd"} and all(map(_alive, cluster.pids.values()))
        job = cluster.run("sbatch", "--parsable", "-o", str(root / "job.out"), "--wrap", "sleep 300").stdout.strip()
        deadline = time.monotonic() + 20
        while cluster.job_info(job).get("JobState") != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cluster.job_info(job)["JobState"] == "RUNNING"
        deadline = time.monotonic() + 10
        while not (procs := cluster._descendants()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert procs, "the running job's processes are found by their environment"
    finally:
        pids = dict(cluster.pids)
        notes = cluster.stop()
    assert notes == []  # scancel ended the job, SIGTERM the daemons
    assert not any(_alive(p) for p in pids.values())
    assert not any(_alive(p) for p in procs) and cluster._descendants() == []
    # the second session's state lives in its folder only
    assert (root / "slurm.conf").is_file() and (root / "log" / "slurmctld.log").is_file()
    assert json.loads((root / "localslurm.json").read_text())["pids"] == {}
    shutil.rmtree(root)


# ---------------------------------------------------------------------------------------------
# generation through `--cluster`
# ---------------------------------------------------------------------------------------------
GAN_ARGS = ["--model", "ds1-photons-gan", "--events", "8000", "--shard-size", "2000", "--seed", "11",
            "--no-progress", "--json"]


@pytest.fixture(scope="module")
def gan_runs(slurm: LocalSlurm, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped GAN, 4 shards of 2,000: once through `generate --cluster` (2 Slurm jobs), once with the
    local executor (process pool)."""
    tmp = tmp_path_factory.mktemp("gan")
    site = _site(tmp / "site.yaml")
    before = slurm.jobs_submitted()
    assert main(["generate", *GAN_ARGS, "--cluster", str(site), "--out", str(tmp / "slurm")]) == 0
    assert slurm.jobs_submitted() - before == 2
    assert _no_jobs_left(slurm) == []  # the jobs are cancelled when the run ends
    run_generation("ds1-photons-gan", 8000, 2000, tmp / "local", 11, executor="local", n_workers=1)
    return {"slurm": tmp / "slurm", "local": tmp / "local", "site": site}


@pytest.mark.timeout(120)
def test_cluster_run_is_identical_to_the_local_executor(gan_runs: dict[str, Path]) -> None:
    _assert_exact(gan_runs["slurm"], 4, 8000)
    assert _checksums(gan_runs["slurm"]) == _checksums(gan_runs["local"])
    m = _manifest(gan_runs["slurm"])
    assert m["history"][-1]["executor"] == "dask-jobqueue slurm, 2 job(s) x 1 worker(s)"
    assert len(m["history"][-1]["batch_jobs"]) == 2


@pytest.mark.timeout(60)
def test_second_run_finds_everything_done_and_submits_no_job(gan_runs: dict[str, Path], slurm: LocalSlurm,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    before = slurm.jobs_submitted()
    assert main(["generate", *GAN_ARGS, "--cluster", str(gan_runs["site"]), "--out", str(gan_runs["slurm"])]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kept_shards"] == 4 and summary["generated_shards"] == 0 and summary["n_workers"] == 0
    assert slurm.jobs_submitted() == before
    assert _manifest(gan_runs["slurm"])["history"][-1]["executor"] == "none (every shard verified)"
    assert _checksums(gan_runs["slurm"]) == _checksums(gan_runs["local"])


@pytest.fixture(scope="module")
def standin_reference(standin_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Each stand-in shard generated in this process from its documented seed, ``shard_seed(root, i)``."""
    tmp = tmp_path_factory.mktemp("standin-ref")
    return {f"{i:05d}": (SHARD, str(generate_to_file(standin_bundle, SHARD, tmp / f"{i}.root", shard_seed(5, i),
                                                     chunk_size=CHUNK, backend=SPEC).sha256))
            for i in range(N_SHARDS)}


@pytest.mark.timeout(120)
def test_scancel_of_one_job_mid_run_loses_and_duplicates_nothing(
        slurm: LocalSlurm, standin_bundle: Path, standin_reference: dict, tmp_path: Path) -> None:
    site = _site(tmp_path / "site.yaml", prologue=[f"export {batch_standin.SLEEP_ENV}=0.4"])
    out = tmp_path / "run"
    seen: dict[str, object] = {}

    loads = standin_bundle / "loads.log"  # the stand-in backend logs the pid of every model load

    def busy_jobs() -> set[str]:
        """Slurm jobs whose Dask worker has loaded the model (is running shard tasks)."""
        pids = {int(x) for x in loads.read_text().split()} if loads.exists() else set()
        return {j for pid in pids if _alive(pid) and (j := _environ(pid).get("SLURM_JOB_ID"))} & set(slurm.job_ids())

    def cancel_one() -> None:
        """Once both jobs' workers are generating and two shards are final, scancel one of the jobs."""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            busy = sorted(busy_jobs())
            done = len(list(out.glob("shard_*.root"))) if out.is_dir() else 0
            if len(busy) == 2 and done >= 2:
                seen.update(job=busy[0], done_at_cancel=done)
                slurm.run("scancel", busy[0])
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=cancel_one, daemon=True)
    watcher.start()
    summary = run_generation(standin_bundle, N, SHARD, out, 5, executor="dask", cluster=site, chunk_size=CHUNK,
                             backend=SPEC)
    watcher.join(5)
    assert "job" in seen, "the run ended before a job could be cancelled"
    assert seen["done_at_cancel"] < N_SHARDS  # type: ignore[operator]
    assert slurm.job_info(str(seen["job"]))["JobState"] == "CANCELLED"
    assert summary.generated_events == N and summary.generated_shards == N_SHARDS
    _assert_exact(out, N_SHARDS, N)
    assert _checksums(out) == standin_reference
    assert _no_jobs_left(slurm) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("over", "slurm_says"), [
    ({"queue": "nope"}, "Invalid partition name specified"),
    ({"memory": "100000GB"}, "Memory specification can not be satisfied"),
    ({"cores": (os.cpu_count() or 1) + 1}, "PartitionConfig"),  # the node has os.cpu_count() CPUs
    ({"python": "/nonexistent/bin/python"}, "/nonexistent/bin/python: No such file or directory"),
], ids=["no-such-partition", "too-much-memory", "too-many-cores", "no-python-on-the-node"])
def test_job_that_cannot_start_is_a_one_line_error(over: dict, slurm_says: str, slurm: LocalSlurm,
                                                   standin_bundle: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(tmp_path / "site.yaml", **over)
    out = tmp_path / "run"
    capsys.readouterr()
    t0 = time.monotonic()
    rc = main(["generate", "--model", str(standin_bundle), "--backend", SPEC, "--events", "1000",
               "--shard-size", "500", "--cluster", str(site), "--out", str(out), "--no-progress"])
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"error: {site}: ") and slurm_says in lines[0], err
    assert took < 30  # not a wait for start_timeout (120 s)
    assert not out.exists()  # nothing written
    assert _no_jobs_left(slurm) == []  # a pending job that can never start is cancelled


@pytest.mark.timeout(200)
def test_walltime_shorter_than_the_run_then_resume_finishes(
        slurm: LocalSlurm, standin_bundle: Path, standin_reference: dict, tmp_path: Path) -> None:
    """One job with a 1-minute walltime (Slurm's smallest) and 8 shards of 15 s: the job is killed at the
    walltime (Slurm checks limits every 30 s, so after 60-90 s), the run stops with a one-line error,
    and the same command, once the shards are fast again, finishes only the remaining shards."""
    flag = tmp_path / "slow"
    flag.touch()
    site = _site(tmp_path / "site.yaml", jobs=1, walltime="00:01:00",
                 prologue=[f"export {batch_standin.SLEEP_ENV}=7.5", f"export {batch_standin.SLOW_FLAG_ENV}={flag}"])
    out = tmp_path / "run"
    t0 = time.monotonic()
    with pytest.raises(BatchError) as err:
        run_generation(standin_bundle, N, SHARD, out, 5, executor="dask", cluster=site, chunk_size=CHUNK,
                       backend=SPEC)
    killed_after = time.monotonic() - t0
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{site}: all 1 slurm job(s) ended before the run finished")
    assert "TIMEOUT" in msg and "run the same command again to resume" in msg
    assert 55 < killed_after < 120
    done = _manifest(out)["shards"]
    assert 0 < len(done) < N_SHARDS
    assert {k: (v["n_events"], v["sha256"]) for k, v in done.items()} == {k: standin_reference[k] for k in done}

    flag.unlink()  # the resumed shards are fast; the command is the same
    summary = run_generation(standin_bundle, N, SHARD, out, 5, executor="dask", cluster=site, chunk_size=CHUNK,
                             backend=SPEC)
    assert summary.kept_shards == len(done) and summary.generated_shards == N_SHARDS - len(done)
    assert summary.generated_events == N - sum(v["n_events"] for v in done.values())
    _assert_exact(out, N_SHARDS, N)
    assert _checksums(out) == standin_reference
    assert _no_jobs_left(slurm) == []


def test_slurm_state_is_only_in_the_fixture_folder(slurm: LocalSlurm) -> None:
    assert os.environ["SLURM_CONF"] == str(slurm.conf)
    assert str(slurm.socket).startswith(str(slurm.root))
    assert subprocess.run(["munge", "-n", "-S", str(slurm.socket)], capture_output=True).returncode == 0
