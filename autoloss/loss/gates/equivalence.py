"""Equivalence gate: equal losses written differently are evaluated once.

The fingerprint is a hash of the loss values and gradients on the fixed probe batch, rounded to a
few significant digits; ``Neg(Dot(Y,Log(Softmax(X))))`` and ``Dot(Y,Neg(Log(Softmax(X))))`` share
it. The gate remembers the first expression seen with each fingerprint (``seen`` can be preloaded
from a store when a search resumes) and rejects later ones as duplicates of it. The expression
that came first passes again when it comes back in a later batch (its results are then reused), but
only once per gate instance (one generation): two copies of one expression in a generation would
otherwise both be trained and take two of the top-K places.
"""

from __future__ import annotations

from typing import Sequence

from autoloss.engine.protocols import Verdict
from autoloss.loss.expression import Node
from autoloss.loss.probe import fingerprint_of, probe
from autoloss.loss.space import SearchSpace


def fingerprint(space: SearchSpace, node: Node) -> str | None:
    """The functional fingerprint of a tree, or None when it cannot be evaluated."""
    result = probe(space, node)
    return None if isinstance(result, Exception) else fingerprint_of(result)


class EquivalenceGate:
    name = "equivalence"

    def __init__(self, space: SearchSpace, seen: dict[str, str] | None = None):
        self.space = space
        self.seen: dict[str, str] = dict(seen or {})  # fingerprint -> first expression
        self.passed: set[str] = set()  # expressions this instance passed (one generation)

    def check(self, node: Node) -> Verdict:
        key = fingerprint(self.space, node)
        if key is None:
            return Verdict(self.name, False, "cannot be evaluated on the probe batch")
        text = str(node)
        first = self.seen.setdefault(key, text)
        if first != text:
            return Verdict(self.name, False, f"equivalent to {first} (same fingerprint {key})",
                           {"fingerprint": key, "duplicate_of": first})
        if text in self.passed:
            return Verdict(self.name, False, f"a second copy of {text} in this batch",
                           {"fingerprint": key, "duplicate_of": first})
        self.passed.add(text)
        return Verdict(self.name, True, f"new function (fingerprint {key})", {"fingerprint": key})

    def remember(self, key: str, expression: str) -> None:
        """Record a pass decided earlier (a stored verdict of this batch, when a search resumes)."""
        self.seen.setdefault(key, expression)
        self.passed.add(expression)

    def evaluate(self, candidates: Sequence[Node]) -> list[Verdict]:
        return [self.check(node) for node in candidates]
