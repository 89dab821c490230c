"""What every strategy shares: its options, and the hooks a strategy that needs no selection leaves alone."""

from __future__ import annotations

import math

from autoloss.engine.protocols import Stage
from autoloss.errors import UserError


def check(condition: bool, message: str) -> None:
    """Options validation: a :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)


def positive_seconds(name: str, value: float | None) -> None:
    """``--name`` is None or a positive number of seconds."""
    if value is not None:
        check(isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= 1e9,
              f"--{name.replace('_', '-')} must be a positive number of seconds (at most 1e9), got {value}")


class StrategyBase:
    """Holds validated ``options`` (an instance of ``Options``); every candidate with a fitness goes on,
    no bar, no generation extras, no early end. Strategies override what they decide."""

    name = "base"
    Options: type

    def __init__(self, options=None):
        self.options = options or self.Options()
        self.options.validate()

    def prepare(self, study) -> None:
        """Before the first generation, after the baseline: evaluate what the strategy compares with."""

    def admit(self, study, stage: Stage, rows: list, generation: int) -> tuple[list, str]:
        return list(rows), ""

    def advance(self, study, stage: Stage, scored: list, generation: int) -> tuple[set[int], dict[int, str]]:
        return {row.id for row, fitness in scored if fitness is not None}, {}

    def bar(self, study, stage: Stage) -> float | None:
        return None

    def generation_info(self, study, generation: int) -> dict:
        return {}

    def finished(self, study) -> bool:
        return False
