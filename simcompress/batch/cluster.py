"""Batch-system clusters for Dask workers, described by a small YAML file.

``configs/cluster/<site>.yaml`` holds a :class:`ClusterConfig`; :func:`make_cluster`
turns it into a dask-jobqueue cluster (Slurm, HTCondor, PBS, LSF or SGE) and
:func:`job_script` prints the job script that would be submitted, without any
batch system present.

The worker command in the job script starts the Python given by ``python``
(default ``python3`` from the job's ``PATH``, usually set by ``job_prologue``),
not the submitting machine's interpreter: dask-jobqueue's own default is the
client's ``sys.executable``, a path that rarely exists on batch nodes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator

from .._config import StrictModel, load_yaml
from ..errors import ConfigError

__all__ = ["CLUSTER_KINDS", "ClusterConfig", "job_script", "load_cluster_config", "make_cluster"]

CLUSTER_KINDS = ("slurm", "htcondor", "pbs", "lsf", "sge")


class ClusterConfig(StrictModel):
    """One batch site: where and how Dask worker jobs run.

    Attributes:
        kind: batch system: slurm, htcondor, pbs, lsf or sge.
        queue: partition/queue name (Slurm ``-p``, PBS/LSF/SGE queue; ignored by HTCondor).
        account: account/project charged (Slurm ``-A``, PBS/LSF/SGE project).
        cores: cores per job.
        processes: Dask worker processes per job (each gets ``cores // processes`` threads).
        memory: memory per job, e.g. ``"16GB"``; split across the processes.
        walltime: job time limit, ``HH:MM:SS`` (HTCondor: use ``extra_directives``, e.g. ``+MaxRuntime = 14400``).
        disk: scratch disk per job (required by HTCondor), e.g. ``"10GB"``.
        python: Python on the batch nodes that has simcompress installed.
        job_prologue: shell lines run before the worker starts (module load, venv activation).
        jobs: number of jobs submitted (``cluster.scale(jobs=...)``).
        extra_directives: extra scheduler directives, e.g. ``"--gres=gpu:1"`` (Slurm) or
            ``"+JobFlavour = \\"workday\\""`` (HTCondor, ``key = value``).
        worker_extra_args: extra ``dask worker`` arguments, e.g. ``["--resources", "GPU=1"]``.
        torch_threads: torch threads per generation task (default ``cores // processes // worker threads``, i.e. 1).
        local_directory: worker scratch directory on the node.
        log_directory: where the batch system writes job logs.
        interface: network interface the scheduler and workers listen on (e.g. ``ib0``).
        scheduler_port: fixed scheduler port (open it in the firewall of the submit node).
        death_timeout: seconds a worker waits for an unreachable scheduler before exiting.
        start_timeout: seconds a run waits without any connected worker (jobs queued or starting;
            mid-run, all workers gone while jobs are still queued) before it gives up. Jobs the
            batch system refuses, Slurm jobs that can never start and jobs that all ended end
            the run at once, whatever this says.
    """

    kind: Literal["slurm", "htcondor", "pbs", "lsf", "sge"]
    queue: str | None = None
    account: str | None = None
    cores: int = Field(1, ge=1)
    processes: int = Field(1, ge=1)
    memory: str = "4GB"
    walltime: str | None = None
    disk: str | None = None
    python: str = "python3"
    job_prologue: tuple[str, ...] = ()
    jobs: int = Field(1, ge=1)
    extra_directives: tuple[str, ...] = ()
    worker_extra_args: tuple[str, ...] = ()
    torch_threads: int | None = Field(None, ge=1)
    local_directory: str | None = None
    log_directory: str | None = None
    interface: str | None = None
    scheduler_port: int | None = Field(None, ge=0, le=65535)
    death_timeout: int = Field(60, ge=1)
    start_timeout: int = Field(3600, ge=1)
    _source: str | None = PrivateAttr(None)

    @property
    def source(self) -> str:
        """The site file this config came from (for error messages), or a description."""
        return self._source or f"cluster config ({self.kind})"

    @field_validator("memory", "disk")
    @classmethod
    def _bytes(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from dask.utils import parse_bytes

        try:
            parse_bytes(v)
        except (ValueError, TypeError):
            msg = f"not a size like '16GB': {v!r}"
            raise ValueError(msg) from None
        return v

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = v.split(":")
        if not (1 <= len(parts) <= 3 and all(p.isdigit() for p in parts)):
            msg = f"walltime must look like HH:MM:SS, got {v!r}"
            raise ValueError(msg)
        return v

    def model_post_init(self, _context: Any) -> None:
        if self.processes > self.cores:
            msg = f"processes ({self.processes}) must not exceed cores ({self.cores})"
            raise ValueError(msg)
        if self.kind == "htcondor" and self.disk is None:
            msg = "htcondor needs 'disk' (scratch disk per job, e.g. '10GB')"
            raise ValueError(msg)
        if self.kind == "htcondor":
            for d in self.extra_directives:
                if not re.match(r"^\s*\+?[A-Za-z_][\w.]*\s*=", d):
                    msg = f"htcondor extra_directives must be 'key = value', got {d!r}"
                    raise ValueError(msg)

    @property
    def threads_per_worker(self) -> int:
        return max(1, self.cores // self.processes)

    @property
    def task_torch_threads(self) -> int:
        # every worker thread runs its own task: torch threads must not multiply with them
        return self.torch_threads or 1


def load_cluster_config(path: str | os.PathLike[str]) -> ClusterConfig:
    """Load ``configs/cluster/<site>.yaml``; unknown keys and bad values are one-line :class:`ConfigError`."""
    try:
        cfg = load_yaml(ClusterConfig, path)
    except ValueError as err:  # model_post_init problems arrive as pydantic errors too
        if isinstance(err, ConfigError):
            raise
        msg = f"{path}: {err}"
        raise ConfigError(msg) from None
    cfg._source = str(path)
    return cfg


def _cluster_kwargs(cfg: ClusterConfig) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "cores": cfg.cores,
        "processes": cfg.processes,
        "memory": cfg.memory,
        "python": cfg.python,
        "job_script_prologue": list(cfg.job_prologue),
        "worker_extra_args": list(cfg.worker_extra_args),
        "death_timeout": cfg.death_timeout,
        "job_name": "simcompress-gen",
    }
    if cfg.local_directory:
        kw["local_directory"] = cfg.local_directory
    if cfg.log_directory:
        kw["log_directory"] = cfg.log_directory
    if cfg.interface:
        kw["interface"] = cfg.interface
    if cfg.scheduler_port is not None:
        kw["scheduler_options"] = {"port": cfg.scheduler_port, **({"interface": cfg.interface} if cfg.interface else {})}
    if cfg.kind == "htcondor":
        directives: dict[str, str] = {}
        for d in cfg.extra_directives:
            key, _, value = d.partition("=")
            directives[key.strip()] = value.strip()
        kw["job_extra_directives"] = directives
        kw["disk"] = cfg.disk
    else:
        kw["job_extra_directives"] = list(cfg.extra_directives)
        if cfg.queue:
            kw["queue"] = cfg.queue
        if cfg.account:
            kw["account" if cfg.kind in ("slurm", "pbs") else "project"] = cfg.account
        if cfg.walltime:
            kw["walltime"] = cfg.walltime
    return kw


def _cluster_class(kind: str) -> type:
    import dask_jobqueue

    return {
        "slurm": dask_jobqueue.SLURMCluster,
        "htcondor": dask_jobqueue.HTCondorCluster,
        "pbs": dask_jobqueue.PBSCluster,
        "lsf": dask_jobqueue.LSFCluster,
        "sge": dask_jobqueue.SGECluster,
    }[kind]


def make_cluster(cfg: ClusterConfig, **extra: Any) -> Any:
    """Build (but do not scale) the dask-jobqueue cluster of ``cfg``."""
    cls = _cluster_class(cfg.kind)
    kw = {**_cluster_kwargs(cfg), **extra}
    try:
        return cls(**kw)
    except (ValueError, TypeError) as err:
        msg = f"cluster config ({cfg.kind}): {err}"
        raise ConfigError(msg) from None


def job_script(cfg: ClusterConfig | str | os.PathLike[str]) -> str:
    """The job script dask-jobqueue would submit for ``cfg``; needs no batch system.

    The scheduler address in the script is shown as ``tcp://<scheduler-address>``:
    the real run starts its own scheduler and fills in its address.
    """
    if not isinstance(cfg, ClusterConfig):
        cfg = load_cluster_config(Path(cfg))
    import logging

    import dask_jobqueue  # noqa: F401 - loads distributed's config defaults

    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # a throw-away scheduler starts and stops just to render the script
    try:
        cluster = make_cluster(cfg, scheduler_options={"dashboard": False, "dashboard_address": ":0", "port": 0,
                                                       **({"interface": cfg.interface} if cfg.interface else {})})
        try:
            address = cluster.scheduler_address
            return str(cluster.job_script()).replace(address, "tcp://<scheduler-address>")
        finally:
            cluster.close()
    finally:
        quiet.setLevel(level)
