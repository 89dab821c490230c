"""The scheduler of the differentiable strategies: their seeds epoch by epoch through the study.

1. the baseline (the problem's, e.g. a tracker's hand neck) runs the ranking stage, as in every search;
2. per seed (CHASE: 3, ``seeds``), epoch after epoch, one executor job runs one epoch of
   :class:`~autoloss.differentiable.search.DifferentiableSearch` on the problem's supernet
   (``Problem.supernet``, :mod:`autoloss.differentiable.worker`), from and into the seed's checkpoint
   ``RUN_DIR/work/<strategy>/seed-N.pt``: a SIGKILLed search continues to the same alphas;
3. each record is stored through the study (:meth:`Study.add_candidate`, :meth:`Study.record`): the
   derived genotype as a candidate (generation = epoch, index = seed) with a verdict of stage
   ``derived`` holding the epoch's hold-out losses (supernet and derived cell), the skip connections
   in the cell, the mixing weights per edge (softmax rows of alpha), the largest Hessian
   eigenvalue, the skip-dropout rate, timings;
4. early stopping per seed (``patience`` epochs without a new hold-out minimum) and, once every
   seed is done, the epoch of each seed's hold-out minimum is chosen (its ``derived`` verdict passes,
   the others do not), the winner across seeds by hold-out loss. Only epochs from the end of the
   warm-up are eligible, and the patience counts from there: during the warm-up alpha is its initial
   noise and the derived cell an argmax of it (CHASE derives and evaluates after the warm-up). The
   options refuse a warm-up that covers every epoch, so every seed that ran past it has a choice;
5. the chosen cells (``proxy="seeds"``: each seed's; ``"winner"``: the winner only) pass the cheap
   gates and the duplicate check and run the ranking stage (retrained from scratch, on the
   hold-out split), so report, export and ``autoloss evaluate`` treat the result like an evolved one.

The scheduler's state is the store plus the checkpoints: which epochs are recorded, which seeds
stopped, which epochs failed (the study's state ``<strategy>:failures``). It reads and writes the
store only through the study.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from autoloss.differentiable.worker import EpochJob, run_epoch_job
from autoloss.engine.confirmation import confirm
from autoloss.engine.progress import fmt_number
from autoloss.engine.protocols import Proposal, Supernet, Verdict
from autoloss.engine.schedulers import HALL_SIZE, generation_summary
from autoloss.engine.study import SearchResult
from autoloss.errors import UserError

DERIVED = "derived"  # the verdict of an epoch's derived genotype
HOLDOUT_KEYS = {"cell": "cell_holdout", "supernet": "supernet_holdout"}
DEFAULT_EPOCH_TIMEOUT = 6 * 3600.0
NA = "n/a"  # a loss that is not a finite number, in a verdict's reason


def seed_epochs(study, seed: int) -> list[tuple[Any, Any]]:
    """The seed's recorded epochs, ``[(candidate row, derived verdict)]`` in epoch order."""
    found = []
    for row in study.candidates():
        if row.generation >= 0 and row.index == seed:
            verdict = study.verdict(row.id, DERIVED)
            if verdict is not None:
                found.append((row, verdict))
    return sorted(found, key=lambda item: item[0].generation)


def holdout_loss(verdict, criterion: str) -> float | None:
    value = verdict.metrics.get(HOLDOUT_KEYS[criterion])
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def best_epoch(epochs: list[tuple[Any, Any]], criterion: str, start: int = 0) -> tuple[Any, Any] | None:
    """The epoch of the hold-out minimum among epochs ``start`` on (the warm-up's end; the earlier
    epoch on ties), as early stopping keeps it; None when no such epoch has a finite loss."""
    scored = [(loss, row.generation, row, verdict) for row, verdict in epochs
              if row.generation >= start and (loss := holdout_loss(verdict, criterion)) is not None]
    if not scored:
        return None
    _, _, row, verdict = min(scored, key=lambda s: (s[0], s[1]))
    return row, verdict


def problem_supernet(study, strategy) -> Supernet:
    """The problem's supernet hooks; a one-line error for a problem that has none."""
    supernet = study.problem.supernet
    if supernet is None:
        raise UserError(f"--strategy {strategy.name} needs a supernet of the searched cells, which this problem "
                        "does not provide (a tracker's neck cell has one: --tracker)")
    return supernet


class DifferentiableScheduler:
    """Runs a differentiable strategy's seeds epoch by epoch through the study; resumable from store + checkpoints."""

    name = "differentiable"
    hooks = ()  # no strategy method beyond cheap_gates and stages: the options say everything

    def run(self, study, strategy):
        options = strategy.options
        self.prepare(study, strategy)
        baseline = study.baseline()
        if baseline is None:
            study.close_gates()
            study.progress.close()
            return SearchResult([], None, study.evaluations)
        self.search(study, strategy)
        chosen = self.choose(study, strategy)
        rows = list(chosen.values()) if options.proxy == "seeds" else [chosen[self.winner(study, strategy, chosen)]] \
            if chosen else []
        survivors = study.screen(rows) if rows else []
        study.evaluate(survivors, study.ranking)
        outcome = confirm(study)  # the chosen cells retrained with fresh seeds before any is called better
        summaries = self.summarise(study, strategy)
        study.close_gates()
        study.progress.close()
        return SearchResult(study.hall_of_fame(HALL_SIZE, retrained_first=True), baseline, study.evaluations, summaries, outcome)

    # -- before anything runs
    def prepare(self, study, strategy) -> None:
        """The data the supernet needs must exist (the problem's ``prepare`` hook, e.g. the architecture split)."""
        problem_supernet(study, strategy).prepare(study.problem.task)

    # -- the epochs
    def checkpoint(self, study, strategy, seed: int) -> Path:
        return study.work_dir(strategy.name) / f"seed-{seed}.pt"

    def failures(self, study, strategy) -> dict:
        return study.get_state(f"{strategy.name}:failures", {})

    def next_epoch(self, study, strategy, seed: int) -> int | None:
        """The epoch the seed runs next; None when it is done (all epochs, stopped early, or failed for good)."""
        epochs = seed_epochs(study, seed)
        if epochs and epochs[-1][1].metrics.get("stop"):
            return None
        epoch = len(epochs)
        if epoch >= strategy.options.epochs:
            return None
        if self.failures(study, strategy).get(f"{seed}:{epoch}", {}).get("attempts", 0) > study.retries:
            return None
        return epoch

    def job(self, study, strategy, seed: int, epoch: int) -> EpochJob:
        return EpochJob(study.problem.task, strategy.name, asdict(strategy.options), seed, study.seed + seed, epoch,
                        str(self.checkpoint(study, strategy, seed)), problem_supernet(study, strategy).search)

    def search(self, study, strategy) -> None:
        options = strategy.options
        timeout = options.epoch_timeout or study.problem.timeouts.get("epoch", DEFAULT_EPOCH_TIMEOUT)
        while True:
            todo = [(seed, epoch) for seed in range(options.seeds)
                    if (epoch := self.next_epoch(study, strategy, seed)) is not None]
            if not todo:
                return
            first = min(epoch for _, epoch in todo)
            study.progress.generation(first, options.epochs, len(todo))
            jobs = [self.job(study, strategy, seed, epoch) for seed, epoch in todo]
            for _, job, outcome in study.stream(iter(jobs), timeout, fn=run_epoch_job):
                if outcome.ok:
                    self.record_epoch(study, strategy, job, outcome.value, outcome.seconds)
                else:
                    self.record_failure(study, strategy, job, outcome)
            for epoch in sorted({epoch for _, epoch in todo}):
                summary = self.epoch_summary(study, strategy, epoch)
                study.finish_generation(epoch, summary)
                study.progress.generation_done(summary, study.hall_of_fame(1))

    def record_epoch(self, study, strategy, job: EpochJob, record: dict, seconds: float) -> None:
        rep = study.representation
        genotype = rep.parse(record["genotype"])
        row = study.add_candidate(job.epoch, job.seed, Proposal(genotype, (), f"{strategy.name} seed {job.seed}"))
        metrics = {key: value for key, value in record.items() if key != "genotype"}
        metrics["seed"] = job.seed
        criterion = strategy.options.criterion
        loss = metrics.get(HOLDOUT_KEYS[criterion])
        cell, supernet = (fmt_number(metrics.get(key), NA) for key in ("cell_holdout", "supernet_holdout"))
        reason = (f"epoch {job.epoch + 1}, seed {job.seed}: hold-out loss cell {cell} supernet {supernet}, "
                  f"{metrics.get('skips')} skip connection(s)")
        eligible = loss is not None and job.epoch >= strategy.options.warmup_epochs
        study.record(row, Verdict(DERIVED, eligible, reason, metrics), "ok", seconds)
        study.progress.note(f"  seed {job.seed} epoch {job.epoch + 1}: {reason.split(': ', 1)[1]}")

    def record_failure(self, study, strategy, job: EpochJob, outcome) -> None:
        failures = self.failures(study, strategy)
        entry = failures.get(f"{job.seed}:{job.epoch}", {"attempts": 0})
        diverged = (outcome.error or "").startswith("Diverged")  # deterministic: a retry diverges again
        entry = {"attempts": study.retries + 1 if diverged else entry["attempts"] + 1,
                 "status": "diverged" if diverged else outcome.status, "error": (outcome.error or "")[:500]}
        failures[f"{job.seed}:{job.epoch}"] = entry
        study.set_state(f"{strategy.name}:failures", failures)
        give_up = entry["attempts"] > study.retries
        study.progress.note(f"  seed {job.seed} epoch {job.epoch + 1} failed ({entry['status']}: {entry['error'][:200]})"
                            + ("; the seed stops here" + (", its earlier epochs stay candidates" if diverged else "")
                               if give_up else "; retried"))

    def failure_summary(self, study, strategy) -> str | None:
        """Why no seed has a chosen cell, when none has (every epoch job failed or diverged, or no epoch
        after the warm-up had a finite hold-out loss); None once a cell was chosen."""
        if study.get_state(f"{strategy.name}:choice", None):
            return None
        failures = self.failures(study, strategy)
        given_up = [entry for entry in failures.values() if entry.get("attempts", 0) > study.retries]
        if not given_up:
            return (f"no seed has an epoch after the warm-up ({strategy.options.warmup_epochs} epoch(s)) with a "
                    f"finite {strategy.options.criterion} hold-out loss")
        counts: dict[str, int] = {}
        for entry in given_up:
            counts[entry.get("status", "failed")] = counts.get(entry.get("status", "failed"), 0) + 1
        statuses = ", ".join(f"{status} {count}" for status, count in counts.items())
        error = str(given_up[0].get("error") or given_up[0].get("status"))
        return f"every seed stopped before a cell could be chosen ({statuses}), e.g. {error[:300]}"

    def epoch_summary(self, study, strategy, epoch: int) -> dict:
        rows = study.candidates(epoch)
        seeds = {}
        for row in rows:
            verdict = study.verdict(row.id, DERIVED)
            if verdict is None:
                continue
            m = verdict.metrics
            seeds[str(row.index)] = {"genotype": row.genotype, "cell_holdout": m.get("cell_holdout"),
                                     "supernet_holdout": m.get("supernet_holdout"), "skips": m.get("skips"),
                                     "eigenvalue": m.get("eigenvalue"), "skip_dropout": m.get("skip_dropout")}
        return generation_summary(study, epoch, len(rows), {"epoch": epoch, "method": strategy.name, "seeds": seeds})

    # -- the choice
    def choose(self, study, strategy) -> dict[int, Any]:
        """Each seed's epoch of the hold-out minimum after the warm-up: its derived verdict passes, the
        other epochs' do not (a warm-up epoch's reason says so)."""
        criterion = strategy.options.criterion
        warmup = strategy.options.warmup_epochs
        chosen = {}
        for seed in range(strategy.options.seeds):
            epochs = seed_epochs(study, seed)
            best = best_epoch(epochs, criterion, warmup)
            if best is None:
                continue
            best_row, best_verdict = best
            chosen[seed] = best_row
            minimum = holdout_loss(best_verdict, criterion)
            for row, verdict in epochs:
                passed = row.id == best_row.id
                loss = holdout_loss(verdict, criterion)
                reason = (f"the {criterion}'s hold-out minimum of seed {seed} ({fmt_number(minimum, NA)})" if passed
                          else f"warm-up epoch (alpha not trained yet), not eligible; {criterion} hold-out loss "
                          f"{fmt_number(loss, NA)}" if row.generation < warmup
                          else f"{criterion} hold-out loss {fmt_number(loss, NA)} above seed {seed}'s minimum "
                          f"{fmt_number(minimum, NA)} at epoch {best_row.generation + 1}")
                if verdict.passed != passed or verdict.reason != reason:
                    study.record(row, Verdict(DERIVED, passed, reason, verdict.metrics), verdict.status,
                                 verdict.seconds, verdict.attempts)
        if chosen:
            winner = self.winner(study, strategy, chosen)
            spread = self.spread(study, strategy, chosen)
            study.set_state(f"{strategy.name}:choice", {
                "chosen": {str(seed): row.id for seed, row in chosen.items()}, "winner_seed": winner,
                "winner": chosen[winner].id, "criterion": criterion, "spread": spread})
            study.progress.note(spread)
        return chosen

    def spread(self, study, strategy, chosen: dict[int, Any]) -> str:
        """How far apart the choices were, in one sentence: the chosen cells' hold-out losses across
        seeds (the winner's margin over the runner-up against their spread) and, per seed, the chosen
        epoch's margin over the next-best eligible epoch."""
        import statistics

        criterion, warmup = strategy.options.criterion, strategy.options.warmup_epochs
        losses = sorted((holdout_loss(study.verdict(row.id, DERIVED), criterion), seed) for seed, row in chosen.items())
        finite = [loss for loss, _ in losses if loss is not None]
        parts = []
        if len(finite) > 1:
            sd = statistics.stdev(finite)
            margin = finite[1] - finite[0]
            parts.append(f"the winner (seed {losses[0][1]}) beat the runner-up's {criterion} hold-out loss by "
                         f"{margin:.4f}, against a spread of ± {sd:.4f} sd across the {len(finite)} seeds' choices"
                         + (" (within the spread: the seeds' cells cannot be told apart by this loss)"
                            if margin < sd else ""))
        margins = []
        for seed in sorted(chosen):
            eligible = sorted(loss for row, verdict in seed_epochs(study, seed) if row.generation >= warmup
                              and (loss := holdout_loss(verdict, criterion)) is not None)
            if len(eligible) > 1:
                margins.append(f"seed {seed} {eligible[1] - eligible[0]:.4f}")
        if margins:
            parts.append("each chosen epoch's margin over its seed's next-best epoch: " + ", ".join(margins))
        return ("choice: " + "; ".join(parts) + ".") if parts else "choice: one candidate, no spread to state."

    def winner(self, study, strategy, chosen: dict[int, Any]) -> int:
        """The seed whose chosen cell has the lowest hold-out loss (the lower seed on ties)."""
        criterion = strategy.options.criterion
        return min(chosen, key=lambda seed: (holdout_loss(study.verdict(chosen[seed].id, DERIVED), criterion), seed))

    def summarise(self, study, strategy) -> list[dict]:
        """The epochs' summaries rewritten with the ranking stage's results."""
        summaries = []
        for epoch in study.finished_generations():
            summary = self.epoch_summary(study, strategy, epoch)
            study.finish_generation(epoch, summary)
            summaries.append(summary)
        return summaries
