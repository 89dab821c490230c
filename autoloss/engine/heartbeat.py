"""What a worker is training right now, for the progress display, without slowing the worker.

A worker's job calls :func:`begin` before an evaluation; the evaluation calls :func:`beat` as it
trains (cheap: at most one small file write per ``INTERVAL`` seconds, none at all when no
directory is set). The parent's progress reads the files (:func:`read_all`) while it waits for
results. The directory reaches workers through the environment (:data:`ENV`), set before they start.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ENV = "AUTOLOSS_HEARTBEAT_DIR"
INTERVAL = 2.0  # seconds between two writes of one worker

_current: dict = {}
_last_write = 0.0


def _path() -> Path | None:
    folder = os.environ.get(ENV)
    return Path(folder) / f"worker-{os.getpid()}.json" if folder else None


def begin(stage: str, genotype: str) -> None:
    """A new evaluation starts in this process."""
    global _last_write
    _current.clear()
    _current.update(stage=stage, genotype=genotype, started=time.time(), iteration=0, total=None, loss=None)
    _last_write = 0.0
    _write()


def beat(iteration: int, total: int | None = None, loss: float | None = None) -> None:
    """The evaluation reached ``iteration`` of ``total`` with training loss ``loss``."""
    global _last_write
    if not _current:
        return
    _current.update(iteration=int(iteration), total=total, loss=None if loss is None else float(loss))
    now = time.monotonic()
    if now - _last_write >= INTERVAL:
        _last_write = now
        _write()


def end() -> None:
    path = _path()
    _current.clear()
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass


def _write() -> None:
    path = _path()
    if path is None:
        return
    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**_current, "updated": time.time()}))
        os.replace(tmp, path)
    except OSError:  # progress is a courtesy: never fail an evaluation for it
        pass


def read_all(folder: str | Path, max_age: float = 120.0) -> list[dict]:
    """The current evaluations of every worker that wrote in the last ``max_age`` seconds."""
    found = []
    now = time.time()
    for path in sorted(Path(folder).glob("worker-*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and now - state.get("updated", 0) <= max_age:
            found.append(state)
    return found
