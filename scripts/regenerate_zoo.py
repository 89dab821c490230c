"""Regenerate autoloss/zoo/cse_autoloss.py, the paper's four losses exported by autoloss.detection.export.

    python scripts/regenerate_zoo.py

It rewrites the file of this checkout (whatever autoloss is installed); tests/test_export.py checks
that the committed file equals a fresh generation.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's autoloss first

from autoloss.detection.export.zoo import write_zoo  # noqa: E402

if __name__ == "__main__":
    print(f"wrote {write_zoo()}")
