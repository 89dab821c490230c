"""Running the ``autoloss`` command as a user would, and what a clean error looks like."""

from __future__ import annotations

import subprocess
import sys


def autoloss(*args: str, script: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``autoloss ARGS`` (the installed script, or ``python -m autoloss.cli``) and capture its output."""
    command = ["autoloss"] if script else [sys.executable, "-m", "autoloss.cli"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


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
