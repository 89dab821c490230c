"""Executors run the expensive evaluations (model optimisation simulation, proxy training).

Both stream results as they finish, consuming their work items lazily, so the evolution loop can
store every result at once and a steady-state loop can breed the next candidate the moment a
worker falls idle. A job that raises, runs past its timeout or kills its worker comes back as a
failed :class:`~autoloss.timelimit.Outcome` with the reason; the search goes on.

- :class:`LocalExecutor`: worker processes on this machine (one per GPU when GPUs exist, each pinned
  to its GPU with CUDA_VISIBLE_DEVICES; each with an equal share of the CPU threads), hard timeouts
  by killing the worker.
- :class:`RayExecutor`: one Ray task per evaluation (``num_gpus``, retries, per-task timeout, a
  cluster address or a local cluster). Ray is an optional extra: ``pip install 'autoloss[ray]'``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Iterator

from autoloss.errors import UserError
from autoloss.timelimit import Outcome, TimeLimitedPool


WAIT_POLL = 5.0  # seconds between two on_wait calls while results are awaited


@dataclass(frozen=True)
class Job:
    """One expensive evaluation: ``fn(task, genotype, stage, seed)`` returning a metrics dict."""

    fn: Callable[[dict, str, str, int], dict]
    task: dict
    genotype: str
    stage: str
    seed: int


def run_job(job: Job) -> dict:
    from autoloss.engine import heartbeat

    heartbeat.begin(job.stage, job.genotype)
    try:
        return job.fn(job.task, job.genotype, job.stage, job.seed)
    finally:
        heartbeat.end()


def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install must not stop a CPU search
        return 0


def _setup_worker(slot: int, gpus: int = 0, threads: int = 0) -> None:
    """In a new worker: its own GPU (where there is one per worker) and its share of the CPU threads."""
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot)
    if threads > 0:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(threads)
        if "torch" in sys.modules:  # a forked worker: torch is loaded already
            sys.modules["torch"].set_num_threads(threads)


def cpu_share(workers: int) -> int:
    """Each of ``workers`` local workers gets an equal share of this machine's cores (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(workers, 1))


class LocalExecutor:
    """Worker processes on this machine: ``workers`` of them (default: one per GPU, else 1)."""

    name = "local"

    def __init__(self, workers: int | None = None, context: str | None = None):
        gpus = visible_gpus()
        self.workers = workers or max(gpus, 1)
        self.threads = cpu_share(self.workers)
        setup = partial(_setup_worker, gpus=gpus if gpus and self.workers <= gpus else 0, threads=self.threads)
        self._pool = TimeLimitedPool(self.workers, context=context, initializer=setup)

    def stream(self, items: Iterable[Any], timeout: float, fn: Callable[[Any], Any] = run_job,
               on_wait: Callable[[], None] | None = None, poll: float = WAIT_POLL) -> Iterator[tuple[int, Any, Outcome]]:
        return self._pool.stream(fn, items, timeout, on_wait=on_wait, poll=poll)

    def close(self) -> None:
        self._pool.close()


class RayExecutor:
    """Each evaluation a Ray task; at most as many in flight as the cluster has slots for them."""

    name = "ray"

    def __init__(self, address: str | None = None, num_gpus: float = 0.0, num_cpus: float = 1.0,
                 retries: int = 1, max_in_flight: int | None = None, init_kwargs: dict | None = None):
        try:
            import ray
        except ImportError:
            raise UserError("the Ray executor needs Ray: pip install 'autoloss[ray]' (or ray[default])") from None
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, **(init_kwargs or {}))
        self.num_gpus, self.num_cpus, self.retries = num_gpus, num_cpus, retries
        resources = ray.cluster_resources()
        slots = resources.get("GPU", 0) / num_gpus if num_gpus else resources.get("CPU", 1) / num_cpus
        self.max_in_flight = max_in_flight or max(int(slots), 1)
        # a fresh process per GPU task (clean GPU memory); CPU workers are reused
        self._remote = ray.remote(num_gpus=num_gpus, num_cpus=num_cpus, max_retries=retries,
                                  max_calls=1 if num_gpus else 0)(run_job_remote)

    def stream(self, items: Iterable[Any], timeout: float, fn: Callable[[Any], Any] = run_job,
               on_wait: Callable[[], None] | None = None, poll: float = WAIT_POLL) -> Iterator[tuple[int, Any, Outcome]]:
        ray = self.ray
        pending = enumerate(items)
        in_flight: dict[Any, tuple[int, Any, float]] = {}
        exhausted = False
        try:
            while True:
                while not exhausted and len(in_flight) < self.max_in_flight:
                    try:
                        index, item = next(pending)
                    except StopIteration:
                        exhausted = True
                        break
                    in_flight[self._remote.remote(fn, item)] = (index, item, time.monotonic())
                if not in_flight:
                    return
                nearest = min(start for _, _, start in in_flight.values()) + timeout
                wait_for = max(0.0, nearest - time.monotonic())
                ready, _ = ray.wait(list(in_flight), num_returns=1,
                                    timeout=min(wait_for, poll) if on_wait else wait_for)
                if on_wait and not ready:
                    on_wait()
                for ref in ready:
                    index, item, start = in_flight.pop(ref)
                    yield index, item, self._outcome(ref, time.monotonic() - start)
                now = time.monotonic()
                for ref, (index, item, start) in list(in_flight.items()):
                    if now - start >= timeout:
                        ray.cancel(ref, force=True)
                        del in_flight[ref]
                        yield index, item, Outcome("timeout", error=f"timed out after {float(timeout)} s",
                                                   seconds=now - start)
        finally:
            for ref in in_flight:
                ray.cancel(ref, force=True)

    def _outcome(self, ref, seconds: float) -> Outcome:
        try:
            return Outcome("ok", self.ray.get(ref), seconds=seconds)
        except self.ray.exceptions.WorkerCrashedError as exc:
            return Outcome("crashed", error=f"worker died: {str(exc).splitlines()[0]}", seconds=seconds)
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            lines = str(cause).strip().splitlines()
            return Outcome("error", error=f"{type(cause).__name__}: {lines[-1] if lines else ''}", seconds=seconds)
        except Exception as exc:
            return Outcome("crashed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                           seconds=seconds)

    def close(self) -> None:
        pass  # the Ray session belongs to the caller's process; ray.shutdown() ends it


def run_job_remote(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def make_executor(kind: str, workers: int | None = None, address: str | None = None,
                  num_gpus: float | None = None, start_method: str | None = None):
    """``start_method`` applies to local workers (Ray starts its own processes)."""
    if kind == "local":
        return LocalExecutor(workers, context=start_method)
    if kind == "ray":
        if num_gpus is None:
            num_gpus = 1.0 if visible_gpus() else 0.0
        return RayExecutor(address=address, num_gpus=num_gpus, max_in_flight=workers)
    raise UserError(f"unknown executor '{kind}': expected local or ray")
