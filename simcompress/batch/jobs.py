"""Submitting dask-jobqueue worker jobs and watching them, so a run never waits forever.

* :func:`submit_jobs` submits the site's jobs synchronously: a refused submission (a
  partition that does not exist, more memory than any node has) is a one-line
  :class:`~simcompress.errors.ConfigError` naming the site file and the batch system's
  own message, raised before anything is written.
* :class:`JobWatch` is asked whenever no worker is connected. On Slurm it reads the
  jobs' states (``squeue --states=all``): a job that can never start (pending for
  ``PartitionConfig``, ``PartitionTimeLimit``, ...) or jobs that all ended (walltime,
  ``scancel``, a worker that failed to start) end the run with the job ids, states and
  reasons; on every batch system, ``start_timeout`` seconds without a worker do.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .cluster import ClusterConfig
from .executors import BatchError

__all__ = ["ALIVE_STATES", "HOPELESS_REASONS", "JobWatch", "submit_jobs"]

log = logging.getLogger(__name__)

#: Slurm pending reasons that no amount of waiting resolves (the request exceeds what the
#: partition, its nodes or the account allow).
HOPELESS_REASONS = frozenset({
    "PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount",
    "InvalidQOS", "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob", "QOSMaxWallDurationPerJobLimit",
    "DependencyNeverSatisfied", "AssocMaxWallDurationPerJobLimit", "AssocMaxCpuPerJobLimit",
})
#: Slurm job states in which the job may still run a worker.
ALIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                          "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"})


def _submission_message(err: BaseException) -> str:
    """The batch system's own words from dask-jobqueue's RuntimeError (its stderr, else stdout)."""
    text = str(err)
    if "stderr:" in text:
        body = text.split("stderr:", 1)[1]
        if not body.strip() and "stdout:" in text:
            body = text.split("stdout:", 1)[1].split("stderr:", 1)[0]
    else:
        body = text
    lines: list[str] = []
    for line in body.splitlines():
        line = line.strip()
        if line and line not in lines:
            lines.append(line)
    return "; ".join(lines) or type(err).__name__


def submit_jobs(jq: Any, cfg: ClusterConfig) -> list[str]:
    """Submit ``cfg.jobs`` worker jobs now and return their ids; refusals are one-line ConfigErrors."""
    submit = str(getattr(jq._dummy_job, "submit_command", "") or "").split()
    if submit and shutil.which(submit[0]) is None:
        msg = (
            f"{cfg.source}: {submit[0]} not found on PATH; a {cfg.kind} site needs its submit command "
                          "(run on a submit node of the batch system)"
        )
        raise ConfigError(msg)
    while len(jq.worker_spec) < cfg.jobs:
        jq.worker_spec.update(jq.new_worker_spec())
    try:
        jq.sync(jq._correct_state)
    except (RuntimeError, ValueError, OSError) as err:
        # jobs never submitted have nothing to cancel; the cluster's close() would trip over them
        from distributed.core import Status

        for name in [n for n, j in jq.workers.items() if not getattr(j, "job_id", None)]:
            jq.workers.pop(name).status = Status.failed
            jq.worker_spec.pop(name, None)
        msg = f"{cfg.source}: {cfg.kind} job submission failed: {_submission_message(err)}"
        raise ConfigError(msg) from None
    return [str(j.job_id) for j in jq.workers.values() if getattr(j, "job_id", None)]


def _expand_filename(pattern: str, job_id: str, info: dict[str, str]) -> str:
    """Slurm's ``%j``-style placeholders in an output file name (``scontrol`` shows them unexpanded)."""
    values = {"j": job_id, "J": job_id, "A": info.get("ArrayJobId", job_id), "a": info.get("ArrayTaskId", ""),
              "x": info.get("JobName", ""), "u": info.get("UserId", "").split("(")[0], "N": info.get("BatchHost", ""),
              "%": "%"}
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern) and pattern[i + 1] in values:
            out.append(values[pattern[i + 1]])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


class JobWatch:
    """Decides, while no worker is connected, whether waiting can still help."""

    def __init__(self, jq: Any, cfg: ClusterConfig, poll_s: float = 1.0) -> None:
        self.jq = jq
        self.cfg = cfg
        self.poll_s = poll_s
        self.no_worker_since: float | None = None
        self._last_query = 0.0

    def job_ids(self) -> list[str]:
        return [str(j.job_id) for j in list(self.jq.workers.values()) if getattr(j, "job_id", None)]

    # ---- Slurm ------------------------------------------------------------------------
    def states(self) -> dict[str, tuple[str, str]] | None:
        """``{job id: (state, reason)}`` on Slurm, ``None`` elsewhere or when ``squeue`` cannot answer."""
        if self.cfg.kind != "slurm" or shutil.which("squeue") is None:
            return None
        ids = self.job_ids()
        if not ids:
            return {}
        try:
            proc = subprocess.run(["squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}", "--format=%i|%T|%r"],
                                  check=False, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        found: dict[str, tuple[str, str]] = {}
        if proc.returncode == 0:
            for line in proc.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 3:
                    found[parts[0]] = (parts[1], parts[2])
        elif "Invalid job id" not in proc.stderr:
            return None
        # jobs the controller has already forgotten have ended
        return {i: found.get(i, ("ENDED", "no longer known to the controller")) for i in ids}

    def _why_failed(self, job_id: str) -> str:
        """The last line of a failed job's error file (e.g. the worker's Python not found)."""
        try:
            out = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], capture_output=True, text=True,
                                 check=False, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
        info = dict(f.split("=", 1) for f in out.split() if "=" in f)
        bits = [f"exit {info['ExitCode']}"] if info.get("ExitCode", "0:0") != "0:0" else []
        for key in ("StdErr", "StdOut"):
            path = Path(_expand_filename(info.get(key, ""), job_id, info))
            if path.is_file():
                lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
                if lines:
                    bits.append(f"{path}: {lines[-1][:200]}")
                    break
        return ", ".join(bits)

    @staticmethod
    def _describe(states: dict[str, tuple[str, str]]) -> str:
        return ", ".join(f"job {i} {s}" + (f" ({r})" if r and r != "None" else "") for i, (s, r) in states.items())

    # ---- the decision ---------------------------------------------------------------------
    def check(self, n_workers: int, phase: str, progress: str = "") -> None:
        """Raise when waiting for workers cannot help; call it every ``poll_s`` seconds.

        Arguments:
            n_workers: workers connected now.
            phase: ``"start"`` (no worker has connected yet) or ``"run"``.
            progress: e.g. ``"3 of 8 shards finished"``, added to a run-phase error.
        """
        now = time.monotonic()
        if n_workers > 0:
            self.no_worker_since = None
            return
        if self.no_worker_since is None:
            self.no_worker_since = now
        src = self.cfg.source
        states = None
        if now - self._last_query >= self.poll_s:
            self._last_query = now
            states = self.states()
        if states:
            hopeless = {i: sr for i, sr in states.items() if sr[0] == "PENDING" and sr[1] in HOPELESS_REASONS}
            if hopeless:
                msg = (
                    f"{src}: {self.cfg.kind} job(s) can never start: {self._describe(hopeless)}; "
                                  "ask for less (cores, memory, walltime) or another queue"
                )
                raise ConfigError(msg)
            if all(s not in ALIVE_STATES for s, _ in states.values()):
                detail = self._describe(states)
                failed = [i for i, (s, _) in states.items() if s in ("FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL")]
                if failed:
                    why = self._why_failed(failed[0])
                    detail += f"; job {failed[0]}: {why}" if why else ""
                if phase == "start":
                    msg = (
                        f"{src}: all {len(states)} {self.cfg.kind} job(s) ended before a Dask worker "
                                      f"connected: {detail}"
                    )
                    raise ConfigError(msg)
                msg = (
                    f"{src}: all {len(states)} {self.cfg.kind} job(s) ended before the run finished "
                                 f"({detail}){'; ' + progress if progress else ''}; finished shards are kept: "
                                 "run the same command again to resume"
                )
                raise BatchError(msg)
        waited = now - self.no_worker_since
        if waited > self.cfg.start_timeout:
            what = "connected" if phase == "start" else "reconnected after the workers left"
            detail = f": {self._describe(states)}" if states else ""
            msg = (
                f"{src}: no Dask worker {what} within start_timeout={self.cfg.start_timeout} s{detail}"
                             f"{'; ' + progress if progress else ''}; raise start_timeout or check the queue"
            )
            raise BatchError(msg)

    def wait_first_worker(self, client: Any) -> float:
        """Block until one worker is connected (or :meth:`check` gives up); returns the seconds waited."""
        t0 = time.monotonic()
        while True:
            n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
            if n > 0:
                return time.monotonic() - t0
            self.check(n, "start")
            time.sleep(self.poll_s / 4)
