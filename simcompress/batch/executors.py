"""Where shard tasks run: a local process pool, or Dask distributed futures.

Both runners take the same list of :class:`~simcompress.batch.worker.ShardJob` and
call ``on_result(dict)`` as each shard finishes, in completion order. Neither
schedules anything itself: the process pool is :class:`concurrent.futures.ProcessPoolExecutor`
(spawned processes, one task each at a time), and the Dask runner submits
futures (``retries=2``) to a ``LocalCluster``, an existing scheduler, or a
dask-jobqueue cluster, releasing every future as soon as its result is recorded
(a held finished future would be recomputed, and its file rewritten, when a
worker dies).
"""

from __future__ import annotations

import logging
import multiprocessing
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import ConfigError, SimcompressError

__all__ = ["BatchError", "DaskRunner", "ProcessPoolRunner", "make_runner"]

log = logging.getLogger(__name__)

Task = Callable[[Any], dict[str, Any]]
OnResult = Callable[[dict[str, Any]], None]


class BatchError(SimcompressError, RuntimeError):
    """A shard could not be produced after its retries (finished shards are kept for a resume)."""


def _pool_initializer(threads: int) -> None:
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


class ProcessPoolRunner:
    """Local processes from :class:`concurrent.futures.ProcessPoolExecutor` (spawn start method).

    A task that raises is retried ``retries`` times; a dead worker process breaks the
    pool, which is rebuilt and its unfinished shards resubmitted (at most
    ``retries + 1`` times per run).
    """

    name = "local"

    def __init__(self, n_workers: int, torch_threads: int = 1) -> None:
        self.n_workers = n_workers
        self.torch_threads = torch_threads
        self.description = f"local process pool, {n_workers} worker{'s' if n_workers != 1 else ''}"
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.n_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_pool_initializer,
            initargs=(self.torch_threads,),
        )

    def warm(self, torch_threads: int, backend: str | None = None) -> None:
        """Start the worker processes (torch and the task code imported) before the timed run."""
        self._pool = self._new_pool()
        # one slow-ish task per worker: the pool spawns a process for each submission it cannot hand
        # to an idle one; a dead process here surfaces again, and is handled, in run()
        futures = [self._pool.submit(warm_worker, torch_threads, backend, 0.2) for _ in range(self.n_workers)]
        wait(futures)

    def run(self, fn: Task, jobs: Sequence[Any], on_result: OnResult, retries: int = 2) -> None:
        pending = {job.shard_index: job for job in jobs}
        failures: dict[int, int] = {}
        breaks = 0
        while pending:
            pool = self._pool or self._new_pool()
            self._pool = None
            broken = False
            try:
                futures = {pool.submit(fn, job): idx for idx, job in pending.items()}
                while futures:
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in done:
                        idx = futures.pop(fut)
                        try:
                            result = fut.result()
                        except BrokenProcessPool:
                            broken = True
                            continue
                        except SimcompressError:
                            raise  # bad input: retrying cannot help
                        except Exception as err:
                            failures[idx] = failures.get(idx, 0) + 1
                            if failures[idx] > retries:
                                msg = f"shard {idx} failed {failures[idx]} times, last: {type(err).__name__}: {err}"
                                raise BatchError(msg) from err
                            log.warning("shard %d failed (%s), retrying", idx, err)
                            futures[pool.submit(fn, pending[idx])] = idx
                            continue
                        del pending[idx]
                        on_result(result)
                    if broken:
                        break
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            if broken:
                breaks += 1
                if breaks > retries + 1:
                    msg = f"worker processes died {breaks} times; {len(pending)} shards unfinished"
                    raise BatchError(msg)
                log.warning("a worker process died; restarting the pool for %d unfinished shards", len(pending))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def warm_worker(torch_threads: int, backend: str | None = None, hold_s: float = 0.0) -> int:
    """Import the task's modules and set torch's threads in a worker process (start-up, not generation)."""
    import time

    import torch

    from ._backend import get_backend

    torch.set_num_threads(torch_threads)
    get_backend(backend).warm()
    time.sleep(hold_s)
    return torch.get_num_threads()


class DaskRunner:
    """Dask distributed futures on a client; closes what it created."""

    name = "dask"

    def __init__(self, client: Any, description: str, owned: Sequence[Any] = (), quiet_level: int | None = None,
                 watch: Any = None, poll_s: float = 1.0) -> None:
        self.client = client
        self.description = description
        self._owned = list(owned)
        self._quiet_level = quiet_level  # distributed's logger level to restore after closing
        self.watch = watch  # a jobs.JobWatch for batch-system workers: asked whenever none is connected
        self.poll_s = poll_s
        self.startup: dict[str, Any] = {}  # batch jobs: submit_s, first_worker_s, job_ids

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def warm(self, torch_threads: int, backend: str | None = None) -> None:
        """Import torch and the task code on the workers already connected (startup, not generation)."""
        import time

        t0 = time.perf_counter()
        self.client.run(warm_worker, torch_threads, backend)
        if self.startup:
            self.startup["warm_s"] = time.perf_counter() - t0

    def run(self, fn: Task, jobs: Sequence[Any], on_result: OnResult, retries: int = 2) -> None:
        import distributed

        token = uuid.uuid4().hex[:8]
        pending = {
            self.client.submit(fn, job, key=f"simcompress-shard-{token}-{job.shard_index:05d}", retries=retries, pure=False)
            for job in jobs
        }
        total, finished = len(pending), 0
        try:
            while pending:
                try:
                    done, pending = distributed.wait(pending, timeout=self.poll_s, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    if self.watch is not None:
                        self.watch.check(self.n_workers, "run", f"{finished} of the {total} shards of this run finished")
                    continue
                for fut in done:
                    result = fut.result()
                    fut.release()  # a held finished future would be recomputed (file rewritten) if its worker died
                    finished += 1
                    on_result(result)
                del done
        except BaseException:
            for fut in pending:
                fut.release()
            raise

    def close(self) -> None:
        nanny = logging.getLogger("distributed.nanny")
        nanny_level = nanny.level
        if self._quiet_level is not None:
            # worker processes that imported torch take a few seconds to exit; the nanny then kills
            # them and warns, which is harmless at the end of a run
            nanny.setLevel(logging.ERROR)
        import time

        t0 = time.perf_counter()
        try:
            self.client.close()
            for obj in reversed(self._owned):
                obj.close()
            if self.startup:
                self.startup["close_s"] = time.perf_counter() - t0  # batch jobs: cancel, workers leave
        finally:
            nanny.setLevel(nanny_level)
            if self._quiet_level is not None:
                logging.getLogger("distributed").setLevel(self._quiet_level)


def make_runner(
    executor: str,
    *,
    n_workers: int,
    torch_threads: int,
    scheduler: str | None = None,
    cluster: Any = None,
    memory_limit: str | None = None,
) -> ProcessPoolRunner | DaskRunner:
    """Build the runner for ``executor`` ("local" or "dask")."""
    if executor == "local":
        if scheduler or cluster is not None:
            msg = "--scheduler and --cluster need --executor dask"
            raise ConfigError(msg)
        return ProcessPoolRunner(n_workers, torch_threads)
    if executor != "dask":
        msg = f"--executor: {executor!r} is not allowed; allowed: dask, local"
        raise ConfigError(msg)
    try:
        import distributed
    except ImportError:  # pragma: no cover - the cluster extra is missing
        msg = '--executor dask needs dask.distributed: pip install "simcompress[cluster]"'
        raise ConfigError(msg) from None
    if scheduler and cluster is not None:
        msg = "give either --scheduler or --cluster, not both"
        raise ConfigError(msg)
    if scheduler:
        try:
            remote = distributed.Client(scheduler, timeout="15s")
        except (OSError, TimeoutError, ValueError) as err:
            msg = f"--scheduler {scheduler}: cannot connect ({err})"
            raise ConfigError(msg) from None
        return DaskRunner(remote, f"dask scheduler {scheduler}")
    if cluster is not None:
        import time

        from .cluster import make_cluster
        from .jobs import JobWatch, submit_jobs

        # the scheduler's INFO chatter (workers joining, leaving at the end) is noise; warnings stay
        dlog = logging.getLogger("distributed")
        previous = dlog.level
        dlog.setLevel(logging.WARNING)
        try:
            jq = make_cluster(cluster)
        except BaseException:
            dlog.setLevel(previous)
            raise
        client: distributed.Client | None = None
        try:
            t0 = time.perf_counter()
            ids = submit_jobs(jq, cluster)  # a refused submission is a ConfigError here, before any write
            t_submit = time.perf_counter() - t0
            client = distributed.Client(jq)
            watch = JobWatch(jq, cluster)
            waited = watch.wait_first_worker(client)
        except BaseException:
            if client is not None:
                client.close()
            jq.close()
            dlog.setLevel(previous)
            raise
        runner = DaskRunner(
            client, f"dask-jobqueue {cluster.kind}, {cluster.jobs} job(s) x {cluster.processes} worker(s)", [jq],
            previous, watch=watch,
        )
        runner.startup = {"submit_s": t_submit, "first_worker_s": t_submit + waited, "job_ids": ids}
        log.info("%s: submitted %s job(s) %s in %.2f s; first worker after %.2f s", cluster.source, cluster.kind,
                 ",".join(ids), t_submit, t_submit + waited)
        return runner
    # a private LocalCluster: its INFO chatter (start, stop) is noise; warnings (lost workers) stay
    dlog = logging.getLogger("distributed")
    previous = dlog.level
    dlog.setLevel(logging.WARNING)
    local = distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        memory_limit=memory_limit or "auto",
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(local)
    return DaskRunner(client, f"dask LocalCluster, {n_workers} worker process(es) x 1 thread", [local], previous)
