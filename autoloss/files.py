"""Small helpers for the paths autoloss writes to: a writable directory, an OSError in words, atomic writes
(:func:`write_atomic`, used by every writer of a file a user reads) and the rule for generated folders."""

from __future__ import annotations

import errno
import itertools
import json
import os
from pathlib import Path
from typing import BinaryIO, Callable

from autoloss.errors import UserError


def writable_dir(path, what: str = "run directory") -> Path:
    """Create ``path`` (a directory) if needed and check it can be written; UserError otherwise."""
    path = Path(path)
    if exists(path, what) and not path.is_dir():
        raise UserError(f"cannot use {path} as the {what}: it exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the {what} {path}: {os_problem(exc)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to the {what} {path}: permission denied or read-only")
    return path


# ------------------------------------------------------------------------------------------ path errors


def os_problem(exc: OSError) -> str:
    """What an OSError on a path the user chose means, in words (the disk full, a name too long, ...)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full (no space left on the device, or the disk quota is used up)"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long (a path component is over 255 bytes, or the whole path is too long)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "permission denied or read-only"
    return exc.strerror or str(exc)


def path_error(path, exc: OSError, doing: str = "write") -> UserError:
    """The one line for an OSError met on ``path``: ``cannot write PATH: disk full ...``."""
    return UserError(f"cannot {doing} {path}: {os_problem(exc)}")


def exists(path, what: str = "path") -> bool:
    """``Path.exists`` that turns an unusable path (a name over 255 bytes, ...) into one UserError line."""
    try:
        return Path(path).exists()
    except OSError as exc:
        raise UserError(f"cannot use {path} as the {what}: {os_problem(exc)}") from None


# ------------------------------------------------------------------------------------------ atomic writes


def output_file(path) -> Path:
    """``path`` ready to be written: not a directory, its folder created; one UserError line otherwise."""
    path = Path(path)
    try:
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise path_error(path, exc) from None
    return path




def write_atomic(path, content: str | bytes | Callable[[BinaryIO], None], what: str | None = None) -> Path:
    """Write ``content`` (text as UTF-8, bytes, or a function writing into a binary file) to ``path`` atomically.

    The data goes into a temporary file in the same folder, which then replaces ``path`` (``os.replace``):
    a reader, a crash or a full disk sees the old file whole or the new one whole, never a fragment.
    On any failure the temporary file is removed and ``path`` is left as it was; an OSError (the disk
    full, a read-only folder, a name too long) becomes one UserError line naming ``path``.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name[:200]}.{os.getpid()}.{next(_COUNTER)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    except OSError as exc:
        raise path_error(what or path, exc) from None
    file = None
    try:
        file = _Recording(_open_temporary(fd))
        if callable(content):
            content(file)  # e.g. torch.save(obj, file), figure.savefig(file, format="png")
        else:
            file.write(content.encode("utf-8") if isinstance(content, str) else content)
        file.close()
        try:  # a file replaced keeps its permissions
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)
        except OSError:
            pass
        os.replace(temporary, path)
    except BaseException as exc:
        if file is not None:
            file.close_quietly()
        try:
            os.unlink(temporary)
        except OSError:
            pass
        error = exc if isinstance(exc, OSError) else file.error if file is not None else None
        if error is not None:  # torch.save reports a failed write as a RuntimeError: the OSError is the cause
            raise path_error(what or path, error) from None
        raise
    return path


_COUNTER = itertools.count()


def _open_temporary(fd: int) -> BinaryIO:
    """The temporary file of :func:`write_atomic`, opened for writing (tests replace it to fill the disk)."""
    return os.fdopen(fd, "wb")


class _Recording:
    """A binary file that remembers the first OSError its writes raised (a writer may hide it)."""

    def __init__(self, file: BinaryIO):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def close(self) -> None:
        try:
            self.file.close()  # flushes: a full disk may show only here
        except OSError as exc:
            self.error = self.error or exc
            raise

    def close_quietly(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass

    def __getattr__(self, name):
        return getattr(self.file, name)


# ------------------------------------------------------------------------------------------ generated folders


def generated_folder(folder, manifest: str, generator: str, what: str = "synthetic data") -> bool:
    """The one rule for a folder autoloss fills with generated data (the demos' datasets): it may be
    absent, empty, or autoloss's own (its ``manifest`` names ``generator``); anything else is the user's,
    and is refused (never deleted nor overwritten). Returns whether the folder is autoloss's own."""
    folder = Path(folder)
    if not exists(folder, f"folder for the {what}"):
        return False
    if not folder.is_dir():
        raise UserError(f"refusing to write {what} into {folder}: it exists and is not a directory")
    marker = folder / manifest
    if marker.is_file():
        try:
            stored = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if isinstance(stored, dict) and stored.get("generator") == generator:
            return True
    if any(folder.iterdir()):
        raise UserError(f"refusing to write {what} into {folder}: it is not empty and not ours "
                        "(autoloss never deletes or overwrites files it did not write); choose another --out")
    return False
