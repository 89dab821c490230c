"""The protocols of the engine: what a representation, a gate, a strategy and a scheduler are.

The data flows one way::

    representation -> gates -> strategy -> executor -> store -> report / export

- A :class:`Representation` says what a genotype is: parse it from text, name it by an identity key,
  describe it for people, fingerprint the function it computes. It owns its cheap gates.
- :class:`Operators` say how genotypes are bred (initial population, random, mutation, crossover);
  strategies use them, the engine never does.
- A :class:`Gate` is "candidates in, verdicts out". The duplicate check is not a gate: it is an
  engine service keyed by the representation's fingerprint (:mod:`autoloss.engine.duplicates`).
- A :class:`Strategy` decides what to evaluate next and what goes on after each stage; a
  :class:`Scheduler` (generational, steady-state, or a strategy's own) calls the hooks it declares
  (a bred strategy's are those of :class:`BreedingStrategy`) and drives it against the
  :class:`~autoloss.engine.study.Study`, which owns the store, the executor, the progress and the one
  path (``Study.record``) through which every result reaches the store.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager, Protocol, Sequence

from autoloss.errors import UserError


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
    """A cheap, in-process check; a candidate stops at the first gate it fails."""

    name: str

    def evaluate(self, candidates: Sequence[Any]) -> list[Verdict]: ...


class Representation(Protocol):
    """What a genotype is. ``kind`` is stored with each run, so readers dispatch on it."""

    kind: str

    def parse(self, text: str) -> Any:
        """The genotype written in ``text``; a :class:`~autoloss.errors.UserError` when it is not one."""

    def key(self, genotype: Any) -> str:
        """The identity key: the text stored for the candidate (parse(key(g)) gives g back)."""

    def describe(self, genotype: Any) -> dict[str, str]:
        """Forms for people (e.g. prefix, infix and LaTeX of a loss; the printed cell)."""

    def fingerprint(self, genotype: Any) -> str | None:
        """The function the genotype computes, as training sees it; None when it cannot be computed."""

    def initial(self) -> Any:
        """The individual searches start from (and the default baseline)."""

    def gates(self) -> list[Gate]:
        """The cheap gates of this representation, in pipeline order."""


class Operators(Protocol):
    """How genotypes of one representation are bred; every draw comes from the ``rng`` passed in."""

    def initial_population(self, size: int, rng: random.Random) -> list[Any]: ...
    def random(self, rng: random.Random) -> Any: ...
    def mutate(self, genotype: Any, rng: random.Random) -> Any: ...
    def crossover(self, a: Any, b: Any, rng: random.Random) -> tuple[Any, Any]: ...


@dataclass(frozen=True)
class Stage:
    """An expensive evaluation stage (run in workers): its name, time limit and whether it ranks."""

    name: str
    timeout: float
    ranks: bool = False  # the stage whose fitness makes the hall of fame (the proxy)


@dataclass(frozen=True)
class Proposal:
    """A genotype a strategy wants evaluated, with where it came from."""

    genotype: Any
    parents: tuple[str, ...] = ()
    origin: str = ""


class Strategy(Protocol):
    """Decides what to evaluate; registered by name (:mod:`autoloss.engine.registry`).

    ``options`` is the strategy's own dataclass (``Options``). Every scheduler calls:

    - ``cheap_gates(gates)``: which of the representation's gates it runs, in order; the engine adds
      its duplicate check after the first of them (or first, when there are none);
    - ``stages(timeouts)``: its expensive stages, in order, the last one ranking.

    A scheduler declares the further hooks it calls (``Scheduler.hooks``), and refuses a strategy
    that lacks one (:func:`check_hooks`): the generational and steady-state schedulers call those of
    :class:`BreedingStrategy`. A strategy that is not bred brings its own scheduler (``scheduler``
    attribute): the differentiable strategies (DARTS, MS-DARTS) write every epoch's derived
    genotype through ``study.add_candidate`` and ``study.record`` like a bred one (stage ``derived``,
    with the epoch's hold-out losses as metrics), so reports, exports and evaluations treat their
    result like an evolved one; their supernet comes from the problem (``Problem.supernet``) and its
    state goes into checkpoints in the run directory (``RUN_DIR/work/<strategy>/seed-N.pt``) so a
    killed search resumes exactly (:mod:`autoloss.differentiable.scheduler`).
    ``tests/test_engine_toy.py`` holds a test double of one.
    """

    name: ClassVar[str]
    options: Any

    def cheap_gates(self, gates: list[Gate]) -> list[Gate]: ...
    def stages(self, timeouts: dict[str, float]) -> list[Stage]: ...


class BreedingStrategy(Strategy, Protocol):
    """A strategy the generational and steady-state schedulers drive; the hooks they call:

    - ``prepare(study)``: once the baseline is evaluated, before the first generation: evaluate what
      else it compares with (cse: the initial individual's MOS, with ``mos_reference="initial"``);
    - ``propose(study, generation, count, rng)``: ``count`` new proposals for ``generation``
      (``None`` in steady state: one proposal from the best so far); for a resumed run to end as an
      uninterrupted one, it may read only results of generations before ``generation``;
    - ``admit(study, stage, rows, generation)``: the rows that run ``stage`` (e.g. a cap), and a note;
    - ``advance(study, stage, scored, generation)``: of the candidates just scored on ``stage``
      (``[(row, fitness or None)]``, in index order), the ids that go on to the next stage, and a
      reason per candidate for the store (generational scheduling);
    - ``bar(study, stage)``: in steady state, the fitness a candidate needs on ``stage`` to go on
      (None: any); ``generation_info(study, generation)``: extras for the generation's summary;
    - ``finished(study)``: whether the budget is spent early (e.g. a cap on proxy evaluations).
    """

    def prepare(self, study: Any) -> None: ...
    def propose(self, study: Any, generation: int, count: int, rng: random.Random) -> list[Proposal]: ...
    def admit(self, study: Any, stage: Stage, rows: list, generation: int) -> tuple[list, str]: ...
    def advance(self, study: Any, stage: Stage, scored: list, generation: int) -> tuple[set[int], dict[int, str]]: ...
    def bar(self, study: Any, stage: Stage) -> float | None: ...
    def generation_info(self, study: Any, generation: int) -> dict: ...
    def finished(self, study: Any) -> bool: ...


BREEDING_HOOKS = ("prepare", "propose", "admit", "advance", "bar", "generation_info", "finished")


class Scheduler(Protocol):
    """Drives a strategy against a study until the budget is spent; resumable from the store."""

    name: ClassVar[str]
    hooks: ClassVar[tuple[str, ...]]  # the strategy's methods it calls beyond cheap_gates and stages

    def run(self, study: Any, strategy: Strategy) -> Any: ...


def check_hooks(scheduler: Scheduler, strategy: Strategy) -> None:
    """A one-line :class:`~autoloss.errors.UserError` when ``strategy`` lacks a hook ``scheduler`` calls."""
    missing = [hook for hook in scheduler.hooks if not callable(getattr(strategy, hook, None))]
    if not missing:
        return
    if getattr(strategy, "scheduler", None) is not None:
        raise UserError(f"--strategy {strategy.name} runs with its own scheduler, not --mode generational/steady-state")
    raise UserError(f"--strategy {strategy.name} lacks {', '.join(missing)}, which --mode {scheduler.name} calls")


Evaluate = Callable[[dict, str, str, int], dict]  # (task, genotype key, stage, seed) -> {"fitness": ...}


@dataclass(frozen=True)
class Supernet:
    """What a differentiable search needs of a problem (``Problem.supernet``); both are module-level
    functions, as ``search`` runs in worker processes.

    - ``search(task, seed, *, steps_per_epoch, architecture_batches, holdout_batches, skip_dropout)``:
      a context manager that builds one seed's supernet, its loss and the batches of its splits
      (:class:`~autoloss.differentiable.worker.SupernetSetup`) and holds the worker's settings
      (e.g. its torch threads) while the epoch runs in it;
    - ``prepare(task)``: before the first epoch, in the searching process: make sure the data the
      supernet needs exists (e.g. write the architecture split of a synthetic data set), or raise a
      :class:`~autoloss.errors.UserError`.
    """

    search: Callable[..., ContextManager[Any]]
    prepare: Callable[[dict], None]
