"""Two schedulers of the same strategy: generational and steady-state.

``generational`` breeds a generation, screens it, runs each expensive stage on the survivors and
lets the strategy choose who goes on; it is reproducible, and a killed run resumed from its store
ends exactly as an uninterrupted one. ``steady-state`` breeds one candidate whenever a worker falls
idle and runs its stages in one worker round trip, so no worker waits for the slowest candidate
of a generation; its order of events depends on timing, so it is not bit-for-bit reproducible.

Both record every result through the study (:meth:`Study.record`), so both get the duplicate
check, retries and progress alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from autoloss.engine.confirmation import confirm
from autoloss.engine.executors import Job
from autoloss.engine.protocols import BREEDING_HOOKS, Stage, Verdict, check_hooks
from autoloss.engine.study import SearchResult, Study, seeded_rng
from autoloss.timelimit import Outcome

HALL_SIZE = 10


def generation_summary(study: Study, generation: int, bred: int, extra: dict) -> dict:
    ranked = [(study.mean_fitness(v.candidate_id), study.store.candidate(v.candidate_id))
              for v in study.store.verdicts(generation, study.ranking.name)]  # a mean where seeds exist
    scored = [(f, row) for f, row in ranked if f is not None]
    best = max(scored, key=lambda s: (s[0], -s[1].index), default=None)
    return {"generation": generation, "bred": bred, "funnel": study.store.funnel(generation),
            "proxy_evaluated": len(ranked), "best_fitness": best[0] if best else None,
            "best": best[1].genotype if best else None, **extra}


class Generational:
    name = "generational"
    hooks = BREEDING_HOOKS

    def run(self, study: Study, strategy) -> SearchResult:
        check_hooks(self, strategy)
        options = strategy.options
        baseline = study.baseline()
        if baseline is None:  # nothing can be compared with a failed baseline: stop (resume retries it)
            study.close_gates()
            study.progress.close()
            return SearchResult([], None, study.evaluations)
        strategy.prepare(study)
        done = set(study.store.finished_generations())
        retry_transient(study, strategy, done)
        summaries = []
        for generation in range(options.generations):
            if generation in done:
                summary = study.store.generation_summary(generation)
            else:
                summary = self._generation(study, strategy, generation)
                study.store.finish_generation(generation, summary)
            summaries.append(summary)
            study.progress.generation_done(summary, study.hall_of_fame(1))
            if strategy.finished(study):
                break
        outcome = confirm(study)
        study.close_gates()
        study.progress.close()
        return SearchResult(study.hall_of_fame(HALL_SIZE, retrained_first=True), baseline, study.evaluations, summaries, outcome)

    def _generation(self, study: Study, strategy, generation: int) -> dict:
        count = strategy.options.population
        proposals = strategy.propose(study, generation, count, seeded_rng(study.seed, "breed", generation))
        rows = [study.add_candidate(generation, index, p) for index, p in enumerate(proposals)]
        study.progress.generation(generation, strategy.options.generations, len(rows))
        survivors = study.screen(rows)
        extra = strategy.generation_info(study, generation)
        for stage in study.stages:
            admitted, note = strategy.admit(study, stage, survivors, generation)
            scores = study.evaluate(admitted, stage)
            if stage.ranks:
                passed = [row for row in admitted if scores[row.id] is not None]
                study.progress.gate(stage.name, len(admitted), len(passed), note)
                break
            chosen, reasons = strategy.advance(study, stage, [(row, scores[row.id]) for row in admitted], generation)
            for row in admitted:  # the stage's verdict becomes the gate's decision, with its reason
                stored = study.store.verdict(row.id, stage.name)
                if stored is not None and stored.status == "ok" and row.id in reasons:
                    study.record(row, Verdict(stage.name, row.id in chosen, reasons[row.id], stored.metrics),
                                 stored.status, stored.seconds, stored.attempts)
            survivors = [row for row in admitted if row.id in chosen]
            study.progress.gate(stage.name, len(admitted), len(survivors), note)
        if study.confirmation is not None and study.confirmation.every_generation:
            confirm(study, f"generation {generation + 1}")  # the next parents and MOS bar come from means
        return generation_summary(study, generation, len(rows), extra)


@dataclass(frozen=True)
class _Work:
    """One candidate's remaining stages in one worker round trip, with the bar of each but the last."""

    row: Any
    jobs: tuple[Job, ...]
    stages: tuple[Stage, ...]
    attempts: tuple[int, ...]
    bars: tuple[float | None, ...]


def run_stages(work: _Work) -> dict:
    """Worker side: each stage in turn, stopping after one whose fitness is below its bar."""
    from autoloss.engine import heartbeat
    from autoloss.engine.study import finite_fitness

    results = {}
    for index, job in enumerate(work.jobs):
        heartbeat.begin(job.stage, job.genotype)
        try:
            value = job.fn(job.task, job.genotype, job.stage, job.seed)
        except Exception as exc:  # recorded as this stage's failure; the worker lives on
            lines = str(exc).strip().splitlines()
            results[job.stage] = {"__error__": f"{type(exc).__name__}: {lines[0] if lines else ''}"}
            break
        finally:
            heartbeat.end()
        results[job.stage] = value
        fitness = finite_fitness(value)
        bar = work.bars[index] if index < len(work.bars) else None
        if fitness is None or (bar is not None and fitness < bar):
            break
    return results


class SteadyState:
    name = "steady-state"
    hooks = BREEDING_HOOKS

    def run(self, study: Study, strategy) -> SearchResult:
        check_hooks(self, strategy)
        options = strategy.options
        baseline = study.baseline()
        if baseline is None:
            study.close_gates()
            study.progress.close()
            return SearchResult([], None, study.evaluations)
        strategy.prepare(study)
        budget = options.population * options.generations
        retry_transient(study, strategy, set(study.store.finished_generations()))
        timeout = sum(stage.timeout for stage in study.stages)
        for _, work, outcome in study.stream(self._work(study, strategy, budget), timeout, fn=run_stages):
            self._record(study, strategy, work, outcome)
        outcome = confirm(study)
        for generation in range(options.generations):
            bred = len(study.store.candidates(generation))
            study.store.finish_generation(generation, generation_summary(study, generation, bred, {}))
        study.close_gates()
        study.progress.close()
        return SearchResult(study.hall_of_fame(HALL_SIZE, retrained_first=True), baseline, study.evaluations, confirmation=outcome)

    def _pending(self, study: Study, strategy, row) -> _Work | None:
        """The stages ``row`` still needs (none when a stored stage stopped it)."""
        stages, attempts = [], []
        for stage in study.stages:
            run, attempt = study.needs_run(row, stage)
            if run:
                stages.append(stage)
                attempts.append(attempt)
            elif stages:
                break
            elif not study.store.verdict(row.id, stage.name).passed:
                return None
        if not stages:
            return None
        bars = tuple(strategy.bar(study, stage) for stage in stages[:-1])
        return _Work(row, tuple(study.job(row, s) for s in stages), tuple(stages), tuple(attempts), bars)

    def _work(self, study: Study, strategy, budget: int) -> Iterator[_Work]:
        population = strategy.options.population
        last = study.screening_steps()[-1]
        screened = {v.candidate_id for v in study.store.verdicts(gate=last)}
        for row in study.store.candidates():  # what a killed run had bred but not finished (or screened)
            if row.generation >= 0 and study.screen([row], quiet=row.id in screened):
                work = self._pending(study, strategy, row)
                if work is not None:
                    yield work
        bred = sum(1 for row in study.store.candidates() if row.generation >= 0)
        while bred < budget and not strategy.finished(study):
            generation, index = divmod(bred, population)
            if index == 0:
                study.progress.generation(generation, strategy.options.generations, population)
            proposal = strategy.propose(study, None, 1, seeded_rng(study.seed, "steady", bred))[0]
            row = study.add_candidate(generation, index, proposal)
            bred += 1
            if study.screen([row]):
                work = self._pending(study, strategy, row)
                if work is not None:
                    yield work

    def _record(self, study: Study, strategy, work: _Work, outcome: Outcome) -> None:
        results = outcome.value if outcome.ok else {work.stages[0].name: None}
        for index, stage in enumerate(work.stages):
            if stage.name not in results:
                break
            value = results[stage.name]
            if isinstance(value, dict) and "__error__" in value:
                failed = Outcome("error", error=value["__error__"], seconds=outcome.seconds)
                study.record_outcome(work.row, stage, None, failed, work.attempts[index])
                break
            if value is None:
                study.record_outcome(work.row, stage, None, outcome, work.attempts[index])
                break
            fitness = study.record_outcome(work.row, stage, value, Outcome("ok", value, seconds=outcome.seconds),
                                           work.attempts[index])
            if index < len(work.bars) and fitness is not None:
                bar = work.bars[index]
                passed = bar is None or fitness >= bar
                reason = (f"score {fitness:.4f} >= bar {bar:.4f}" if passed and bar is not None else
                          f"score {fitness:.4f}" if passed else f"score {fitness:.4f} below the bar {bar:.4f}")
                stored = study.store.verdict(work.row.id, stage.name)
                study.record(work.row, Verdict(stage.name, passed, reason, stored.metrics), stored.status,
                             stored.seconds, stored.attempts)


def retry_transient(study: Study, strategy, generations: set[int]) -> int:
    """On resume: rerun the stages of finished generations that failed in a way that may not recur
    (timeout, crashed worker, out of memory), up to the study's retry limit; returns how many."""
    transient = {v.candidate_id for v in study.store.verdicts() if v.transient}
    rows = [study.store.candidate(cid) for cid in sorted(transient)]
    work = [w for row in rows if row.generation in generations
            and (w := SteadyState()._pending(study, strategy, row)) is not None]
    if not work:
        return 0
    study.progress.note(f"retrying {len(work)} evaluation(s) that failed transiently (timeout, crash, out of memory)")
    timeout = sum(stage.timeout for stage in study.stages)
    for _, item, outcome in study.stream(iter(work), timeout, fn=run_stages):
        SteadyState()._record(study, strategy, item, outcome)
    return len(work)


SCHEDULERS = {scheduler.name: scheduler for scheduler in (Generational, SteadyState)}


def run_search(problem, strategy, store, executor, progress=None, seed: int = 0, mode: str = "generational",
               extra_config: dict | None = None, baseline_seeds: int = 1, confirmation=None) -> SearchResult:
    """Run (or resume) ``strategy`` on ``problem`` into ``store`` with the ``mode`` scheduler; the
    baseline on ``baseline_seeds`` seeds, the best confirmed with ``confirmation`` (ConfirmSettings)."""
    study = Study(problem, strategy, store, executor, progress, seed=seed, scheduler=mode, extra_config=extra_config,
                  baseline_seeds=baseline_seeds, confirmation=confirmation)
    return SCHEDULERS[mode]().run(study, strategy)
