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
