"""Random search, the paper's other Table 5 baseline: random genotypes, validity only, all to the proxy."""

from __future__ import annotations

import random
from dataclasses import dataclass

from autoloss.engine.protocols import Proposal
from autoloss.strategies.evolution import EvolutionOptions, EvolutionStrategy


@dataclass
class RandomOptions(EvolutionOptions):
    pass


class RandomStrategy(EvolutionStrategy):
    name = "random"
    Options = RandomOptions

    def propose(self, study, generation: int | None, count: int, rng: random.Random) -> list[Proposal]:
        return [Proposal(study.operators.random(rng), (), "random") for _ in range(count)]
