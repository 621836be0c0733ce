"""A throw-away single-node Slurm cluster in one folder: munged, slurmctld and slurmd.

Used by the Slurm tests (``tests/batch/test_batch_slurm.py``) and by the "try it on your
laptop" section of ``docs/batch.md``. Everything lives under one folder: a private munge
key and socket, ``slurm.conf`` (one node with this machine's CPUs, one partition
``debug``, ``proctrack/linuxproc``, ``task/none``, ``select/cons_tres``, free ports), the
state and spool folders, the daemons' logs and ``localslurm.json`` with their process
ids. Nothing outside the folder is touched; the daemons run in the foreground of their own
sessions, so their process ids are known exactly, and :meth:`LocalSlurm.stop` cancels the
jobs, stops exactly those daemons, kills any job process they left behind and removes
nothing else. Needs Debian's ``slurm-wlm`` and ``munge`` and root (the daemons run as
``SlurmUser=root``).

Command line (what ``docs/batch.md`` shows)::

    python -m simcompress.batch.localslurm start --dir /tmp/sc-slurm   # prints: export SLURM_CONF=...
    python -m simcompress.batch.localslurm status --dir /tmp/sc-slurm
    python -m simcompress.batch.localslurm stop --dir /tmp/sc-slurm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .._atomic import atomic_path, write_text_atomic
from ..errors import ConfigError, SimcompressError

__all__ = ["TOOLS", "LocalSlurm", "LocalSlurmError", "missing_tools", "unavailable_reason"]

#: programs the local cluster needs (Debian packages slurm-wlm and munge)
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel", "scontrol", "sdiag")
STATE_FILE = "localslurm.json"
PARTITION = "debug"
_DAEMONS = ("munged", "slurmctld", "slurmd")  # start order; stopped in reverse


class LocalSlurmError(SimcompressError, RuntimeError):
    """The local Slurm cluster could not be started or stopped."""


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def unavailable_reason() -> str | None:
    """Why a local Slurm cannot run here (``None`` when it can)."""
    if os.geteuid() != 0:
        return (f"a local Slurm needs root (slurmd runs jobs as SlurmUser=root); running as uid {os.geteuid()}"
                + (f", and {', '.join(missing_tools())} missing (Debian slurm-wlm, munge)" if missing_tools() else ""))
    if missing_tools():
        return f"{', '.join(missing_tools())} not on PATH: install Debian's slurm-wlm and munge (make slurm-deps)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    msg = "/proc/meminfo has no MemTotal"
    raise LocalSlurmError(msg)  # pragma: no cover


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has exited


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


class LocalSlurm:
    """A single-node Slurm cluster under ``root``; ``start()``, use ``env``/``run()``, ``stop()``.

    Arguments:
        root: folder for everything (created; must be empty or a stopped cluster's folder).
        cpus: CPUs of the node (default: this machine's count).
        memory_mb: ``RealMemory`` of the node (default: 80 % of this machine's memory).
    """

    def __init__(self, root: str | os.PathLike[str], *, cpus: int | None = None, memory_mb: int | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge" / "munge.socket"
        self.node = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb or int(_mem_total_mb() * 0.8)
        self.pids: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: float | None = None

    # ---- client side ---------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """Environment for Slurm client commands (``sbatch``, ``squeue``, dask-jobqueue): ``SLURM_CONF``."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster."""
        proc = subprocess.run(list(cmd), check=False, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            msg = f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}"
            raise LocalSlurmError(msg)
        return proc

    def node_state(self) -> str:
        proc = self.run("sinfo", "--noheader", "--nodes", self.node, "--format=%T", check=False, timeout=10)
        return proc.stdout.strip() if proc.returncode == 0 else f"unreachable ({proc.stderr.strip()[:200]})"

    def jobs_submitted(self) -> int:
        """Jobs submitted to this slurmctld since it started (``sdiag``)."""
        out = self.run("sdiag").stdout
        for line in out.splitlines():
            if line.strip().startswith("Jobs submitted:"):
                return int(line.split(":", 1)[1])
        msg = f"sdiag printed no 'Jobs submitted' line: {out[:200]!r}"
        raise LocalSlurmError(msg)

    def job_ids(self) -> list[str]:
        """Jobs the controller still knows of that have not ended (pending, running, completing)."""
        out = self.run("squeue", "--noheader", "--format=%i").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Reason, ExitCode, StdErr, ...)."""
        out = self.run("scontrol", "--oneliner", "show", "job", str(job_id)).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    # ---- configuration ---------------------------------------------------------------
    def _write_config(self) -> None:
        r = self.root
        for sub in ("munge", "state", "spool", "log"):
            shutil.rmtree(r / sub, ignore_errors=True)  # a fresh cluster: no state of an earlier one
            (r / sub).mkdir(parents=True)
        key = r / "munge" / "munge.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(1024))
        (r / "munge").chmod(0o755)  # the socket's folder must be searchable by every client
        lines = [
            "# written by simcompress.batch.localslurm: a throw-away single-node cluster",
            "ClusterName=sclocal",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=512",
            "ReturnToService=2",
            "MpiDefault=none",
            "KillWait=2",  # seconds between SIGTERM and SIGKILL at walltime or scancel
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        with atomic_path(self.conf, fsync=False) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
            tmp.chmod(0o644)  # read by every Slurm client and daemon

    # ---- daemons ---------------------------------------------------------------------
    def _command(self, name: str) -> list[str]:
        m = self.root / "munge"
        return {
            "munged": ["munged", "--foreground", "--force", f"--socket={self.socket}", f"--key-file={m / 'munge.key'}",
                       f"--pid-file={m / 'munged.pid'}", f"--seed-file={m / 'munged.seed'}",
                       f"--log-file={self.root / 'log' / 'munged.log'}"],
            "slurmctld": ["slurmctld", "-D", "-f", str(self.conf)],
            "slurmd": ["slurmd", "-D", "-f", str(self.conf), "-N", self.node],
        }[name]

    def _spawn(self, name: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 - handed to the child
        env = {**self.env, "SIMCOMPRESS_LOCALSLURM": str(self.root)}  # marks the daemons' descendants
        try:
            proc = subprocess.Popen(self._command(name), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, cwd=self.root, start_new_session=True)
        finally:
            log.close()
        self._procs[name] = proc
        self.pids[name] = proc.pid
        self._save()

    def _save(self) -> None:
        write_text_atomic(self.root / STATE_FILE, json.dumps({"conf": str(self.conf), "node": self.node, "pids": self.pids,
                                                              "started_at": self.started_at}, indent=1))

    def _tail(self, name: str, n: int = 3) -> str:
        lines: list[str] = []
        for f in (self.root / "log" / f"{name}.out", self.root / "log" / f"{name}.log"):
            if f.is_file():
                lines += [ln for ln in f.read_text(errors="replace").splitlines() if ln.strip()]
        return " | ".join(lines[-n:]) or "no log output"

    def _check_running(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                msg = f"{name} exited with {proc.returncode} during start-up: {self._tail(name)}"
                raise LocalSlurmError(msg)

    def start(self, timeout: float = 60) -> LocalSlurm:
        """Write the config, start munged, slurmctld and slurmd, and wait until the node is idle."""
        reason = unavailable_reason()
        if reason:
            raise LocalSlurmError(reason)
        if (self.root / STATE_FILE).exists() and any(_alive(p) for p in self._load_pids()):
            msg = f"{self.root}: a local Slurm from this folder is still running; stop it first"
            raise LocalSlurmError(msg)
        self.root.mkdir(parents=True, exist_ok=True)
        self.started_at = time.time()
        self._write_config()
        try:
            deadline = time.monotonic() + timeout
            self._spawn("munged")
            while not self.socket.exists():
                self._check_running()
                if time.monotonic() > deadline:
                    msg = f"munged did not create {self.socket} within {timeout:.0f} s: {self._tail('munged')}"
                    raise LocalSlurmError(msg)
                time.sleep(0.05)
            self._spawn("slurmctld")
            self._spawn("slurmd")
            state = ""
            while state != "idle":
                self._check_running()
                if time.monotonic() > deadline:
                    msg = f"node {self.node} is {state!r}, not idle, {timeout:.0f} s after start: {self._tail('slurmd')}"
                    raise LocalSlurmError(
                        msg)
                time.sleep(0.25)
                state = self.node_state()
        except BaseException:
            self.stop()
            raise
        return self

    def _load_pids(self) -> list[int]:
        try:
            return [int(p) for p in json.loads((self.root / STATE_FILE).read_text())["pids"].values()]
        except (OSError, ValueError, KeyError):
            return []

    @classmethod
    def attach(cls, root: str | os.PathLike[str]) -> LocalSlurm:
        """The cluster that ``start`` left running in ``root`` (for ``stop``/``status`` from another process)."""
        path = Path(root).expanduser().resolve() / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            msg = f"{path}: no local Slurm state here ({err})"
            raise ConfigError(msg) from None
        self = cls.__new__(cls)
        self.root = path.parent
        self.conf = Path(state["conf"])
        self.socket = self.root / "munge" / "munge.socket"
        self.node = state["node"]
        self.pids = {k: int(v) for k, v in state["pids"].items()}
        self._procs = {}
        self.started_at = state.get("started_at")
        return self

    def _ours(self, name: str, pid: int) -> bool:
        """The process ``pid`` is still the daemon we started (not a recycled pid)."""
        cmd = _cmdline(pid)
        return bool(cmd) and cmd.split()[0].endswith(name) and (str(self.root) in cmd)

    def _descendants(self, jobs_only: bool = False) -> list[int]:
        """Processes of our daemons' making: job processes (our ``SLURM_CONF`` and a ``SLURM_JOB_ID``) and,
        unless ``jobs_only``, the daemons' helpers (slurmstepd, slurmscriptd: the marked environment)."""
        found = []
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in (me, *self.pids.values()):
                continue
            env = _environ(int(entry.name))
            if ((not jobs_only and env.get("SIMCOMPRESS_LOCALSLURM") == str(self.root)) or (
                    env.get("SLURM_CONF") == str(self.conf) and "SLURM_JOB_ID" in env)) and _alive(int(entry.name)):
                found.append(int(entry.name))
        return found

    def _wait_descendants(self, timeout: float, jobs_only: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while self._descendants(jobs_only) and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self, timeout: float = 20) -> list[str]:
        """Cancel every job, stop the daemons this object started (by process id), kill leftover job processes.

        Returns notes on anything that needed more than a SIGTERM (empty when all went cleanly).
        """
        notes: list[str] = []
        if self.pids.get("slurmctld") and _alive(self.pids["slurmctld"]):
            try:
                ids = self.job_ids()
                if ids:
                    self.run("scancel", *ids, check=False)
                    deadline = time.monotonic() + timeout
                    while self.job_ids() and time.monotonic() < deadline:
                        time.sleep(0.25)
            except (LocalSlurmError, subprocess.TimeoutExpired) as err:
                notes.append(f"could not cancel jobs: {err}")
        self._wait_descendants(timeout, jobs_only=True)  # an ended job's processes may take a moment to exit
        for name in reversed(_DAEMONS):
            pid = self.pids.get(name)
            if not pid:
                continue
            proc = self._procs.get(name)
            if not _alive(pid) or (proc is None and not self._ours(name, pid)):
                if proc is not None:
                    proc.poll()
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                if proc is not None and proc.poll() is not None:
                    break
                time.sleep(0.05)
            if _alive(pid) and (proc is None or proc.poll() is None):
                os.kill(pid, signal.SIGKILL)
                notes.append(f"{name} (pid {pid}) ignored SIGTERM for {timeout:.0f} s; killed")
            if proc is not None:
                proc.wait(timeout=timeout)
        self._wait_descendants(5)
        for pid in self._descendants():
            try:
                os.kill(pid, signal.SIGKILL)
                notes.append(f"killed leftover job process {pid}: {_cmdline(pid)[:80]}")
            except ProcessLookupError:
                pass
        if self.root.is_dir() and (self.root / STATE_FILE).exists():
            self.pids = {}
            self._save()
        return notes

    def running(self) -> dict[str, bool]:
        return {name: bool(pid) and _alive(pid) for name, pid in self.pids.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simcompress.batch.localslurm", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("start", "status", "stop"))
    ap.add_argument("--dir", default="/tmp/simcompress-slurm", help="folder of the cluster (default %(default)s)")
    ap.add_argument("--cpus", type=int, default=None, help="CPUs of the node (default: this machine's)")
    args = ap.parse_args(argv)
    try:
        if args.action == "start":
            cluster = LocalSlurm(args.dir, cpus=args.cpus).start()
        elif args.action == "status":
            cluster = LocalSlurm.attach(args.dir)
            alive = cluster.running()
            if alive.get("slurmctld"):
                pass
        else:
            cluster = LocalSlurm.attach(args.dir)
            for _note in cluster.stop():
                pass
    except SimcompressError:
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
