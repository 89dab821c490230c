"""Tests for autoloss.timelimit: results, errors, hard timeouts, crashes and clean shutdown."""

import multiprocessing
import os
import time

import pytest

from autoloss.timelimit import Outcome, TimeLimitedPool


# Task functions live at module level so that they pickle.
def square(x):
    return x * x


def fail_if_negative(x):
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x


class _Unpicklable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.handle = lambda: None  # a lambda attribute: the exception itself cannot pickle


def raise_unpicklable(x):
    raise _Unpicklable(f"cannot ship {x}")


def sleep_then_return(seconds):
    time.sleep(seconds)
    return seconds


def exit_abruptly(code):
    os._exit(code)


def return_lambda(x):
    return lambda: x


@pytest.fixture
def pool():
    with TimeLimitedPool(workers=2) as p:
        yield p


def test_results_in_input_order(pool):
    outcomes = pool.map(square, range(10), timeout=5.0)
    assert [o.status for o in outcomes] == ["ok"] * 10
    assert [o.value for o in outcomes] == [x * x for x in range(10)]
    assert all(o.ok and o.error == "" and o.seconds >= 0 for o in outcomes)
    assert pool.map(square, [], timeout=1.0) == []


def test_exception_becomes_error(pool):
    ok, bad = pool.map(fail_if_negative, [1, -2], timeout=5.0)
    assert ok == Outcome("ok", 1, "", ok.seconds)
    assert bad.status == "error" and not bad.ok
    assert bad.error == "ValueError: negative input -2"


def test_unpicklable_exception_and_values_are_readable_errors(pool):
    (raised,) = pool.map(raise_unpicklable, [7], timeout=5.0)
    assert raised.status == "error" and raised.error == "_Unpicklable: cannot ship 7"
    (returned,) = pool.map(return_lambda, [1], timeout=5.0)
    assert returned.status == "error" and "could not send result back" in returned.error
    (unsent,) = pool.map(lambda x: x, [1], timeout=5.0)  # the task itself does not pickle
    assert unsent.status == "error" and "could not send task" in unsent.error
    assert [o.value for o in pool.map(square, [3], timeout=5.0)] == [9]


def test_timeout_kills_only_the_slow_task_and_pool_recovers(pool):
    start = time.monotonic()
    outcomes = pool.map(sleep_then_return, [0.0, 30.0, 0.05, 0.0], timeout=1.0)
    assert time.monotonic() - start < 5.0
    assert [o.status for o in outcomes] == ["ok", "timeout", "ok", "ok"]
    assert outcomes[1].error == "timed out after 1.0 s"
    assert 1.0 <= outcomes[1].seconds < 3.0
    assert [o.value for o in pool.map(square, range(4), timeout=5.0)] == [0, 1, 4, 9]


def test_dead_worker_is_reported_as_crashed_and_replaced(pool):
    outcomes = pool.map(exit_abruptly, [3], timeout=5.0)
    assert outcomes[0].status == "crashed"
    assert outcomes[0].error == "worker died (exit code 3)"
    mixed = pool.map(fail_if_negative, [1, 2, 3], timeout=5.0)
    assert [o.value for o in mixed] == [1, 2, 3]


def test_close_leaves_no_children():
    pool = TimeLimitedPool(workers=2)
    pool.map(sleep_then_return, [0.0, 0.0], timeout=5.0)
    assert len(multiprocessing.active_children()) >= 2
    pool.close()
    pool.close()  # safe twice
    assert multiprocessing.active_children() == []
    with pytest.raises(RuntimeError):
        pool.map(square, [1], timeout=1.0)


def test_context_manager_closes_after_timeout():
    with TimeLimitedPool(workers=1) as pool:
        assert pool.map(sleep_then_return, [30.0], timeout=0.3)[0].status == "timeout"
    assert multiprocessing.active_children() == []


def test_invalid_arguments():
    with pytest.raises(ValueError):
        TimeLimitedPool(workers=0)
    with TimeLimitedPool(workers=1) as pool, pytest.raises(ValueError):
        pool.map(square, [1], timeout=0)


PARENT = """
import sys, threading, time
from autoloss.timelimit import TimeLimitedPool
pool = TimeLimitedPool(1, context=sys.argv[1])
threading.Thread(target=lambda: list(pool.map(time.sleep, [120], timeout=300)), daemon=True).start()
while pool._slots[0] is None:
    time.sleep(0.05)
print(pool._slots[0].process.pid, flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_busy_worker_dies_with_a_killed_parent(context):
    """A search killed with SIGKILL leaves no worker behind, even one in the middle of a task."""
    import signal
    import subprocess
    import sys

    parent = subprocess.Popen([sys.executable, "-c", PARENT, context], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    assert _alive(worker)
    time.sleep(1.0)  # the worker is busy sleeping in its task
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)
