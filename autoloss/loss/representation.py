"""The loss tree as a representation of the engine: parse, key, describe, fingerprint, its gates.

Breeding (initial population, random trees, mutation, crossover) is the job of
:class:`autoloss.loss.genotype.LossGenotype`, the operators the evolutionary strategies use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from autoloss.loss.expression import Node
from autoloss.loss.fingerprint import IOU_FEEDS, training_fingerprint
from autoloss.loss.genotype import LossGenotype
from autoloss.loss.space import SearchSpace

KIND = "loss"


@dataclass
class LossGateOptions:
    """Options of the loss gates: when sympy decides the convergence properties, and for how long."""

    cpv_symbolic: str = "ambiguous"  # "ambiguous" | "always" | "never"
    cpv_timeout: float = 5.0  # seconds sympy may take per candidate


@dataclass
class LossRepresentation:
    """Loss trees of one search space; ``iou`` says how the task feeds the IoU input W."""

    space: SearchSpace
    iou: str = "iou"  # one of IOU_FEEDS: "one" (W = 1), "confidence" (detached p of the label), "iou"
    gate_options: LossGateOptions = field(default_factory=LossGateOptions)
    kind: str = KIND

    def __post_init__(self):
        if self.iou not in IOU_FEEDS:
            raise ValueError(f"iou must be one of {IOU_FEEDS}, got {self.iou!r}")
        self.operators = LossGenotype(self.space)

    def parse(self, text: str) -> Node:
        return self.operators.parse(text)

    def key(self, node: Node) -> str:
        return str(node)

    def describe(self, node: Node) -> dict[str, str]:
        return self.operators.describe(node)

    def fingerprint(self, node: Node) -> str | None:
        return training_fingerprint(self.space, node, self.iou)

    def initial(self) -> Node:
        return self.operators.initial()

    def gates(self) -> list:
        from autoloss.loss.gates.convergence import ConvergenceGate
        from autoloss.loss.gates.validity import ValidityGate

        options = self.gate_options
        return [ValidityGate(self.space),
                ConvergenceGate(self.space, symbolic=options.cpv_symbolic, timeout=options.cpv_timeout)]
