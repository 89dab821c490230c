"""A toy representation with its own strategy, to prove the engine generic: bit strings, OneMax.

Nothing here imports the loss package. A genotype is a string of ``BITS`` zeros and ones; its
fitness counts the ones among the first ``USED`` bits (the last bits do nothing), so the
fingerprint is those first bits, and strings that differ only at the end are duplicates.

``python tests/toy.py OUT [--mode generational|steady-state] [--sleep S] [--resume]`` runs a search
into ``OUT/run.sqlite`` (what the SIGKILL test kills).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoloss.engine.protocols import Proposal, Stage, Verdict  # noqa: E402
from autoloss.engine.registry import register_kind, register_strategy  # noqa: E402
from autoloss.engine.study import Problem  # noqa: E402
from autoloss.errors import UserError  # noqa: E402
from autoloss.strategies.evolution import EvolutionOptions, EvolutionStrategy  # noqa: E402

BITS, USED = 12, 10
KIND = "bits"


class NotZeroOne:
    """A cheap gate: strings starting with 01 are rejected."""

    name = "not-01"

    def evaluate(self, candidates):
        return [Verdict(self.name, not c.startswith("01"), "starts with 01" if c.startswith("01") else "ok")
                for c in candidates]


class Bits:
    kind = KIND

    def parse(self, text: str) -> str:
        if len(text) != BITS or set(text) - {"0", "1"}:
            raise UserError(f"not a string of {BITS} bits: {text[:40]!r}")
        return text

    def key(self, genotype: str) -> str:
        return genotype

    def describe(self, genotype: str) -> dict[str, str]:
        return {"bits": genotype, "ones": str(genotype[:USED].count("1"))}

    def fingerprint(self, genotype: str) -> str:
        return genotype[:USED]

    def initial(self) -> str:
        return "0" * BITS

    def gates(self) -> list:
        return [NotZeroOne()]


class BitOperators:
    def initial_population(self, size: int, rng: random.Random) -> list[str]:
        return [self.mutate(Bits().initial(), rng) for _ in range(size)]

    def random(self, rng: random.Random) -> str:
        return "".join(rng.choice("01") for _ in range(BITS))

    def mutate(self, genotype: str, rng: random.Random) -> str:
        i = rng.randrange(BITS)
        return genotype[:i] + ("1" if genotype[i] == "0" else "0") + genotype[i + 1:]

    def crossover(self, a: str, b: str, rng: random.Random) -> tuple[str, str]:
        cut = rng.randrange(1, BITS)
        return a[:cut] + b[cut:], b[:cut] + a[cut:]


@dataclass
class HillOptions(EvolutionOptions):
    flips: int = 2  # mutations per child


class HillClimb(EvolutionStrategy):
    """The toy's own strategy: every child is the best so far with ``flips`` bit flips; two stages."""

    name = "hill"
    Options = HillOptions

    def cheap_gates(self, gates):
        return list(gates)

    def stages(self, timeouts):
        return [Stage("quick", timeouts.get("quick", 60.0)), Stage("full", timeouts.get("full", 60.0), ranks=True)]

    def propose(self, study, generation, count, rng):
        best = study.hall_of_fame(1, before_generation=generation)  # earlier generations only: resumable
        start = best[0].genotype if best else study.representation.initial()
        children = []
        for _ in range(count):
            child = start
            for _ in range(self.options.flips):
                child = study.operators.mutate(child, rng)
            children.append(Proposal(child, (start,), "flips"))
        return children

    def advance(self, study, stage, scored, generation):
        kept = sorted((f, row.index, row) for row, f in scored if f is not None)[-3:]  # the best 3 go on
        chosen = {row.id for _, _, row in kept}
        return chosen, {row.id: ("in the best 3" if row.id in chosen else "not in the best 3")
                        for row, f in scored if f is not None}

    def bar(self, study, stage):
        return 0.0 if stage.name == "quick" else None


def onemax(task: dict, genotype: str, stage: str, seed: int) -> dict:
    """Fitness: the share of ones among the used bits (``quick``: a noisy copy of it)."""
    time.sleep(task.get("sleep", 0.0))
    ones = genotype[:USED].count("1") / USED
    return {"fitness": ones if stage == "full" else ones - 0.05 * (genotype[0] == "0")}


def onemax_with_behaviour(task: dict, genotype: str, stage: str, seed: int) -> dict:
    """:func:`onemax` that also reports a behaviour: the number of ones, which many bit strings share."""
    return {**onemax(task, genotype, stage, seed), "behaviour": f"{genotype[:USED].count('1')} ones"}


class Describer:
    problem = None

    def __init__(self, config):
        self.space = None

    def describe(self, text):
        return {"expression": text, "infix": f"{text[:USED].count('1')} ones", "latex": None}

    def infix(self, text):
        return self.describe(text)["infix"]

    def ready_name(self, text):
        return None


class _Kind:
    describer = Describer


register_strategy(HillClimb)
register_kind(KIND, _Kind)


def problem(sleep: float = 0.0, evaluate=onemax) -> Problem:
    return Problem(representation=Bits(), operators=BitOperators(), evaluate=evaluate, task={"sleep": sleep},
                   metric="ones", timeouts={"quick": 60.0, "full": 60.0})


def main() -> int:
    from autoloss.engine.executors import LocalExecutor
    from autoloss.engine.schedulers import run_search
    from autoloss.engine.store import RunStore

    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--mode", default="generational")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    store = RunStore(Path(args.out) / "run.sqlite")
    executor = LocalExecutor(workers=2)
    try:
        result = run_search(problem(args.sleep), HillClimb(HillOptions(population=8, generations=4, parents=2)),
                            store, executor, seed=args.seed, mode=args.mode)
    finally:
        executor.close()
        store.close()
    print(" ".join(f"{e.genotype}:{e.fitness:.2f}" for e in result.best))
    print("loss package imported:", any(name.startswith("autoloss.loss") for name in sys.modules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
