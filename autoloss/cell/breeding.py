"""Random cells, mutation and crossover: deterministic given a ``random.Random``.

Operations are drawn with the weights :data:`OP_WEIGHTS`: every operation 1 except ``none`` 0.25,
so a drawn edge is ``none`` with probability 0.25 / 7.25 (about 3.4 %); a cell with many ``none``
edges wastes its channels, and DARTS's own derivation never keeps ``none``.

- :func:`random_genotype`: each node reads two *different* earlier states, drawn uniformly (as a
  cell derived from a DARTS supernet does), each edge an operation drawn with the weights.
- :func:`mutate`: one edge (uniform over the 8) changes either its operation (to another one, by
  the weights) or its input (to another allowed state, uniformly), with probability 1/2 each; a
  ``none`` edge always changes its operation (its input does not matter). Up to 20 draws are tried
  for a child whose canonical form differs from the parent's; the child always differs from the
  parent in exactly one edge.
- :func:`crossover`: the children exchange the specs (both pairs) of a random non-empty, proper
  subset of the four nodes; any node spec is valid in either parent, since node k's allowed inputs
  depend only on k.
- :func:`initial_population`: each individual is the initial cell after 1 to 3 mutations (the way
  CSE-Autoloss starts from L_I), avoiding duplicate canonical forms where a few draws allow.
"""

from __future__ import annotations

import dataclasses
import random

from autoloss.cell.canonical import canonical_key
from autoloss.cell.genotype import EDGES, NODES, PRIMITIVES, Genotype, Pair, check

OP_WEIGHTS: dict[str, float] = {op: (0.25 if op == "none" else 1.0) for op in PRIMITIVES}
ATTEMPTS = 20


def _draw_op(rng: random.Random, exclude: str | None = None) -> str:
    ops = [op for op in PRIMITIVES if op != exclude]
    return rng.choices(ops, [OP_WEIGHTS[op] for op in ops])[0]


def random_genotype(rng: random.Random) -> Genotype:
    """A random cell: per node two different inputs and two weighted operations."""
    pairs: list[Pair] = []
    for k in range(NODES):
        for source in rng.sample(range(k + 2), 2):
            pairs.append((_draw_op(rng), source))
    return Genotype(normal=tuple(pairs))


def _mutate_once(genotype: Genotype, rng: random.Random) -> Genotype:
    edge = rng.randrange(EDGES)
    op, source = genotype.normal[edge]
    if op == "none" or rng.random() < 0.5:
        new: Pair = (_draw_op(rng, exclude=op), source)
    else:
        new = (op, rng.choice([i for i in range(edge // 2 + 2) if i != source]))
    normal = genotype.normal[:edge] + (new,) + genotype.normal[edge + 1:]
    return dataclasses.replace(genotype, normal=normal)


def mutate(genotype: Genotype, rng: random.Random) -> Genotype:
    """A child differing in exactly one edge, preferably one with a different canonical form."""
    check(genotype)
    parent = canonical_key(genotype)
    for _ in range(ATTEMPTS):
        child = _mutate_once(genotype, rng)
        if canonical_key(child) != parent:
            return child
    return child


def crossover(a: Genotype, b: Genotype, rng: random.Random) -> tuple[Genotype, Genotype]:
    """Two children exchanging the node specs of a random non-empty, proper subset of the nodes."""
    check(a)
    check(b)
    mask = rng.randrange(1, 2 ** NODES - 1)  # bit k set: node k is exchanged
    first, second = list(a.normal), list(b.normal)
    for k in range(NODES):
        if mask >> k & 1:
            for edge in (2 * k, 2 * k + 1):
                first[edge], second[edge] = second[edge], first[edge]
    return (dataclasses.replace(a, normal=tuple(first)), dataclasses.replace(b, normal=tuple(second)))


def initial_population(initial: Genotype, size: int, rng: random.Random, max_mutations: int = 3) -> list[Genotype]:
    """``size`` cells, each the initial one after 1..max_mutations mutations, distinct where possible."""
    check(initial)
    population: list[Genotype] = []
    seen = {canonical_key(initial)}
    for _ in range(size):
        for _ in range(ATTEMPTS):
            child = initial
            for _ in range(rng.randint(1, max_mutations)):
                child = mutate(child, rng)
            if canonical_key(child) not in seen:
                break
        seen.add(canonical_key(child))
        population.append(child)
    return population
