"""The canonical form of a cell: one representative for genotypes that compute the same function.

Two genotypes with the same canonical form compute the same function of (s0, s1) up to parameter
values (for finite inputs, in training and in evaluation mode, with or without drop-path). The
rules, applied node by node in order (node k only reads earlier states):

1. ``none`` ignores its input: a ``('none', j)`` edge becomes ``('none', 0)``.
2. A node is *identically zero* when both its edges are ``none`` (after these rules): it adds C
   zero channels to the output, whatever it read.
3. An edge reading an identically-zero node:
   - with a parameter-free operation that maps zeros to zeros (``skip_connect``, ``max_pool_3x3``,
     ``avg_pool_3x3``; a discrete cell's pools have no BN) outputs zeros: it becomes ``('none', 0)``
     (which may make its own node identically zero, rule 2);
   - with a conv operation it does not output zeros (its BN shifts, and in evaluation mode its
     running statistics, turn zeros into a learned, input-independent map): it is kept, but reads
     the *first* identically-zero node (all of them hold the same zeros).
4. The order of a node's two edges does not matter (the node sums them): the pair is sorted by
   (operation's position in ``PRIMITIVES``, input).
5. The reduce part (kept only for DARTS printing) is dropped.

Every node stays in place: all four are concatenated into the output, so none "reaches nothing";
an identically-zero node is normalised to two ``none`` edges rather than removed (the output keeps
4 x C channels). Not merged (the form is sound, not complete): nodes that compute the same thing,
which could be permuted, and different conv edges on the same input.
"""

from __future__ import annotations

import hashlib

from autoloss.cell.genotype import NODES, PRIMITIVES, Genotype, Pair, check, format_genotype

NONE_EDGE: Pair = ("none", 0)
# Operations without parameters that map all-zero inputs to all-zero outputs (a discrete cell's
# pools have no BN; max pooling pads with -inf, average pooling ignores the padding).
ZERO_PRESERVING = frozenset({"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"})


def zero_nodes(genotype: Genotype) -> set[int]:
    """States (2..5) whose node outputs zeros whatever the inputs (rule 2 above)."""
    form = canonical(genotype)
    return {k + 2 for k in range(NODES) if form.node(k) == (NONE_EDGE, NONE_EDGE)}


def canonical(genotype: Genotype) -> Genotype:
    """The canonical form (rules in the module docstring) of a valid genotype."""
    check(genotype)
    zero: list[int] = []  # identically-zero states, in order
    pairs: list[Pair] = []
    for k in range(NODES):
        node = []
        for op, source in genotype.node(k):
            if op == "none":
                node.append(NONE_EDGE)
            elif source in zero:
                node.append(NONE_EDGE if op in ZERO_PRESERVING else (op, zero[0]))
            else:
                node.append((op, source))
        if node == [NONE_EDGE, NONE_EDGE]:
            zero.append(k + 2)
        pairs += sorted(node, key=lambda pair: (PRIMITIVES.index(pair[0]), pair[1]))
    return Genotype(normal=tuple(pairs))


def canonical_key(genotype: Genotype) -> str:
    """The cell's identity up to equivalence: its canonical form, printed."""
    return format_genotype(canonical(genotype))


def fingerprint(genotype: Genotype) -> str:
    """A short hash of the canonical form (16 hex digits): equal for equivalent cells."""
    return hashlib.sha256(canonical_key(genotype).encode()).hexdigest()[:16]
