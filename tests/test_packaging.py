"""Every package of the source tree ships in the wheel (pyproject lists packages explicitly)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "autoloss").rglob("__init__.py")
             if "__pycache__" not in init.parts}
    assert found - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
