"""One process per run directory: an advisory lock file holding the owner's pid.

The lock is an ``flock`` on ``RUN_DIR/run.lock``: the kernel releases it when its process dies, even
by SIGKILL, so a stale lock of a dead process is simply taken over; the pid written in the file
names the process that holds a live one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from autoloss.errors import UserError

LOCK_NAME = "run.lock"


class RunLock:
    """Hold ``run_dir``'s lock from ``acquire()`` to ``release()`` (or the end of a ``with``)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{self.path.parent} is in use by process {holder} (a search or resume running on it): "
                            "wait for it to finish, or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
