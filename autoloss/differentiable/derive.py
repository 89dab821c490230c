"""The discrete cell of a supernet's architecture weights, as DARTS derives it.

Rows of the ``[14, len(primitives)]`` tensor are the edges in DARTS's order: node k (k = 0..3) has
the ``k + 2`` edges from states ``0..k+1``, node 0's first (rows 0-1), then node 1's (rows 2-4),
node 2's (5-8), node 3's (9-13). Per node the 2 incoming edges with the largest non-``none`` weight
are kept (the stronger first; ties go to the lower input), and on each the strongest non-``none``
operation. The comparison across edges is on softmax weights, so raw alpha must be softmaxed per row
first: the caller says which it gives (``softmax=True`` for alpha, ``False`` for weights).
"""

from __future__ import annotations

import torch

from autoloss.cell.genotype import NODES, Genotype
from autoloss.cell.operations import PRIMITIVES

EDGES = sum(k + 2 for k in range(NODES))  # 14


def edge_inputs(nodes: int = NODES) -> list[tuple[int, int]]:
    """``(node, input state)`` of each supernet edge, in row order."""
    return [(k, source) for k in range(nodes) for source in range(k + 2)]


def derive_genotype(values: torch.Tensor, *, softmax: bool, primitives: list[str] = PRIMITIVES) -> Genotype:
    """The DARTS genotype of ``values`` (alpha if ``softmax`` else mixing weights), ``none`` never chosen."""
    values = values.detach().to(torch.float64).cpu()
    if values.shape != (EDGES, len(primitives)):
        raise ValueError(f"expected a {EDGES} x {len(primitives)} tensor, got {tuple(values.shape)}")
    weights = torch.softmax(values, dim=-1) if softmax else values
    allowed = [j for j, name in enumerate(primitives) if name != "none"]
    if not allowed:
        raise ValueError("the primitives have no operation other than 'none'")
    pairs = []
    row = 0
    for k in range(NODES):
        rows = weights[row: row + k + 2][:, allowed]
        best_weight, best_op = rows.max(dim=1)  # max returns the first maximum on ties
        strongest = sorted(range(k + 2), key=lambda source: (-float(best_weight[source]), source))[:2]
        pairs += [(primitives[allowed[int(best_op[source])]], source) for source in strongest]
        row += k + 2
    return Genotype(normal=tuple(pairs))


def genotype_weights(genotype: Genotype, primitives: list[str] = PRIMITIVES,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Mixing weights that make a supernet compute ``genotype``'s cell: one-hot on its edges, zero elsewhere.

    With these weights every unchosen edge contributes nothing, so the supernet's output is the
    discrete cell's with the supernet's (shared) operation weights.
    """
    weights = torch.zeros(EDGES, len(primitives), dtype=dtype)
    rows = {edge: row for row, edge in enumerate(edge_inputs())}
    for index, (op, source) in enumerate(genotype.normal):
        weights[rows[(index // 2, source)], primitives.index(op)] += 1.0
    return weights


def count_skips(genotype: Genotype) -> int:
    """How many of the genotype's 8 edges are skip connections."""
    return sum(op == "skip_connect" for op, _ in genotype.normal)
