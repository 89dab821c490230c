"""The tracking cell: CHASE's DARTS-style cell as a representation of the engine.

- :mod:`~autoloss.cell.genotype`: the genotype as immutable data; DARTS-style parsing and printing.
- :mod:`~autoloss.cell.canonical`: the canonical form (equivalent cells agree) and its fingerprint.
- :mod:`~autoloss.cell.breeding`: random cells, mutation, crossover, the initial population.
- :mod:`~autoloss.cell.cost`: parameter and multiply-add counts from a genotype.
- :mod:`~autoloss.cell.gates`: the cheap gates (structure, budget).
- :mod:`~autoloss.cell.representation`: :class:`CellRepresentation`, what the engine calls.
- :mod:`~autoloss.cell.operations` and :mod:`~autoloss.cell.model`: the eight operations and the
  discrete cell as torch modules (the only modules here that import torch).
- :mod:`~autoloss.cell.draw`: the cell as a PNG graph (matplotlib).

Nothing here knows about losses, detectors or trackers.
"""
