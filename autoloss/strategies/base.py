"""What every strategy shares: its options, and the hooks a strategy that needs no selection leaves alone."""

from __future__ import annotations

from autoloss.engine.protocols import Stage


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
