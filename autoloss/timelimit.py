"""Run functions in persistent worker processes under a hard per-task time limit.

Some work cannot be interrupted from inside Python (sympy can hang in C-level loops or in pure Python
that never checks for signals), so each task runs in a worker process, and a task that overruns its
limit has its worker killed and replaced::

    with TimeLimitedPool(workers=2) as pool:
        for outcome in pool.map(simplify_expression, expressions, timeout=2.0):
            print(outcome.status, outcome.value if outcome.ok else outcome.error)

The function and the items must pickle (a module-level function, plain data). A task ends in one of
four ways, each an :class:`Outcome`: ``"ok"`` (with the return value), ``"error"`` (the function
raised), ``"timeout"`` (its worker was killed) or ``"crashed"`` (its worker died on its own, e.g.
``os._exit`` or a segfault). Workers that were killed or died are restarted on demand.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable, Iterable, Iterator


@dataclass(frozen=True)
class Outcome:
    """How one task ended."""

    status: str  # "ok" | "error" | "timeout" | "crashed"
    value: object = None  # the function's return value when ok
    error: str = ""  # one-line human-readable reason otherwise
    seconds: float = 0.0  # wall time of the task

    @property
    def ok(self) -> bool:
        """Whether the function returned normally."""
        return self.status == "ok"


def _describe(exc: BaseException) -> str:
    """``"Type: first line of the message"``, always a plain string (it must pickle)."""
    try:
        lines = str(exc).strip().splitlines()
    except Exception:  # a broken __str__
        lines = []
    name = type(exc).__name__
    return f"{name}: {lines[0]}" if lines else name


def _worker_main(conn, initializer, slot: int) -> None:
    """Worker loop: receive ``(fn, arg)``, run it, send ``("ok", value)`` or ``("error", text)``.

    ``None`` or a closed pipe ends the loop. Ctrl+C is left to the parent, which stops the workers.
    ``initializer(slot)`` runs first (e.g. to pin the worker to one GPU).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    if initializer is not None:
        initializer(slot)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as exc:  # the task did not unpickle here (e.g. fn not importable)
            conn.send(("error", f"could not load task: {_describe(exc)}"))
            continue
        if task is None:
            return
        fn, arg = task
        try:
            reply = ("ok", fn(arg))
        except BaseException as exc:  # SystemExit included: report it, keep the worker
            reply = ("error", _describe(exc))
        try:
            conn.send(reply)  # pickles fully before writing, so a failure leaves the pipe clean
        except Exception as exc:
            conn.send(("error", f"could not send result back: {_describe(exc)}"))


def _exit_with_parent(interval: float = 1.0) -> None:
    """End this worker when its parent dies (even by SIGKILL), busy or not: no orphan keeps training.

    A forked worker inherits the parent's ends of the pipes, so it would never see them close.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, ctx, initializer=None, slot: int = 0) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child_conn, initializer, slot), daemon=True)
        self.process.start()
        child_conn.close()

    def kill(self) -> None:
        """Stop the process now: terminate, wait up to 1 s, then SIGKILL."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(1.0)
            if self.process.is_alive():
                self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        """Ask an idle worker to exit; kill it if it does not within a second."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(1.0)
        self.kill()


def _stop_all(slots: list) -> None:
    """Stop every worker in ``slots`` (shared with the pool, so this needs no reference to it)."""
    for i, worker in enumerate(slots):
        if worker is not None:
            worker.stop()
            slots[i] = None


class TimeLimitedPool:
    """A fixed number of persistent worker processes that run tasks under a hard time limit.

    ``context`` is the multiprocessing start method: by default ``"fork"`` on Linux (fast, and the
    workers inherit what the parent already imported) and ``"spawn"`` elsewhere. Workers start
    lazily on first use. Use as a context manager or call :meth:`close`; workers left over are also
    stopped when the pool is garbage-collected or the interpreter exits.
    """

    def __init__(self, workers: int = 2, context: str | None = None,
                 initializer: Callable[[int], None] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if context is None:
            context = "fork" if sys.platform.startswith("linux") else "spawn"
        self._ctx = multiprocessing.get_context(context)
        self._initializer = initializer  # called in each new worker with its slot number
        self._slots: list[_Worker | None] = [None] * workers
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop_all, self._slots)  # on GC and at exit

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], timeout: float) -> list[Outcome]:
        """Run ``fn(item)`` for each item over the workers; outcomes come back in input order.

        Each task gets ``timeout`` seconds of wall time from the moment it is handed to a worker
        (for a freshly started "spawn" worker that includes the worker's own start-up).
        """
        items = list(items)
        outcomes: list[Outcome | None] = [None] * len(items)
        for index, _, outcome in self.stream(fn, items, timeout):
            outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]

    def stream(self, fn: Callable[[Any], Any], items: Iterable[Any], timeout: float,
               on_wait: Callable[[], None] | None = None, poll: float = 5.0) -> Iterator[tuple[int, Any, Outcome]]:
        """Yield ``(index, item, outcome)`` as tasks finish, in completion order.

        ``items`` is consumed lazily, one item each time a worker falls idle, so a generator can
        decide what to run next from the outcomes seen so far (a steady-state evolution loop).
        ``on_wait`` is called every ``poll`` seconds while tasks run and none has finished.
        """
        if self._closed:
            raise RuntimeError("TimeLimitedPool is closed")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        pending = enumerate(items)
        busy: dict[int, tuple[int, Any, float]] = {}  # slot -> (item index, item, start time)
        finished: deque = deque()
        exhausted = False
        try:
            while True:
                exhausted = self._dispatch(fn, pending, busy, finished) or exhausted
                while finished:
                    yield finished.popleft()
                if not busy:
                    if exhausted:
                        return
                    continue
                nearest = min(start for _, _, start in busy.values()) + timeout
                handles = [self._slots[s].conn for s in busy] + [self._slots[s].process.sentinel for s in busy]
                wait_for = max(0.0, nearest - time.monotonic())
                if not wait(handles, timeout=min(wait_for, poll) if on_wait else wait_for) and on_wait:
                    on_wait()
                self._collect(busy, finished, timeout)
                while finished:
                    yield finished.popleft()
        finally:
            for slot in busy:  # interrupted (e.g. Ctrl+C, or the consumer stopped): workers are mid-task
                self._replace(slot)

    def _dispatch(self, fn, pending: Iterator, busy: dict, finished: deque) -> bool:
        """Hand pending items to idle workers, starting or restarting workers as needed.

        Returns True once ``pending`` is exhausted.
        """
        idle = deque(slot for slot in range(len(self._slots)) if slot not in busy)
        while idle:
            try:
                index, item = next(pending)
            except StopIteration:
                return True
            try:
                payload = bytes(ForkingPickler.dumps((fn, item)))
            except Exception as exc:
                finished.append((index, item, Outcome("error", error=f"could not send task: {_describe(exc)}")))
                continue
            slot = idle.popleft()
            worker = self._slots[slot]
            if worker is not None and not worker.process.is_alive():  # died while idle
                self._replace(slot)
                worker = None
            if worker is None:
                worker = self._slots[slot] = _Worker(self._ctx, self._initializer, slot)
            busy[slot] = (index, item, time.monotonic())
            try:
                worker.conn.send_bytes(payload)
            except OSError:
                pass  # the worker just died: _collect reports it as crashed
        return False

    def _collect(self, busy: dict, finished: deque, timeout: float) -> None:
        """Record every busy task that has finished, crashed or run past its deadline."""
        for slot, (index, item, start) in list(busy.items()):
            worker = self._slots[slot]
            elapsed = time.monotonic() - start
            dead = not worker.process.is_alive()
            if worker.conn.poll():  # a reply (even from a worker that has exited since) or EOF
                try:
                    status, payload = worker.conn.recv()
                except (EOFError, OSError):
                    dead = True
                else:
                    value, error = (payload, "") if status == "ok" else (None, payload)
                    finished.append((index, item, Outcome(status, value, error, elapsed)))
                    del busy[slot]
                    continue
            if dead:
                worker.process.join(1.0)
                error = f"worker died (exit code {worker.process.exitcode})"
                finished.append((index, item, Outcome("crashed", error=error, seconds=elapsed)))
            elif elapsed >= timeout:
                finished.append((index, item, Outcome("timeout", error=f"timed out after {float(timeout)} s",
                                                      seconds=elapsed)))
            else:
                continue
            self._replace(slot)
            del busy[slot]

    def _replace(self, slot: int) -> None:
        """Kill the worker in ``slot``; a new one starts the next time the slot gets a task."""
        worker = self._slots[slot]
        if worker is not None:
            self._slots[slot] = None
            worker.kill()

    def close(self) -> None:
        """Stop all workers. Safe to call more than once."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> TimeLimitedPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
