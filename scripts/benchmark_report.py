"""Shared by the benchmark scripts: replace one section of docs/benchmarks.md, keep the others."""

from __future__ import annotations

import datetime as _dt
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autoloss.files import write_atomic  # noqa: E402

HEADER = ("# Benchmarks\n\nEvery figure here is written by a script under `scripts/`; rerun the script to refresh "
          "its section. Ratios are measured within one run on one machine.\n")


def write_section(path: Path, key: str, title: str, body: str, command: str) -> None:
    """Write ``body`` under ``title`` between this key's markers, creating the file if needed."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    stamp = _dt.date.today().isoformat()
    block = f"{begin}\n## {title}\n\nMeasured {stamp} with `{command}`.\n\n{body}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)  # a benchmark killed mid-write never leaves docs/benchmarks.md cut short
