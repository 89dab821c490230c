"""A search run as the report sees it: its store read once into plain data.

:func:`read_run` gathers what the figures and the Markdown need: the config, the baseline, each
generation's funnel and proxy fitness, every expensive evaluation in the order it finished, the
hall of fame, the failed evaluations and notes on whatever is missing from a partial run.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from autoloss.engine import evidence
from autoloss.engine.numbers import finite_number
from autoloss.engine.runs import RunRecord
from autoloss.engine.store import BASELINE_GENERATION, REFERENCE_GENERATION, CandidateRow, VerdictRow

EXPENSIVE = ("mos", "proxy")  # the roles of the expensive stages: a first training, the ranking one
GATE_TITLES = {"validity": "validity", "equivalence": "duplicates", "convergence": "convergence",
               "mos": "MOS", "proxy": "proxy"}


def failure_kind(verdict: VerdictRow) -> str:
    """``ok``, or how an evaluation failed: diverged, timeout, crashed, error or failed (no fitness)."""
    if verdict.status == "ok":
        return "ok"
    if verdict.reason.startswith("Diverged"):
        return "diverged"
    return verdict.status


@dataclass(frozen=True)
class Evaluation:
    """One expensive evaluation (MOS or proxy) of one candidate."""

    gate: str
    candidate: CandidateRow
    verdict: VerdictRow
    reused: bool  # a copy of an earlier evaluation of the same genotype, not run again

    @property
    def fitness(self) -> float | None:
        return finite_number(self.verdict.metrics.get("fitness")) if self.verdict.status == "ok" else None

    @property
    def kind(self) -> str:
        return failure_kind(self.verdict)


@dataclass
class Generation:
    """One generation: its funnel and its proxy results."""

    number: int
    bred: int
    funnel: dict[str, dict[str, int]]
    pipeline: list[str]
    finished: bool
    summary: dict | None
    proxy: list[Evaluation] = field(default_factory=list)
    best_so_far: float | None = None  # the hall of fame's best after this generation

    @property
    def shown(self) -> int:
        """The generation's number for people: 1-based, as the search's progress counts them."""
        return self.number + 1

    @property
    def fitnesses(self) -> list[float]:
        return [e.fitness for e in self.proxy if e.fitness is not None]

    @property
    def best(self) -> Evaluation | None:
        scored = [e for e in self.proxy if e.fitness is not None]
        return max(scored, key=lambda e: (e.fitness, -e.candidate.index)) if scored else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.fitnesses) if self.fitnesses else None

    @property
    def reached_proxy(self) -> int:
        return self.funnel.get("proxy", {}).get("in", 0)

    def rejected(self, gate: str) -> int:
        return self.funnel.get(gate, {}).get("failed", 0)

    @property
    def stopped(self) -> int:
        """Candidates that passed every gate they met but went no further (a MOS cap, a stopped run)."""
        return self.bred - self.reached_proxy - sum(self.rejected(g) for g in self.pipeline if g != "proxy")

    @property
    def mos_threshold(self) -> float | None:
        return finite_number((self.summary or {}).get("mos_threshold"))


@dataclass
class Run:
    """Everything the report shows about one run."""

    run_dir: Path
    store_path: Path
    config: dict
    metric: str
    gates: list[str]  # the gates this run used, in pipeline order (expensive stages by role: mos, proxy)
    pipeline: list[str]  # every gate and stage of the run, in order (by role)
    titles: dict[str, str]  # how to call each gate for people
    baseline: CandidateRow | None
    baseline_scores: dict[str, Evaluation]  # gate -> the baseline's MOS / proxy evaluation
    generations: list[Generation]
    evaluations: list[Evaluation]  # every MOS and proxy verdict of the search (not the baseline), as they finished
    verdict_counts: dict[str, dict[str, int]]  # gate -> verdicts, passed, rejected (baseline included)
    top: list[tuple[CandidateRow, VerdictRow, VerdictRow | None]]  # (candidate, proxy, MOS), best first
    start: float | None
    end: float | None
    notes: list[str]
    reference: Evaluation | None = None  # the MOS of the initial individual, when it is not the baseline
    # the proxy's noise and the claims (autoloss.engine.evidence): the baseline's ranking scores over its seeds,
    # each candidate's scores over all its seeds, and each searched candidate's fresh seeds against the baseline's
    baseline_sample: evidence.Sample = field(default_factory=lambda: evidence.Sample(()))
    samples: dict[int, evidence.Sample] = field(default_factory=dict)
    claims: dict[int, evidence.Comparison] = field(default_factory=dict)

    @property
    def search(self) -> dict:
        """The strategy, scheduler, seed and strategy options of the run (older stores: ``search``)."""
        if isinstance(self.config.get("search"), dict):
            return self.config["search"]
        options = self.config.get("options") if isinstance(self.config.get("options"), dict) else {}
        return {"strategy": self.config.get("strategy"), "mode": self.config.get("scheduler"),
                "seed": self.config.get("seed"), **options}

    @property
    def baseline_fitness(self) -> float | None:
        """The baseline's proxy fitness: the mean over its seeds where it has several."""
        if self.baseline_sample.n > 1:
            return self.baseline_sample.mean
        evaluation = self.baseline_scores.get("proxy")
        return evaluation.fitness if evaluation else None

    @property
    def baseline_sd(self) -> float | None:
        """The spread of the baseline's proxy fitness over its seeds: the proxy's noise (None: one seed)."""
        return self.baseline_sample.sd

    def sample(self, candidate_id: int) -> evidence.Sample:
        """A candidate's proxy fitness over all its seeds (empty: no seed verdict)."""
        return self.samples.get(candidate_id, evidence.Sample(()))

    def fitness_of(self, candidate_id: int, single: float | None) -> float | None:
        """The fitness a candidate ranks by: its mean over seeds where it has several, else ``single``."""
        sample = self.sample(candidate_id)
        return sample.mean if sample.n > 1 else single

    def score_text(self, candidate_id: int, single: float | None, digits: int = 4) -> str:
        """``0.0810 ± 0.0120 (3)`` for a candidate with several seeds, else the one value (``-``: none)."""
        sample = self.sample(candidate_id)
        if sample.n > 1:
            return f"{sample.mean:.{digits}f} ± {sample.sd:.{digits}f} ({sample.n})"
        return "-" if single is None else f"{single:.{digits}f}"

    @property
    def failures(self) -> list[Evaluation]:
        """The MOS and proxy trainings (the baseline's included) that ended without a fitness."""
        return [e for e in list(self.baseline_scores.values()) + self.evaluations if not e.reused and e.kind != "ok"]


def stage_roles(store: RunRecord) -> dict[str, str]:
    """The run's stage names by role: the ranking stage is the report's ``proxy``, the one before ``mos``."""
    roles = {store.ranking: "proxy"}
    for name in store.stages:
        roles.setdefault(name, "mos")
    return roles


def titles(roles: dict[str, str], pipeline: list[str]) -> dict[str, str]:
    names = {role: name for name, role in roles.items()}
    out = {g: GATE_TITLES.get(g, g) for g in pipeline}
    for role in EXPENSIVE:
        if role in names and names[role] != role:
            out[role] = names[role]
    return out


def read_run(store: RunRecord, top: int = 10) -> Run:
    """Gather from the run everything the report shows; ``top`` is the number of best losses kept."""
    run_dir = store.run_dir
    config = store.load_config() or {}
    candidates = {c.id: c for c in store.candidates()}
    roles = stage_roles(store)
    verdicts = [replace(v, gate=roles.get(v.gate, v.gate)) for v in store.verdicts()]
    pipeline = [roles.get(g, g) for g in store.pipeline]
    finished = set(store.finished_generations())

    evaluations, baseline_scores, first, reference = [], {}, {}, None
    for verdict in sorted((v for v in verdicts if v.gate in EXPENSIVE),
                          key=lambda v: (v.created, candidates[v.candidate_id].generation,
                                         candidates[v.candidate_id].index, v.gate)):
        row = candidates[verdict.candidate_id]
        earlier = first.setdefault((row.genotype, verdict.gate), verdict)
        # the engine copies an earlier evaluation of the same genotype: same metrics, same seconds
        reused = earlier is not verdict and (earlier.metrics, earlier.seconds, earlier.status) == (
            verdict.metrics, verdict.seconds, verdict.status)
        evaluation = Evaluation(verdict.gate, row, verdict, reused=reused)
        if row.generation == BASELINE_GENERATION:
            baseline_scores[verdict.gate] = evaluation
        elif row.generation == REFERENCE_GENERATION:  # the first generation's MOS bar (mos_reference="initial")
            reference = evaluation
        else:
            evaluations.append(evaluation)

    numbers = sorted({c.generation for c in candidates.values() if c.generation >= 0} | finished)
    generations = []
    for number in numbers:
        funnel = {roles.get(g, g): counts for g, counts in store.funnel(number).items()}
        generation = Generation(number, sum(1 for c in candidates.values() if c.generation == number),
                                funnel, pipeline, number in finished, store.generation_summary(number))
        generation.proxy = [e for e in evaluations if e.gate == "proxy" and e.candidate.generation == number]
        generations.append(generation)
    best = None
    for generation in generations:
        if generation.fitnesses:
            best = max(generation.fitnesses + ([best] if best is not None else []))
        generation.best_so_far = best

    counts: dict[str, dict[str, int]] = {}
    for verdict in verdicts:
        if candidates[verdict.candidate_id].generation == REFERENCE_GENERATION:
            continue  # shown with the baseline
        count = counts.setdefault(verdict.gate, {"verdicts": 0, "passed": 0, "rejected": 0})
        count["verdicts"] += 1
        count["passed" if verdict.passed else "rejected"] += 1

    baselines = [c for c in candidates.values() if c.generation == BASELINE_GENERATION]
    seeds = evidence.seed_table(store.verdicts(), store.ranking)
    samples = {cid: evidence.Sample(tuple(evidence.values(found))) for cid, found in seeds.items()}
    # retrained candidates first, by their mean; then the one-seed ones (the order of the search's summary)
    hall = [(c, replace(v, gate="proxy")) for c, v, _ in store.standing() if c.generation >= 0][:top]
    first_stage = next((name for name, role in roles.items() if role == "mos"), None)
    times = [c.created for c in candidates.values()] + [v.created for v in verdicts]
    run = Run(
        run_dir=Path(run_dir), store_path=store.path, config=config, metric=store.metric,
        gates=[g for g in pipeline if g in {v.gate for v in verdicts}], pipeline=pipeline,
        titles=titles(roles, pipeline), baseline=baselines[0] if baselines else None,
        baseline_scores=baseline_scores, generations=generations, evaluations=evaluations,
        verdict_counts=counts,
        top=[(c, v, store.verdict(c.id, first_stage) if first_stage else None) for c, v in hall],
        start=min(times) if times else None, end=max(times) if times else None, notes=[], reference=reference,
        baseline_sample=store.baseline_sample(), samples=samples, claims=store.claims())
    run.notes = missing_notes(run)
    return run


def missing_notes(run: Run) -> list[str]:
    """What a partial run lacks, one sentence each (empty for a complete run)."""
    notes = []
    planned = run.search.get("generations")
    done = [g for g in run.generations if g.finished]
    if run.baseline is None:
        notes.append("No baseline in the store: the search stopped before evaluating the initial loss.")
    elif run.baseline_fitness is None:
        proxy = run.baseline_scores.get("proxy")
        if proxy is None:
            notes.append("The baseline has no proxy result yet: the figures show no baseline line and no "
                         "difference to it.")
        else:
            notes.append(f"The baseline's proxy evaluation failed ({proxy.kind}: {proxy.verdict.reason}): "
                         "the figures show no baseline line and no difference to it.")
    if planned is not None and len(done) < planned:
        unfinished = [g.shown for g in run.generations if not g.finished]
        started = f"; generation {', '.join(map(str, unfinished))} started but did not finish" if unfinished else ""
        notes.append(f"The run is not finished: {len(done)} of {planned} generations finished{started} "
                     "(stopped, or still running; `autoloss search --resume` continues it).")
    if not any(g.fitnesses for g in run.generations):
        notes.append("No searched candidate has a proxy result yet: there is no fitness to rank, and the "
                     "fitness figures show no candidate.")
    for generation in run.generations:
        if generation.fitnesses:
            continue
        if generation.reached_proxy:
            notes.append(f"Generation {generation.shown}: every proxy evaluation failed.")
        elif generation.finished:
            notes.append(f"Generation {generation.shown}: no candidate reached the proxy "
                         f"({_last_stop(generation)}).")
        else:
            notes.append(f"Generation {generation.shown}: no proxy result yet (the generation did not finish).")
    return notes


def _last_stop(generation: Generation) -> str:
    """Where a generation's candidates stopped, for a note."""
    for gate in reversed(generation.pipeline[:-1]):
        if gate in generation.funnel:
            counts, title = generation.funnel[gate], GATE_TITLES.get(gate, gate)
            return (f"{counts['failed']} of {counts['in']} rejected by {title}"
                    if counts["passed"] == 0 else f"{counts['passed']} passed {title} but went no further")
    return "no verdict recorded"


def duration(seconds: float) -> str:
    """``'2 h 05 min'``, ``'12 min 30 s'`` or ``'40 s'``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
