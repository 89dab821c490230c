"""Cheap gates for cells: structural validity and a parameter / multiply-add budget.

Each gate returns one :class:`Verdict` per candidate, with a one-line reason. Equivalence is left
to the engine, which deduplicates by :func:`autoloss.cell.canonical.fingerprint` (the structure
gate records it in its metrics as ``fingerprint``).
"""

from __future__ import annotations

from typing import Sequence

from autoloss.cell.canonical import canonical, fingerprint, zero_nodes
from autoloss.cell.cost import count_flops, count_parameters
from autoloss.cell.genotype import NODES, Genotype, problems
from autoloss.engine.protocols import Verdict

INPUT_NAMES = ("input 0 (Block3, c_{k-2})", "input 1 (Block4, c_{k-1})")


def inputs_reaching_output(genotype: Genotype) -> set[int]:
    """Which cell inputs (0, 1) the output depends on, through edges other than ``none``.

    Read on the canonical form, so an edge that outputs zeros (a zero-preserving operation on an
    identically-zero node) carries no dependence.
    """
    form = canonical(genotype)
    depends: list[set[int]] = [{0}, {1}]
    for k in range(NODES):
        depends.append(set().union(*(depends[source] for op, source in form.node(k) if op != "none")))
    return set().union(*depends[2:])


class _CellGate:
    """A gate that checks one valid genotype at a time (an invalid one is rejected with its first problem)."""

    name = "cell"

    def evaluate(self, candidates: Sequence[Genotype]) -> list[Verdict]:
        return [self._one(g) for g in candidates]

    def _one(self, genotype: Genotype) -> Verdict:
        found = problems(genotype)
        if found:
            return Verdict(self.name, False, f"invalid genotype: {found[0]}")
        return self.check(genotype)

    def check(self, genotype: Genotype) -> Verdict:
        raise NotImplementedError


class StructureGate(_CellGate):
    """Valid indices and operations, not all edges ``none``, and an output that depends on both inputs."""

    name = "structure"

    def check(self, genotype: Genotype) -> Verdict:
        metrics = {"fingerprint": fingerprint(genotype), "zero_nodes": len(zero_nodes(genotype))}
        if all(op == "none" for op, _ in genotype.normal):
            return Verdict(self.name, False, "all edges are 'none': the cell outputs zeros", metrics)
        if metrics["zero_nodes"] == NODES:
            return Verdict(self.name, False, "every node is identically zero ('none' edges, or pools and "
                           "skips reading zero nodes): the cell outputs zeros", metrics)
        used = inputs_reaching_output(genotype)
        metrics["inputs_used"] = sorted(used)
        missing = [INPUT_NAMES[i] for i in (0, 1) if i not in used]
        if missing:
            return Verdict(self.name, False, f"the output ignores {' and '.join(missing)}: no path of "
                           "edges other than 'none' leads from it to a node", metrics)
        return Verdict(self.name, True, "valid cell; its output depends on both inputs", metrics)


class BudgetGate(_CellGate):
    """At most ``max_params`` parameters and ``max_flops`` multiply-adds (None: no limit) at the given size."""

    name = "budget"

    def __init__(self, max_params: int | None = None, max_flops: int | None = None,
                 channels: int = 64, height: int = 18, width: int = 18):
        for label, value in (("max_params", max_params), ("max_flops", max_flops)):
            if value is not None and value < 0:
                raise ValueError(f"{label} must be non-negative, got {value}")
        self.max_params = max_params
        self.max_flops = max_flops
        self.channels, self.height, self.width = channels, height, width

    def check(self, genotype: Genotype) -> Verdict:
        params = count_parameters(genotype, self.channels)
        flops = count_flops(genotype, self.channels, self.height, self.width)
        metrics = {"params": params, "flops": flops}
        size = f"C={self.channels}, {self.height}x{self.width}"
        if self.max_params is not None and params > self.max_params:
            return Verdict(self.name, False, f"{params:,} parameters exceed the budget of {self.max_params:,} "
                           f"({size}): use fewer or smaller convs (3x3, dil_conv, skips, pools)", metrics)
        if self.max_flops is not None and flops > self.max_flops:
            return Verdict(self.name, False, f"{flops:,} multiply-adds exceed the budget of {self.max_flops:,} "
                           f"({size}): use fewer or smaller convs (3x3, dil_conv, skips, pools)", metrics)
        return Verdict(self.name, True, f"{params:,} parameters, {flops:,} multiply-adds ({size}): "
                       "within the budget", metrics)
