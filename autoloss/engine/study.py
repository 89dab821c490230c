"""The engine core: one search run, whatever the representation and the strategy.

A :class:`Study` owns the store, the executor, the progress display, the duplicate check and the
retries, and records every result through one path (:meth:`Study.record`). Schedulers
(:mod:`autoloss.engine.schedulers`) drive a strategy against it; strategies read it (the baseline,
the hall of fame, a candidate's scores) to decide what comes next. It is the strategies' one door
to the store: they read candidates and verdicts, keep their own state and summaries through it.
Nothing here knows what a genotype is beyond the
:class:`~autoloss.engine.protocols.Representation` protocol.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from autoloss.engine.duplicates import GATE as DUPLICATE_GATE
from autoloss.engine.duplicates import Duplicates
from autoloss.engine import evidence
from autoloss.engine.executors import Job
from autoloss.engine.numbers import finite_number
from autoloss.engine.progress import Progress
from autoloss.engine.protocols import Evaluate, Gate, Proposal, Representation, Stage, Supernet, Verdict
from autoloss.engine.store import (
    BASELINE_GENERATION,
    DETERMINISTIC,
    REFERENCE_GENERATION,
    CandidateRow,
    RunStore,
    StoreError,
    VerdictRow,
    config_difference,
)
from autoloss.timelimit import Outcome

DEFAULT_RETRIES = 2  # transient failures (timeout, crashed worker, out of memory) rerun on resume
# An evaluation's optional metric: a digest of what the trained model predicts on the scored split.
# Two candidates with the same behaviour on a stage trained the same model there (e.g. losses that differ
# only where the task feeds a constant): near-clones whose further evaluations would repeat each other.
BEHAVIOUR = "behaviour"


@dataclass
class Problem:
    """What is searched: a representation, its breeding operators, and the expensive evaluation.

    ``evaluate(task, genotype_key, stage, seed)`` is a module-level function (it runs in worker
    processes) returning a dict with a numeric ``fitness``. ``timeouts`` are the default seconds per
    stage name; a strategy's options may override them.
    """

    representation: Representation
    operators: Any
    evaluate: Evaluate
    task: dict
    metric: str = "fitness"  # what ``fitness`` measures, for people (e.g. "accuracy", "mAP", "AO")
    baseline: str | None = None  # the individual to compare with (default: the initial one)
    timeouts: dict[str, float] = field(default_factory=dict)
    start_method: str | None = None  # multiprocessing start method its local workers need (None: default)
    supernet: Supernet | None = None  # a differentiable search's hooks (None: only evolved or random search)


@dataclass
class Evaluated:
    """A candidate with its score on the ranking stage (and the other stages' scores)."""

    genotype: str
    fitness: float
    generation: int
    candidate_id: int = 0
    scores: dict[str, float | None] = field(default_factory=dict)
    sd: float | None = None  # the spread of ``fitness`` over the candidate's seeds (None: one seed)
    seeds: int = 1  # how many seeds ``fitness`` (their mean) is over

    @property
    def score_text(self) -> str:
        """``0.0810 ± 0.0120 sd (3 seeds)``, or the one value with ``(1 seed)``."""
        return (f"{self.fitness:.4f}" + (f" ± {self.sd:.4f} sd" if self.sd is not None else "")
                + f" ({self.seeds} seed{'s' if self.seeds != 1 else ''})")

    @property
    def mos(self) -> float | None:  # the paper's name for the first training stage
        return self.scores.get("mos")


@dataclass
class SearchResult:
    best: list[Evaluated]
    baseline: Evaluated | None
    proxy_evaluations: int  # ranking-stage evaluations run in this session
    generations: list[dict] = field(default_factory=list)
    confirmation: dict | None = None  # the final confirmation's outcome (autoloss.engine.confirmation)


def seeded_rng(seed: int, *salt) -> random.Random:
    """An independent, reproducible random stream for (seed, salt...)."""
    digest = hashlib.sha256(repr((seed,) + salt).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def finite_fitness(result: Any) -> float | None:
    return finite_number(result.get("fitness") if isinstance(result, dict) else None)


def failure_status(outcome: Outcome) -> str:
    """The store status of a failed outcome: transient (timeout, crashed, oom) or deterministic."""
    error = outcome.error or ""
    if outcome.status == "error":
        if error.startswith("Diverged"):
            return "diverged"
        if "out of memory" in error.lower() or error.startswith("MemoryError") or "OutOfMemory" in error:
            return "oom"
    return outcome.status if outcome.status in ("timeout", "crashed", "error") else "failed"


def run_config(problem: Problem, strategy, seed: int, scheduler: str, extra_config: dict | None,
               screening: list[str] | None = None) -> dict:
    """The config stored with a run (a resume must match it): what is searched, how, and its pipeline."""
    stages = strategy.stages(problem.timeouts)
    if screening is None:
        names = [gate.name for gate in strategy.cheap_gates(problem.representation.gates())]
        screening = names[:1] + [DUPLICATE_GATE] + names[1:]
    return {"representation": problem.representation.kind, "metric": problem.metric, "strategy": strategy.name,
            "options": stored_options(strategy.options), "scheduler": scheduler, "seed": seed, "task": problem.task,
            **(extra_config or {}), "pipeline": screening + [s.name for s in stages],
            "stages": [s.name for s in stages], "ranking": next(s.name for s in stages if s.ranks)}


def stored_options(options) -> dict:
    """A strategy's options as its run stores them. An option added after runs were stored is left
    out while it holds the value those runs behaved as (the options class's ``LEGACY`` map: name ->
    value), so they still resume."""
    stored = asdict(options)
    for name, value in getattr(type(options), "LEGACY", {}).items():
        if stored.get(name) == value:
            del stored[name]
    return stored


def restored_options(options_class, stored: dict) -> dict:
    """The inverse of :func:`stored_options`: a run's stored options with every ``LEGACY`` option it left
    out at the value the run behaved as."""
    return {**getattr(options_class, "LEGACY", {}), **stored}


def check_resume(store, config: dict, problem: Problem) -> None:
    """Refuse (before anything is written) to resume a store of another search: its config and its
    baseline must be the ones this search makes. ``store`` may be read-only."""
    stored = store.load_config()
    if stored is not None and (key := config_difference(stored, config)) is not None:
        raise StoreError(f"cannot resume {store.path} with different options: the stored run differs at {key!r}")
    rep = problem.representation
    expected = rep.key(rep.parse(problem.baseline) if problem.baseline else rep.initial())
    for row in store.candidates(BASELINE_GENERATION):
        if row.genotype != expected:
            raise StoreError(f"{store.path}: its baseline is {row.genotype[:80]!r}, but this search starts from "
                             f"{expected[:80]!r}: the store was written by another search or altered; not resumed")


class Study:
    """Runs one search into a store; everything it learns is recorded the moment it is known."""

    def __init__(self, problem: Problem, strategy, store: RunStore, executor, progress: Progress | None = None,
                 seed: int = 0, scheduler: str = "generational", extra_config: dict | None = None,
                 retries: int = DEFAULT_RETRIES, baseline_seeds: int = 1, confirmation=None):
        self.problem, self.strategy, self.store, self.executor = problem, strategy, store, executor
        self.representation = problem.representation
        self.operators = problem.operators
        self.progress = progress or Progress(enabled=False)
        self.seed, self.retries = seed, retries
        self.stages: list[Stage] = strategy.stages(problem.timeouts)
        self.ranking = next(s for s in self.stages if s.ranks)
        self.gates: list[Gate] = strategy.cheap_gates(self.representation.gates())
        self.config = run_config(problem, strategy, seed, scheduler, extra_config, self.screening_steps())
        store.save_config(self.config)
        self.duplicates = Duplicates(store, BASELINE_GENERATION)
        self.evaluations = 0  # ranking-stage evaluations run in this session
        self.baseline_seeds = baseline_seeds  # the baseline's seeds on the ranking stage: the proxy's noise
        self.confirmation = confirmation  # ConfirmSettings of autoloss.engine.confirmation (None: no confirmation)
        self.seed_evaluations = 0  # extra-seed evaluations (seed index > 0) run in this session
        self._seeds: dict[int, dict[int, VerdictRow]] | None = None  # the ranking stage's seed verdicts, cached

    # ------------------------------------------------------------------ recording: the one path

    def add_candidate(self, generation: int, index: int, proposal: Proposal) -> CandidateRow:
        key = self.representation.key(proposal.genotype)
        cid = self.store.add_candidate(generation, index, key, list(proposal.parents), proposal.origin)
        return self.store.candidate(cid)

    def record(self, row: CandidateRow, verdict: Verdict, status: str = "ok", seconds: float = 0.0,
               attempts: int = 1) -> VerdictRow:
        """Store a verdict (a cheap gate's, a stage's, a selection's) and tell the progress display."""
        self.store.add_verdict(row.id, verdict.gate, verdict.passed, verdict.reason, verdict.metrics, status,
                               seconds, attempts)
        stored = self.store.verdict(row.id, verdict.gate)
        k = evidence.seed_index(verdict.gate, self.ranking.name)
        if k is not None and self._seeds is not None:
            self._seeds.setdefault(row.id, {})[k] = stored
        return stored

    # ------------------------------------------------------------------ reading, for strategies

    def fitness(self, row_id: int, stage: str) -> float | None:
        verdict = self.store.verdict(row_id, stage)
        return finite_fitness(verdict.metrics) if verdict is not None and verdict.status == "ok" else None

    def behaviour(self, row_id: int, stage: str) -> str | None:
        """The candidate's :data:`BEHAVIOUR` on ``stage`` (None: not evaluated there, or not reported)."""
        verdict = self.store.verdict(row_id, stage)
        value = verdict.metrics.get(BEHAVIOUR) if verdict is not None and verdict.status == "ok" else None
        return value if isinstance(value, str) and value else None

    def scores(self, row_id: int) -> dict[str, float | None]:
        return {stage.name: self.fitness(row_id, stage.name) for stage in self.stages}

    # -- seeds (autoloss.engine.evidence): the ranking stage's seed k > 0 is the verdict of gate "stage#k"

    def seed_verdicts(self, row_id: int, stage: str | None = None) -> dict[int, VerdictRow]:
        """The stored seed verdicts of a candidate on ``stage`` (default: the ranking stage): index -> verdict."""
        stage = stage or self.ranking.name
        if stage != self.ranking.name:
            found = self.store.verdict(row_id, stage)
            return {0: found} if found is not None else {}
        if self._seeds is None:
            self._seeds = evidence.seed_table(self.store.verdicts(), stage)
        return dict(self._seeds.get(row_id, {}))

    def seed_fitnesses(self, row_id: int, stage: str | None = None, fresh: bool = False) -> list[float]:
        """The finite fitnesses of a candidate's seeds in seed order (a duplicate's: its owner's;
        ``fresh``: without seed 0, the evaluation that ranked it)."""
        return evidence.values(self.seed_verdicts(self.owner(row_id), stage), fresh=fresh)

    def sample(self, row_id: int, stage: str | None = None, fresh: bool = False) -> evidence.Sample:
        return evidence.Sample(tuple(self.seed_fitnesses(row_id, stage, fresh)))

    def mean_fitness(self, row_id: int, stage: str | None = None) -> float | None:
        """The mean fitness over a candidate's seeds (its one fitness when it has one seed)."""
        return self.sample(row_id, stage).mean

    def owner(self, row_id: int) -> int:
        """The candidate whose evaluations count for ``row_id``: itself, or the one it duplicates."""
        return evidence.owner_id(self.store, row_id)

    def baseline_sample(self) -> evidence.Sample:
        """The baseline's ranking-stage scores over its seeds: the proxy's noise."""
        row = self.baseline_row()
        return self.sample(row.id) if row is not None else evidence.Sample(())

    def claims(self) -> dict[int, evidence.Comparison]:
        """Every evaluated candidate's fresh seeds against the baseline's (the claim rule), Holm-adjusted over
        the family of candidates tested with fresh seeds; keyed by the candidate that owns the seeds."""
        return evidence.claims(self.store, self.ranking.name)

    def seed_stage(self, stage: Stage, k: int) -> Stage:
        """The stage whose verdict stores seed ``k`` of ``stage`` (``stage`` itself for 0)."""
        return stage if k == 0 else Stage(evidence.seed_gate(stage.name, k), stage.timeout, ranks=False)

    def evaluate_seeds(self, rows: Sequence[CandidateRow], stage: Stage | None = None, n: int = 1) -> dict[int, list[float]]:
        """Give every row (a duplicate: its owner) seeds 0 .. n-1 of ``stage`` (default: the ranking
        stage); what is stored is reused, what failed transiently is retried, the rest runs in parallel.
        Returns each row's finite fitnesses over its seeds."""
        stage = stage or self.ranking
        owners, seen = [], set()
        for row in rows:
            owner = self.store.candidate(self.owner(row.id))
            if owner.id not in seen:
                seen.add(owner.id)
                owners.append(owner)
        self.evaluate(owners, stage)  # seed 0: the stage's own verdict
        self.evaluate_targets({owner.id: n for owner in owners}, stage)
        return {row.id: self.seed_fitnesses(row.id, stage.name) for row in rows}

    def evaluate_targets(self, targets: dict[int, int], stage: Stage | None = None) -> int:
        """Run the missing seeds 1 .. n-1 of each candidate id -> n, all in parallel; how many ran."""
        stage = stage or self.ranking
        todo = []
        for row_id, n in targets.items():
            row = self.store.candidate(row_id)
            for k in range(1, n):
                seeded = self.seed_stage(stage, k)
                run, attempt = self.needs_run(row, seeded)
                if run:
                    todo.append((row, seeded, k, attempt))
        jobs = (Job(self.problem.evaluate, self.problem.task, row.genotype, stage.name, evidence.seed_value(self.seed, k))
                for row, _, k, _ in todo)
        for index, _, outcome in self.executor.stream(jobs, stage.timeout, on_wait=self.progress.tick,
                                                      poll=self.progress.poll):
            row, seeded, _, attempt = todo[index]
            self.record_outcome(row, seeded, outcome.value if outcome.ok else None, outcome, attempt)
            self.seed_evaluations += 1
        return len(todo)

    def seeds_tried(self, row_id: int, stage: str | None = None) -> int:
        """How many seeds of the candidate (a duplicate: its owner) are settled (ok, or failed for good)."""
        stage_name = stage or self.ranking.name
        settled = 0
        for k, verdict in self.seed_verdicts(self.owner(row_id), stage_name).items():
            if verdict.status == "ok" or verdict.status in DETERMINISTIC or verdict.attempts > self.retries:
                settled += 1
        return settled

    def hall_of_fame(self, n: int, before_generation: int | None = None, searched_only: bool = False,
                     retrained_first: bool = False) -> list[Evaluated]:
        """The best ``n`` ranking-stage results (one per genotype), optionally bred before a generation;
        a candidate with several seeds ranks by its mean over them. ``retrained_first``: the order shown to
        people (:func:`~autoloss.engine.evidence.standing`: retrained candidates before one-seed ones)."""
        self.seed_verdicts(-1)  # the seed cache, loaded once
        if any(len(seeds) > 1 for seeds in self._seeds.values()):
            rows = self.store.best(self.ranking.name, 1_000_000)  # a mean may move a candidate: rank them all
        else:
            rows = self.store.best(self.ranking.name,
                                   1_000_000 if before_generation is not None or searched_only else n)
        if before_generation is not None:
            rows = [(c, v) for c, v in rows if c.generation < before_generation]
        if searched_only:
            rows = [(c, v) for c, v in rows if c.generation != BASELINE_GENERATION]
        ranked = []
        for c, v in rows:  # an evaluated candidate is its own owner: its seeds are its own
            sample = evidence.Sample(tuple(evidence.values(self._seeds.get(c.id, {}))))
            if sample.n > 1:
                ranked.append((sample.mean, c, sample))
            else:
                ranked.append((float(v.metrics["fitness"]), c, None))
        if retrained_first:
            ranked.sort(key=lambda item: evidence.standing(item[0], item[2].n if item[2] else 1))
        else:
            ranked.sort(key=lambda item: -item[0])  # stable: ties keep the store's order (the lower id)
        return [Evaluated(c.genotype, mean, c.generation, c.id, self.scores(c.id),
                          sample.sd if sample else None, sample.n if sample else 1) for mean, c, sample in ranked[:n]]

    def baseline_row(self) -> CandidateRow | None:
        rows = self.store.candidates(BASELINE_GENERATION)
        return rows[0] if rows else None

    def candidates(self, generation: int | None = None) -> list[CandidateRow]:
        """The stored candidates of ``generation`` (None: of every generation)."""
        return self.store.candidates(generation)

    def candidate(self, row_id: int) -> CandidateRow:
        return self.store.candidate(row_id)

    def verdict(self, row_id: int, gate: str) -> VerdictRow | None:
        """The stored verdict of ``gate`` (a gate's, a stage's, a strategy's own) on a candidate, if any."""
        return self.store.verdict(row_id, gate)

    def verdicts(self, generation: int | None = None, gate: str | None = None) -> list[VerdictRow]:
        return self.store.verdicts(generation, gate)

    # ------------------------------------------------------------------ a strategy's own state and files

    def get_state(self, key: str, default: Any = None) -> Any:
        """A value a strategy stored under ``key`` (prefixed with its name) with :meth:`set_state`."""
        return self.store.get_state(key, default)

    def set_state(self, key: str, value: Any) -> None:
        self.store.set_state(key, value)

    def finish_generation(self, generation: int, summary: dict) -> None:
        """Store (or rewrite) the summary of a finished generation (a differentiable search's epoch)."""
        self.store.finish_generation(generation, summary)

    def generation_summary(self, generation: int) -> dict | None:
        return self.store.generation_summary(generation)

    def finished_generations(self) -> list[int]:
        return self.store.finished_generations()

    def work_dir(self, name: str) -> Path:
        """``RUN_DIR/work/<name>``: where a strategy keeps its files (checkpoints) beside the store; not created."""
        return Path(self.store.path).parent / "work" / name

    # ------------------------------------------------------------------ the baseline

    def baseline(self) -> Evaluated | None:
        """Evaluate the baseline on every stage (once per run); its fingerprint is the first one owned."""
        rep = self.representation
        individual = rep.parse(self.problem.baseline) if self.problem.baseline else rep.initial()
        row = self.add_candidate(BASELINE_GENERATION, 0, Proposal(individual, (), "baseline"))
        if row.fingerprint is None:
            fingerprint = rep.fingerprint(individual)
            if fingerprint:
                self.store.set_fingerprint(row.id, fingerprint)
                row = self.store.candidate(row.id)
        self.duplicates.claim(row)
        self.progress.baseline_started(row.genotype, [s.name for s in self.stages])
        for stage in self.stages:
            self.evaluate([row], stage)
        fitness = self.fitness(row.id, self.ranking.name)
        if fitness is not None and self.baseline_seeds > 1:  # the proxy's noise, measured on the baseline
            self.evaluate_seeds([row], self.ranking, self.baseline_seeds)
        sample = self.sample(row.id)
        result = None if fitness is None else Evaluated(row.genotype, sample.mean, BASELINE_GENERATION, row.id,
                                                        self.scores(row.id), sample.sd, sample.n)
        self.progress.baseline(fitness if sample.n <= 1 else sample.mean, sample)
        return result

    def reference(self, stage: Stage) -> float | None:
        """The initial individual (where breeding starts) evaluated on ``stage`` once per run; its fitness.

        When the baseline is the initial individual (losses) that is the baseline's result; otherwise
        (a tracker's hand neck against the cell breeding starts from) the initial individual is stored
        apart (generation ``REFERENCE_GENERATION``), claims no fingerprint and is never ranked.
        """
        rep = self.representation
        initial = rep.initial()
        baseline = self.baseline_row()
        if baseline is not None and baseline.genotype == rep.key(initial):
            return self.fitness(baseline.id, stage.name)
        row = self.add_candidate(REFERENCE_GENERATION, 0, Proposal(initial, (), "reference"))
        return self.evaluate([row], stage)[row.id]

    def reference_fitness(self, stage: str) -> float | None:
        """The stored result of :meth:`reference` on ``stage`` (None until it ran)."""
        rows = self.store.candidates(REFERENCE_GENERATION)
        if not rows:
            baseline = self.baseline_row()
            return self.fitness(baseline.id, stage) if baseline is not None else None
        return self.fitness(rows[0].id, stage)

    # ------------------------------------------------------------------ cheap gates and duplicates

    def screening_steps(self) -> list[str]:
        """The names of the screening steps in order: the first gate, the duplicate check, the rest."""
        names = [gate.name for gate in self.gates]
        return names[:1] + [DUPLICATE_GATE] + names[1:]

    def screen(self, rows: Sequence[CandidateRow], quiet: bool = False) -> list[CandidateRow]:
        """Run the cheap gates in order, the duplicate check after the first; return the survivors.

        Verdicts already in the store (a resumed run) are kept, not recomputed, so a resume never
        depends on timing (sympy's time limit).
        """
        survivors = list(rows)
        steps: list[Gate | None] = list(self.gates[:1]) + [None] + list(self.gates[1:])  # None: duplicates
        for gate in steps:
            name = DUPLICATE_GATE if gate is None else gate.name
            stored = {row.id: self.store.verdict(row.id, name) for row in survivors}
            fresh = [row for row in survivors if stored[row.id] is None]
            if gate is None:
                for row in fresh:
                    stored[row.id] = self._check_duplicate(row)
            elif fresh:
                verdicts = gate.evaluate([self.representation.parse(row.genotype) for row in fresh])
                for row, verdict in zip(fresh, verdicts):
                    stored[row.id] = self.record(row, verdict)
            passed = [row for row in survivors if stored[row.id].passed]
            if not quiet:
                self.progress.gate(name, len(survivors), len(passed))
            survivors = passed
        return survivors

    def close_gates(self) -> None:
        for gate in self.gates:
            close = getattr(gate, "close", None)
            if close:
                close()

    def _check_duplicate(self, row: CandidateRow) -> VerdictRow:
        fingerprint = row.fingerprint or self.representation.fingerprint(self.representation.parse(row.genotype))
        if fingerprint and row.fingerprint is None:
            self.store.set_fingerprint(row.id, fingerprint)
        return self.record(row, self.duplicates.check(row, fingerprint))

    # ------------------------------------------------------------------ expensive stages

    def needs_run(self, row: CandidateRow, stage: Stage) -> tuple[bool, int]:
        """Whether ``row`` still needs ``stage`` (no verdict, or a transient failure left to retry)."""
        known = self.store.verdict(row.id, stage.name)
        if known is None:
            return True, 1
        if known.status in DETERMINISTIC or known.status == "ok" or known.attempts > self.retries:
            return False, known.attempts
        return True, known.attempts + 1

    def job(self, row: CandidateRow, stage: Stage) -> Job:
        return Job(self.problem.evaluate, self.problem.task, row.genotype, stage.name, self.seed)

    def evaluate(self, rows: Sequence[CandidateRow], stage: Stage) -> dict[int, float | None]:
        """Run ``stage`` on the rows that need it (in parallel); every result is stored as it arrives."""
        todo = []
        for row in rows:
            run, attempt = self.needs_run(row, stage)
            if run:
                todo.append((row, attempt))
        jobs = (self.job(row, stage) for row, _ in todo)
        for index, _, outcome in self.executor.stream(jobs, stage.timeout, on_wait=self.progress.tick,
                                                      poll=self.progress.poll):
            row, attempt = todo[index]
            self.record_outcome(row, stage, outcome.value if outcome.ok else None, outcome, attempt)
        return {row.id: self.fitness(row.id, stage.name) for row in rows}

    def record_outcome(self, row: CandidateRow, stage: Stage, value: Any, outcome: Outcome,
                       attempt: int = 1) -> float | None:
        """Record one stage result (``value`` the evaluation's dict, None when it failed)."""
        fitness = finite_fitness(value) if value is not None else None
        if fitness is not None:
            self.record(row, Verdict(stage.name, True, f"fitness {fitness:.4f}", dict(value)), "ok",
                        outcome.seconds, attempt)
        elif value is not None:
            self.record(row, Verdict(stage.name, False, f"no finite fitness in {value!r}"[:500], {"fitness": None}),
                        "failed", outcome.seconds, attempt)
        else:
            self.record(row, Verdict(stage.name, False, outcome.error or outcome.status, {"fitness": None}),
                        failure_status(outcome), outcome.seconds, attempt)
        if stage.ranks and row.generation >= 0:
            self.evaluations += 1
        self.progress.evaluated(stage.name, row.genotype, fitness, "", ranks=stage.ranks)
        return fitness

    def stream(self, items: Iterable, timeout: float, fn: Callable) -> Iterable:
        return self.executor.stream(items, timeout, fn=fn, on_wait=self.progress.tick, poll=self.progress.poll)
