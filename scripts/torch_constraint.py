"""Print the pip constraint that pins the installed torch, as pip itself sees it.

    python scripts/torch_constraint.py        # e.g. torch==2.13.0

pip matches a constraint against a distribution's metadata version, not against
``torch.__version__``: PyPI's CUDA build reports ``2.13.0+cu130`` at import, but its metadata says
``2.13.0``, and ``torch==2.13.0+cu130`` matches nothing pip can see (ResolutionImpossible). So the
pin is the metadata version (which does carry a local label where the distribution has one, as the
wheels of download.pytorch.org do: ``2.13.0+cpu``). scripts/install.sh writes this line to the
constraints file of every later pip call. Exit 1, with one line on stderr, when torch is not installed.
"""

from __future__ import annotations

import sys
from importlib import metadata


def torch_constraint(distribution: str = "torch") -> str:
    """``<name>==<metadata version>`` of the installed distribution (PackageNotFoundError if absent)."""
    return f"{distribution}=={metadata.version(distribution)}"


def main() -> int:
    try:
        print(torch_constraint())
    except metadata.PackageNotFoundError:
        print("torch_constraint.py: torch is not installed in this Python environment", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
