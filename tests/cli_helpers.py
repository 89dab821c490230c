"""Running the ``autoloss`` command as a user would, and what a clean error looks like.

:func:`run_cli` runs a command in this process (no new interpreter, no second torch import): the
option-validation tests use it. :func:`autoloss` starts a real process: for exit codes of the installed
script, signals, the run lock, environment variables and anything printed once per process.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import traceback

from autoloss.cli import main


def autoloss(*args: str, script: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``autoloss ARGS`` (the installed script, or ``python -m autoloss.cli``) and capture its output."""
    command = ["autoloss"] if script else [sys.executable, "-m", "autoloss.cli"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def run_cli(*args) -> subprocess.CompletedProcess:
    """Run ``autoloss ARGS`` in this process through ``autoloss.cli.main``; the same fields as :func:`autoloss`.

    An exception that escapes ``main`` is printed as the real process would print it (a traceback,
    exit 1), so that :func:`assert_clean_error` catches it the same way.
    """
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage errors and --help
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except Exception:  # what the interpreter would print on its way out
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["autoloss", *argv], code, out.getvalue(), err.getvalue())


def assert_clean_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2, nothing on stdout, one 'autoloss: error:' line on stderr, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("autoloss: error:")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
