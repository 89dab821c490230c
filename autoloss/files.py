"""Small helpers for the paths autoloss writes to."""

from __future__ import annotations

import os
from pathlib import Path

from autoloss.errors import UserError


def writable_dir(path, what: str = "run directory") -> Path:
    """Create ``path`` (a directory) if needed and check it can be written; UserError otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"cannot use {path} as the {what}: it exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the {what} {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to the {what} {path}: permission denied or read-only")
    return path
