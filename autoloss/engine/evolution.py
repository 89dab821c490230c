"""The evolution loop: CSE-Autoloss Algorithm 1 over any genotype, and the paper's two baselines.

Per generation: breed N candidates (from L_I in the first generation, else crossover with
probability p1 and mutation with probability p2 from the P parents); run the cheap gates in order
(validity, equivalence, convergence properties), each candidate stopping at its first failure; run
the model optimisation simulation (MOS) on the survivors, passing those that score at least the
previous generation's best (minus ``mos_margin``) and keeping the top K; train those on the proxy
task and keep the top P of the elitist hall of fame as the next parents.

Strategies (``strategy``): ``cse`` (the above), ``vanilla`` (validity only, every survivor goes to
the proxy) and ``random`` (random trees, validity only, every survivor to the proxy): the baselines
of the paper's Table 5, in the same loop with the same store, so they compare fairly.

Modes: ``generational`` waits for a generation's evaluations before breeding the next; it is
reproducible, and a killed run resumed from its store ends exactly as an uninterrupted one.
``steady-state`` breeds and dispatches whenever a worker falls idle (every GPU busy); its order of
events depends on timing, so it is not bit-for-bit reproducible.

The loop knows nothing about losses: a :class:`Problem` bundles the genotype, the cheap gates and
the picklable evaluation function of the expensive stages.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

from autoloss.engine.executors import Job
from autoloss.engine.progress import Progress
from autoloss.engine.store import RunStore
from autoloss.gates.base import Gate, Verdict

STRATEGIES = ("cse", "vanilla", "random")
MODES = ("generational", "steady-state")


class Genotype(Protocol):
    """What the engine needs of a representation (the loss tree; the tracking cell)."""

    kind: str

    def parse(self, text: str) -> Any: ...
    def initial(self) -> Any: ...
    def initial_population(self, size: int, rng: random.Random) -> list[Any]: ...
    def random(self, rng: random.Random) -> Any: ...
    def mutate(self, individual: Any, rng: random.Random) -> Any: ...
    def crossover(self, a: Any, b: Any, rng: random.Random) -> tuple[Any, Any]: ...
    def describe(self, individual: Any) -> dict[str, str]: ...


@dataclass
class Problem:
    """A search problem: a genotype, its cheap gates and its expensive evaluation.

    ``cheap_gates(strategy, seen_fingerprints)`` builds the in-process gates for a strategy
    (an equivalence gate preloaded with the fingerprints already evaluated when resuming).
    ``evaluate(task, genotype_string, stage, seed)`` is a module-level function (it runs in worker
    processes) returning a dict with a numeric ``fitness``; ``stage`` is ``"mos"`` or ``"proxy"``.
    """

    genotype: Genotype
    cheap_gates: Callable[[str, dict[str, str]], list[Gate]]
    evaluate: Callable[[dict, str, str, int], dict]
    task: dict
    baseline: str | None = None  # the individual to compare with (default: the initial one)
    metric: str = "fitness"  # what ``fitness`` measures, for people (e.g. "accuracy", "mAP")
    start_method: str | None = None  # multiprocessing start method its local workers need (None: default)


@dataclass
class SearchConfig:
    strategy: str = "cse"
    mode: str = "generational"
    population: int = 100  # N
    generations: int = 5  # E
    top_k: int = 10  # K: MOS survivors that go on to the proxy
    parents: int = 5  # P
    crossover: float = 0.5  # p1
    mutation: float = 0.8  # p2
    seed: int = 0
    mos_margin: float = 0.0  # pass MOS at >= threshold - margin
    max_mos: int | None = None  # at most this many MOS runs per generation (None: all survivors)
    mos_timeout: float = 600.0
    proxy_timeout: float = 3600.0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if not (self.population > 0 and self.generations > 0 and self.top_k > 0 and self.parents > 0):
            raise ValueError("population, generations, top_k and parents must be positive")
        if not (0 <= self.crossover <= 1 and 0 <= self.mutation <= 1):
            raise ValueError("crossover and mutation are probabilities in [0, 1]")


@dataclass
class Evaluated:
    genotype: str
    fitness: float
    generation: int
    mos: float | None = None


@dataclass
class SearchResult:
    best: list[Evaluated]
    baseline: Evaluated | None
    proxy_evaluations: int
    generations: list[dict] = field(default_factory=list)


def _rng(seed: int, *salt) -> random.Random:
    digest = hashlib.sha256(repr((seed,) + salt).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _fitness(result: dict) -> float | None:
    value = result.get("fitness") if isinstance(result, dict) else None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


BASELINE_GENERATION = -1


class Evolution:
    """Runs a search into a store; ``run()`` resumes from whatever the store already holds."""

    def __init__(self, problem: Problem, config: SearchConfig, store: RunStore, executor,
                 progress: Progress | None = None, extra_config: dict | None = None):
        self.problem, self.config, self.store, self.executor = problem, config, store, executor
        self.progress = progress or Progress(enabled=False)
        self.genotype = problem.genotype
        stored = {"search": asdict(config), "genotype": self.genotype.kind, "task": problem.task,
                  **(extra_config or {})}
        store.save_config(stored)
        self.proxy_evaluations = 0

    # ------------------------------------------------------------------ expensive evaluations

    def _evaluate(self, rows: Sequence, stage: str, timeout: float) -> dict[int, Verdict]:
        """Run ``stage`` on candidate rows not yet evaluated; every result is stored as it arrives."""
        results: dict[int, Verdict] = {}
        todo = []
        for row in rows:
            known = self.store.verdict(row.id, stage) or self.store.find_evaluation(row.genotype, stage)
            if known is not None:
                if self.store.verdict(row.id, stage) is None:
                    self.store.add_verdict(row.id, stage, known.passed, known.reason, known.metrics,
                                           known.status, known.seconds)
                results[row.id] = Verdict(stage, known.status == "ok", known.reason, known.metrics)
            else:
                todo.append(row)
        seed = self.config.seed
        jobs = (Job(self.problem.evaluate, self.problem.task, row.genotype, stage, seed) for row in todo)
        for index, _, outcome in self.executor.stream(jobs, timeout):
            row = todo[index]
            fitness = _fitness(outcome.value) if outcome.ok else None
            if outcome.ok and fitness is not None:
                metrics = dict(outcome.value)
                verdict = Verdict(stage, True, f"fitness {fitness:.4f}", metrics)
                status = "ok"
            else:
                reason = outcome.error if not outcome.ok else f"no finite fitness in {outcome.value!r}"
                verdict = Verdict(stage, False, reason, {"fitness": None})
                status = outcome.status if not outcome.ok else "failed"
            self.store.add_verdict(row.id, stage, verdict.passed, verdict.reason, verdict.metrics, status,
                                   outcome.seconds)
            if stage == "proxy":
                self.proxy_evaluations += 1
            self.progress.evaluated(stage, row.genotype, fitness, verdict.reason)
            results[row.id] = verdict
        return results

    # ------------------------------------------------------------------ the baseline

    def _baseline(self) -> tuple[Evaluated | None, float | None]:
        text = self.problem.baseline or str(self.genotype.initial())
        cid = self.store.add_candidate(BASELINE_GENERATION, 0, text, [], "baseline")
        row = self.store.candidate(cid)
        stages = ["proxy"] if self.config.strategy != "cse" else ["mos", "proxy"]
        self.progress.baseline_started(text, stages)
        scores = {}
        for stage in stages:
            timeout = self.config.mos_timeout if stage == "mos" else self.config.proxy_timeout
            verdict = self._evaluate([row], stage, timeout)[cid]
            scores[stage] = verdict.metrics.get("fitness") if verdict.passed else None
        if scores.get("proxy") is None:
            return None, scores.get("mos")
        return Evaluated(text, scores["proxy"], BASELINE_GENERATION, scores.get("mos")), scores.get("mos")

    # ------------------------------------------------------------------ breeding

    def _breed(self, generation: int, parents: list[str]) -> list[tuple[Any, list[str], str]]:
        rng = _rng(self.config.seed, "breed", generation)
        if self.config.strategy != "random" and (generation == 0 or not parents):
            start = str(self.genotype.initial())
            return [(ind, [start], "initial+mutation")
                    for ind in self.genotype.initial_population(self.config.population, rng)]
        return [self._breed_one(generation, parents, rng) for _ in range(self.config.population)]

    def _breed_one(self, generation: int, parents: list[str], rng: random.Random) -> tuple[Any, list[str], str]:
        """One offspring: crossover with probability p1, mutation with probability p2 (or when a clone)."""
        cfg, g = self.config, self.genotype
        if cfg.strategy == "random":
            return g.random(rng), [], "random"
        if not parents:
            child = g.initial()
            for _ in range(rng.randint(1, 3)):
                child = g.mutate(child, rng)
            return child, [str(g.initial())], "initial+mutation"
        pool = [g.parse(p) for p in parents]
        a = rng.choice(pool)
        child, origin, from_ = a, [], [str(a)]
        if rng.random() < cfg.crossover and len(pool) > 1:
            b = rng.choice([p for p in pool if str(p) != str(a)] or pool)
            child = g.crossover(a, b, rng)[0]
            origin.append("crossover")
            from_.append(str(b))
        if rng.random() < cfg.mutation or str(child) in from_:
            child = g.mutate(child, rng)
            origin.append("mutation")
        return child, from_, "+".join(origin)

    # ------------------------------------------------------------------ one generation

    def _seen_fingerprints(self, before_generation: int) -> dict[str, str]:
        seen = {}
        for verdict in self.store.verdicts(gate="equivalence"):
            row = self.store.candidate(verdict.candidate_id)
            if verdict.passed and row.generation < before_generation and "fingerprint" in verdict.metrics:
                seen[verdict.metrics["fingerprint"]] = row.genotype
        return seen

    def _cheap_gates(self, rows, generation: int):
        """Run the in-process gates in order; verdicts already in the store (a resumed run) are kept,
        not recomputed, so a resume never depends on timing (sympy's time limit)."""
        gates = self.problem.cheap_gates(self.config.strategy, self._seen_fingerprints(generation))
        survivors = list(rows)
        for gate in gates:
            stored = {row.id: self.store.verdict(row.id, gate.name) for row in survivors}
            if hasattr(gate, "remember"):  # the equivalence gate: what this generation already passed
                for row in survivors:
                    verdict = stored[row.id]
                    if verdict is not None and verdict.passed and "fingerprint" in verdict.metrics:
                        gate.remember(verdict.metrics["fingerprint"], row.genotype)
            fresh_rows = [row for row in survivors if stored[row.id] is None]
            fresh = gate.evaluate([self.genotype.parse(row.genotype) for row in fresh_rows]) if fresh_rows else []
            for row, verdict in zip(fresh_rows, fresh):
                self.store.add_verdict(row.id, gate.name, verdict.passed, verdict.reason, verdict.metrics)
                if "fingerprint" in verdict.metrics and row.fingerprint is None:
                    self.store.set_fingerprint(row.id, verdict.metrics["fingerprint"])
                stored[row.id] = verdict
            passed = [row for row in survivors if stored[row.id].passed]
            self.progress.gate(gate.name, len(survivors), len(passed))
            survivors = passed
            close = getattr(gate, "close", None)
            if close:
                close()
        return survivors

    def _generation(self, generation: int, parents: list[str], threshold: float | None) -> dict:
        cfg = self.config
        bred = self._breed(generation, parents)
        rows = []
        for index, (individual, from_, origin) in enumerate(bred):
            cid = self.store.add_candidate(generation, index, str(individual), from_, origin)
            rows.append(self.store.candidate(cid))
        self.progress.generation(generation, cfg.generations, len(rows))
        survivors = self._cheap_gates(rows, generation)

        to_proxy, mos_scores = survivors, {}
        if cfg.strategy == "cse":
            candidates = survivors[: cfg.max_mos] if cfg.max_mos else survivors
            mos = self._evaluate(candidates, "mos", cfg.mos_timeout)
            mos_scores = {cid: v.metrics.get("fitness") for cid, v in mos.items() if v.passed}
            bar = -math.inf if threshold is None else threshold - cfg.mos_margin
            passing = [r for r in candidates if mos_scores.get(r.id) is not None and mos_scores[r.id] >= bar]
            passing.sort(key=lambda r: (-mos_scores[r.id], r.index))
            to_proxy = passing[: cfg.top_k]
            self._record_mos_selection(candidates, mos_scores, bar, to_proxy)
            capped = len(survivors) - len(candidates)
            self.progress.gate("mos", len(candidates), len(to_proxy),
                               f"{capped} more not run: at most {cfg.max_mos} MOS per generation" if capped else "")
        proxy = self._evaluate(to_proxy, "proxy", cfg.proxy_timeout)
        scored = [(v.metrics["fitness"], r) for r in to_proxy if (v := proxy.get(r.id)) and v.passed]
        self.progress.gate("proxy", len(to_proxy), len(scored))
        best = max(scored, key=lambda s: (s[0], -s[1].index), default=None)
        next_threshold = threshold
        if best is not None and mos_scores.get(best[1].id) is not None:
            next_threshold = mos_scores[best[1].id]
        summary = {
            "generation": generation,
            "bred": len(rows),
            "funnel": self.store.funnel(generation),
            "mos_threshold": threshold,
            "next_threshold": next_threshold,
            "proxy_evaluated": len(to_proxy),
            "best_fitness": best[0] if best else None,
            "best": best[1].genotype if best else None,
        }
        return summary

    def _record_mos_selection(self, candidates, scores: dict, bar: float, selected) -> None:
        """Rewrite each evaluated MOS verdict as the gate's decision: threshold, then the top K."""
        chosen = {r.id for r in selected}
        for row in candidates:
            stored = self.store.verdict(row.id, "mos")
            if scores.get(row.id) is None or stored is None:
                continue  # the evaluation itself failed: already recorded as such
            score = scores[row.id]
            if row.id in chosen:
                reason = f"score {score:.4f} >= threshold {bar:.4f}, in the top {self.config.top_k}"
            elif score < bar:
                reason = f"score {score:.4f} below the threshold {bar:.4f} (previous generation's best)"
            else:
                reason = f"score {score:.4f} passed the threshold but not in the top {self.config.top_k}"
            self.store.add_verdict(row.id, "mos", row.id in chosen, reason, stored.metrics, stored.status,
                                   stored.seconds)

    # ------------------------------------------------------------------ the run

    def hall_of_fame(self, n: int | None = None, before_generation: int | None = None) -> list[Evaluated]:
        """The best proxy results so far (one per genotype), optionally only those bred before a generation."""
        n = n or self.config.parents
        rows = self.store.best("proxy", n if before_generation is None else 1_000_000)
        if before_generation is not None:
            rows = [(c, v) for c, v in rows if c.generation < before_generation][:n]
        hall = []
        for c, v in rows:
            mos = self.store.verdict(c.id, "mos")
            hall.append(Evaluated(c.genotype, v.metrics["fitness"], c.generation,
                                  mos.metrics.get("fitness") if mos else None))
        return hall

    def run(self) -> SearchResult:
        if self.config.mode == "steady-state":
            return self._run_steady_state()
        baseline, threshold = self._baseline()
        self.progress.baseline(baseline.fitness if baseline else None)
        done = set(self.store.finished_generations())
        summaries = []
        for generation in range(self.config.generations):
            parents = ([e.genotype for e in self.hall_of_fame(before_generation=generation)]
                       if self.config.strategy != "random" else [])
            if generation in done:
                summary = self.store.generation_summary(generation)
            else:
                summary = self._generation(generation, parents, threshold)
                self.store.finish_generation(generation, summary)
            threshold = summary["next_threshold"]
            summaries.append(summary)
            self.progress.generation_done(summary, self.hall_of_fame(1))
        self.progress.close()
        return SearchResult(self.hall_of_fame(10), baseline, self.proxy_evaluations, summaries)

    # ------------------------------------------------------------------ steady state

    def _run_steady_state(self) -> SearchResult:
        """Breed one candidate whenever a worker is free; its job runs MOS, then the proxy if it passes."""
        cfg = self.config
        baseline, threshold = self._baseline()
        self.progress.baseline(baseline.fitness if baseline else None)
        state = {"threshold": threshold, "best": baseline.fitness if baseline else -math.inf}
        budget = cfg.population * cfg.generations
        last_gate = self.problem.cheap_gates(cfg.strategy, {})[-1].name
        bred = sum(1 for c in self.store.candidates() if c.generation >= 0)

        def bar() -> float | None:
            return None if state["threshold"] is None else state["threshold"] - cfg.mos_margin

        def work() -> Iterator[tuple[Any, Job, float | None]]:
            nonlocal bred
            for row in self.store.candidates():  # what a killed run had bred and passed but not evaluated
                cheap = self.store.verdict(row.id, last_gate)
                if row.generation >= 0 and cheap and cheap.passed and self.store.verdict(row.id, "proxy") is None \
                        and self.store.verdict(row.id, "mos") is None:
                    yield row, self._job(row, "proxy"), bar()
            while bred < budget:
                generation, index = divmod(bred, cfg.population)
                parents = [e.genotype for e in self.hall_of_fame()] if cfg.strategy != "random" else []
                individual, from_, origin = self._breed_one(generation, parents, _rng(cfg.seed, "steady", bred))
                row = self.store.candidate(self.store.add_candidate(generation, index, str(individual), from_, origin))
                bred += 1
                if index == 0:
                    self.progress.generation(generation, cfg.generations, cfg.population)
                if self._cheap_gates([row], generation):
                    yield row, self._job(row, "proxy"), bar()

        fn = _staged_job if cfg.strategy == "cse" else _plain_job
        timeout = cfg.proxy_timeout + (cfg.mos_timeout if cfg.strategy == "cse" else 0)
        for _, (row, _job, item_bar), outcome in self.executor.stream(work(), timeout, fn=fn):
            first_stage = "mos" if cfg.strategy == "cse" else "proxy"
            results = outcome.value if outcome.ok else {first_stage: {"error": outcome.error, "status": outcome.status}}
            for stage in ("mos", "proxy"):
                if stage not in results:
                    continue
                value, fitness = results[stage], _fitness(results[stage])
                if fitness is None:
                    reason = value.get("error") or f"no finite fitness in {value!r}"
                    self.store.add_verdict(row.id, stage, False, reason, {"fitness": None},
                                           value.get("status", "failed"), outcome.seconds)
                else:
                    passed = stage == "proxy" or item_bar is None or fitness >= item_bar
                    self.store.add_verdict(row.id, stage, passed, f"fitness {fitness:.4f}", value, "ok", outcome.seconds)
                    if stage == "proxy":
                        self.proxy_evaluations += 1
                        if fitness > state["best"]:
                            state["best"] = fitness
                            mos = _fitness(results.get("mos", {}))
                            state["threshold"] = mos if mos is not None else state["threshold"]
                self.progress.evaluated(stage, row.genotype, fitness, "")
        for generation in range(cfg.generations):
            self.store.finish_generation(generation, {"generation": generation, "funnel": self.store.funnel(generation)})
        self.progress.close()
        return SearchResult(self.hall_of_fame(10), baseline, self.proxy_evaluations)

    def _job(self, row, stage: str) -> Job:
        return Job(self.problem.evaluate, self.problem.task, row.genotype, stage, self.config.seed)


def _run_stage(job: Job, stage: str) -> dict:
    try:
        return job.fn(job.task, job.genotype, stage, job.seed)
    except Exception as exc:  # recorded as this stage's failure; the worker lives on
        lines = str(exc).strip().splitlines()
        return {"error": f"{type(exc).__name__}: {lines[0] if lines else ''}", "status": "error"}


def _plain_job(item) -> dict:
    _, job, _ = item
    return {"proxy": _run_stage(job, "proxy")}


def _staged_job(item) -> dict:
    """MOS, then the proxy if the MOS score reaches the bar (one worker round-trip per candidate)."""
    _, job, bar = item
    mos = _run_stage(job, "mos")
    score = _fitness(mos)
    if score is None or (bar is not None and score < bar):
        return {"mos": mos}
    return {"mos": mos, "proxy": _run_stage(job, "proxy")}
