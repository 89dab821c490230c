"""The gate protocol: a gate takes a batch of candidates and returns one verdict per candidate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class Verdict:
    """What a gate decided about one candidate, in words a person can act on."""

    gate: str
    passed: bool
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.gate}: {'pass' if self.passed else 'REJECT'} - {self.reason}"


class Gate(Protocol):
    """Cheap gates come first in a pipeline; a candidate stops at the first gate it fails."""

    name: str

    def evaluate(self, candidates: Sequence[Any]) -> list[Verdict]: ...
