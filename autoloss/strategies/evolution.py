"""What the evolutionary strategies share: their options, breeding from parents, the defaults of a pipeline.

A child is bred as the paper's Algorithm 1 says: from one parent of the P best so far, crossover
with a second parent with probability p1, then mutation with probability p2 (always when the child
is a copy of a parent). The first generation (and any generation without parents) is the initial
individual after 1 to 3 mutations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from autoloss.engine.protocols import Gate, Proposal, Stage
from autoloss.strategies.base import StrategyBase, check, positive_seconds


@dataclass
class EvolutionOptions:
    """The budget and breeding of an evolutionary strategy (the paper's N, E, P, p1, p2)."""

    population: int = 100  # N: candidates per generation
    generations: int = 5  # E
    parents: int = 5  # P: the best so far that breed the next generation
    crossover: float = 0.5  # p1
    mutation: float = 0.8  # p2
    proxy_timeout: float | None = None  # seconds per proxy evaluation (None: the problem's default)
    max_evaluations: int | None = None  # stop once this many proxy evaluations are stored (None: no cap)

    def validate(self) -> None:
        for name in ("population", "generations", "parents"):
            value = getattr(self, name)
            check(isinstance(value, int) and 0 < value <= 1_000_000,
                   f"--{name} must be a positive integer (at most 1000000), got {value}")
        for name in ("crossover", "mutation"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and 0 <= value <= 1, f"--{name} is a probability in [0, 1], got {value}")
        positive_seconds("proxy_timeout", self.proxy_timeout)
        if self.max_evaluations is not None:
            check(self.max_evaluations > 0, f"--max-evaluations must be positive, got {self.max_evaluations}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def breed_one(study, parents: list[str], rng: random.Random, options: EvolutionOptions) -> Proposal:
    """One offspring of ``parents`` (keys): crossover with probability p1, mutation with p2 (or when a copy)."""
    rep, ops = study.representation, study.operators
    if not parents:
        child = rep.initial()
        for _ in range(rng.randint(1, 3)):
            child = ops.mutate(child, rng)
        return Proposal(child, (rep.key(rep.initial()),), "initial+mutation")
    pool = [rep.parse(p) for p in parents]
    a = rng.choice(pool)
    child, origin, from_ = a, [], [rep.key(a)]
    if rng.random() < options.crossover and len(pool) > 1:
        b = rng.choice([p for p in pool if rep.key(p) != rep.key(a)] or pool)
        child = ops.crossover(a, b, rng)[0]
        origin.append("crossover")
        from_.append(rep.key(b))
    if rng.random() < options.mutation or rep.key(child) in from_:
        child = ops.mutate(child, rng)
        origin.append("mutation")
    return Proposal(child, tuple(from_), "+".join(origin))


class EvolutionStrategy(StrategyBase):
    """An evolutionary strategy: breeds from the hall of fame; subclasses set gates and stages."""

    name = "evolution"
    Options = EvolutionOptions

    # -- what runs
    def cheap_gates(self, gates: list[Gate]) -> list[Gate]:
        return gates[:1]  # validity only; the engine's duplicate check follows it

    def stages(self, timeouts: dict[str, float]) -> list[Stage]:
        return [Stage("proxy", self.options.proxy_timeout or timeouts.get("proxy", 3600.0), ranks=True)]

    # -- what comes next
    def parents(self, study, generation: int | None) -> list[str]:
        """The P best so far: bred before ``generation``, or all of them (None: steady state)."""
        return [e.genotype for e in study.hall_of_fame(self.options.parents, before_generation=generation)]

    def propose(self, study, generation: int | None, count: int, rng: random.Random) -> list[Proposal]:
        parents = self.parents(study, generation) if generation != 0 else []
        if not parents and count > 1:
            rep = study.representation
            start = rep.key(rep.initial())
            return [Proposal(ind, (start,), "initial+mutation")
                    for ind in study.operators.initial_population(count, rng)]
        return [breed_one(study, parents, rng, self.options) for _ in range(count)]

    def evaluations_left(self, study) -> int | None:
        """What the cap on proxy evaluations leaves (None: no cap)."""
        cap = self.options.max_evaluations
        if cap is None:
            return None
        done = sum(1 for v in study.verdicts(gate=study.ranking.name)
                   if study.candidate(v.candidate_id).generation >= 0)
        return max(cap - done, 0)

    def admit(self, study, stage: Stage, rows: list, generation: int) -> tuple[list, str]:
        """The ranking stage runs no more candidates than the cap leaves (exactly at the cap)."""
        left = self.evaluations_left(study) if stage.ranks else None
        if left is None or len(rows) <= left:
            return list(rows), ""
        return list(rows[:left]), f"{len(rows) - left} more not run: the cap of {self.options.max_evaluations} proxy evaluations"

    def finished(self, study) -> bool:
        return self.evaluations_left(study) == 0
