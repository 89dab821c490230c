"""A random cell that passes the structure gate: the control row of ``autoloss evaluate --tracker``."""

from __future__ import annotations

import random

from autoloss.cell.breeding import random_genotype
from autoloss.cell.gates import StructureGate
from autoloss.cell.genotype import format_genotype


def random_cell(seed: int = 0) -> str:
    """A random cell that passes the structure gate (seeded: the same one every time)."""
    rng = random.Random(seed)
    while True:
        cell = random_genotype(rng)
        if StructureGate().evaluate([cell])[0].passed:
            return format_genotype(cell)
