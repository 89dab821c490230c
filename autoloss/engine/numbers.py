"""The one test of a stored or measured number: a finite int or float (a bool is not a number here)."""

from __future__ import annotations

import math


def finite_number(value) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool); None for anything else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
