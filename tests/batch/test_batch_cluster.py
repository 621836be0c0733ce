"""Batch-site configs and dask-jobqueue job scripts, with no batch system installed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from simcompress.batch import ClusterConfig, job_script, load_cluster_config
from simcompress.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "cluster"


def test_slurm_example_job_script() -> None:
    cfg = load_cluster_config(CONFIGS / "slurm-example.yaml")
    script = job_script(cfg)
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for directive in ("#SBATCH -p short", "#SBATCH -A calo", "#SBATCH --cpus-per-task=8", "#SBATCH -t 04:00:00"):
        assert directive in lines
    assert "source $HOME/venvs/simcompress/bin/activate" in lines
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert worker.startswith("python3 -m distributed.cli.dask_worker tcp://<scheduler-address> ")
    assert "--nworkers 8" in worker and "--nthreads 1" in worker and "--death-timeout 120" in worker
    assert sys.executable not in script  # not the submitting machine's interpreter


def test_htcondor_example_submit_file() -> None:
    script = job_script(CONFIGS / "htcondor-example.yaml")
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env condor_submit"
    assert "MY.DaskWorkerCores = 4" in lines and "MY.DaskWorkerMemory = 8000000000" in lines
    assert "MY.DaskWorkerDisk = 10000000000" in lines
    assert '+JobFlavour = "workday"' in lines
    args = next(line for line in lines if line.startswith("Arguments"))
    assert "source /cvmfs/sft.cern.ch/lcg/views/" in args and "python3 -m distributed.cli.dask_worker" in args
    assert "--nworkers 4" in args and sys.executable not in script


@pytest.mark.parametrize(("kind", "needle"), [("pbs", "#PBS -q gpu"), ("lsf", "#BSUB -q gpu"), ("sge", "#$ -q gpu")])
def test_other_batch_systems(kind: str, needle: str) -> None:
    cfg = ClusterConfig(kind=kind, queue="gpu", account="calo", cores=2, processes=2, memory="4GB",
                        walltime="01:00:00", python="/opt/envs/sc/bin/python")
    script = job_script(cfg)
    assert needle in script
    assert "/opt/envs/sc/bin/python -m distributed.cli.dask_worker" in script


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("kind: slurm\ncpus: 4\n", r"cpus: unknown key 'cpus'.*cores"),
        ("kind: kubernetes\n", r"kind: Input should be 'slurm'"),
        ("kind: slurm\ncores: 2\nprocesses: 4\n", r"processes \(4\) must not exceed cores \(2\)"),
        ("kind: htcondor\ncores: 2\n", r"htcondor needs 'disk'"),
        ("kind: slurm\nmemory: lots\n", r"memory: .*not a size"),
        ("kind: slurm\nwalltime: 4h\n", r"walltime must look like HH:MM:SS"),
        ("kind: htcondor\ndisk: 1GB\nextra_directives: ['--gres=gpu:1']\n", r"key = value"),
        ("- kind: slurm\n", r"expected a mapping"),
    ],
)
def test_bad_cluster_configs(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_cluster_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_threads_per_task_never_multiply() -> None:
    cfg = ClusterConfig(kind="slurm", cores=8, processes=2)
    assert cfg.threads_per_worker == 4 and cfg.task_torch_threads == 1
    assert ClusterConfig(kind="slurm", cores=8, processes=2, torch_threads=4).task_torch_threads == 4


def test_local_slurm_site_file_targets_the_debug_partition_and_the_venv() -> None:
    cfg = load_cluster_config(CONFIGS / "slurm-local.yaml")
    assert cfg.source == str(CONFIGS / "slurm-local.yaml") and cfg.start_timeout == 300
    lines = job_script(cfg).splitlines()
    assert "#SBATCH -p debug" in lines and "#SBATCH --cpus-per-task=1" in lines and "#SBATCH --mem=2G" in lines
    assert any(line.startswith(".venv/bin/python -m distributed.cli.dask_worker ") for line in lines)


def test_submission_refusal_keeps_the_batch_systems_words() -> None:
    from simcompress.batch.jobs import _submission_message

    err = RuntimeError("Command exited with non-zero exit code.\nExit code: 1\nCommand:\nsbatch /tmp/x.sh\nstdout:\n\n"
                       "stderr:\nsbatch: error: invalid partition specified: nope\n"
                       "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert _submission_message(err) == ("sbatch: error: invalid partition specified: nope; "
                                        "sbatch: error: Batch job submission failed: Invalid partition name specified")


def test_no_worker_within_start_timeout_is_an_error_on_any_batch_system() -> None:
    """Without job states to read (HTCondor here), only start_timeout ends the wait, with a one-line error."""
    import time
    from types import SimpleNamespace

    from simcompress.batch.executors import BatchError
    from simcompress.batch.jobs import JobWatch

    cfg = ClusterConfig(kind="htcondor", disk="1GB", start_timeout=1)
    watch = JobWatch(SimpleNamespace(workers={"0": SimpleNamespace(job_id="17")}), cfg, poll_s=0.1)
    watch.check(0, "start")  # the first call starts the clock
    watch.check(1, "run")  # a worker resets it
    watch.check(0, "run")
    time.sleep(1.1)
    with pytest.raises(BatchError, match=r"no Dask worker reconnected after the workers left within start_timeout=1 s"
                                         r"; 2 of 5 shards; raise start_timeout") as err:
        watch.check(0, "run", "2 of 5 shards")
    assert "\n" not in str(err.value) and str(err.value).startswith("cluster config (htcondor): ")
