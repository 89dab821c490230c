"""Differentiable cell search as engine strategies: ``darts`` (first order), ``darts2`` (second order), ``ms-darts``.

Each fits the engine with a scheduler of its own (:class:`DifferentiableScheduler`):

1. the baseline (the problem's, e.g. the hand neck) runs the ranking stage, as in every search;
2. per seed (CHASE: 3, ``seeds``), epoch after epoch, one executor job runs one epoch of
   :class:`~autoloss.differentiable.search.DifferentiableSearch` on the tracker supernet
   (:mod:`autoloss.tracking.supernet_model`): the job loads ``RUN_DIR/work/<strategy>/seed-N.pt``,
   runs the epoch, saves the checkpoint (atomically) and returns the epoch's record. Every epoch is
   thus a resume of the previous one: a SIGKILLed search continues to the same alphas;
3. each record is stored through the study (:meth:`Study.add_candidate`, :meth:`Study.record`): the
   derived genotype as a candidate (generation = epoch, index = seed) with a verdict of stage
   ``derived`` holding the epoch's hold-out losses (supernet and derived cell), the skip connections
   in the cell, the mixing weights per edge (softmax rows of alpha), the dominant Hessian
   eigenvalue, the skip-dropout rate, timings;
4. early stopping per seed (``patience`` epochs without a new hold-out minimum) and, once every
   seed is done, the epoch of each seed's hold-out minimum is chosen (its ``derived`` verdict passes,
   the others do not), the winner across seeds by hold-out loss;
5. the chosen cells (``proxy="seeds"``: each seed's; ``"winner"``: the winner only) pass the cheap
   gates and the duplicate check and run the ranking stage (retrained from scratch, AO on the
   hold-out split), so report, export and ``autoloss evaluate`` treat the result like an evolved one.

The scheduler's state is the store plus the checkpoints: which epochs are recorded, which seeds
stopped, which epochs failed (``store`` state ``<strategy>:failures``).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from autoloss.engine.protocols import Gate, Proposal, Stage, Verdict
from autoloss.errors import UserError
from autoloss.strategies.base import StrategyBase
from autoloss.strategies.evolution import positive_seconds

DERIVED = "derived"  # the verdict of an epoch's derived genotype
CHASE_WARMUP = 10 / 70
CRITERIA = ("cell", "supernet")
PROXY_CHOICES = ("seeds", "winner")
HOLDOUT_KEYS = {"cell": "cell_holdout", "supernet": "supernet_holdout"}
DEFAULT_EPOCH_TIMEOUT = 6 * 3600.0


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class DartsOptions:
    """A differentiable search's schedule (defaults: CHASE's; the architect's optimiser: DARTS's)."""

    epochs: int = 70
    seeds: int = 3  # independent searches, each one worker; the winner by hold-out loss
    warmup: float = CHASE_WARMUP  # share of the epochs before alpha is updated (CHASE: 10 of 70)
    skip_dropout: float = 0.6  # dropout after skip connections at epoch 0, decaying to 0
    patience: int | None = 10  # stop a seed after this many epochs without a new hold-out minimum
    criterion: str = "cell"  # the hold-out loss that chooses the epoch: the derived cell's or the supernet's
    steps_per_epoch: int | None = None  # weight and architecture steps per epoch (default: the tracker's pool)
    architecture_batches: int | None = None  # cached architecture-split batches (default: the pool)
    holdout_batches: int = 8  # fixed hold-out batches the losses are averaged over
    weight_lr: float | None = None  # Adam on the weights (default: the tracker's lr, CHASE 1e-3)
    arch_lr: float = 3e-4
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3
    grad_clip: float | None = 5.0
    eigenvalue: bool = True  # log the dominant eigenvalue of the architecture loss's Hessian in alpha
    eigenvalue_iterations: int = 20
    proxy: str = "seeds"  # which chosen cells are retrained on the ranking stage: each seed's, or the winner
    epoch_timeout: float | None = None  # seconds per epoch job (default: 6 hours)
    proxy_timeout: float | None = None  # seconds per proxy evaluation (default: the problem's)

    def validate(self) -> None:
        for name in ("epochs", "seeds", "holdout_batches", "eigenvalue_iterations"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1_000_000,
                   f"{_flag(name)} must be a positive integer (at most 1000000), got {value}")
        for name in ("patience", "steps_per_epoch", "architecture_batches"):
            value = getattr(self, name)
            _check(value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1_000_000),
                   f"{_flag(name)} must be a positive integer, got {value}")
        _check(isinstance(self.warmup, (int, float)) and 0 <= self.warmup < 1,
               f"--warmup is a share of the epochs in [0, 1), got {self.warmup}")
        _check(isinstance(self.skip_dropout, (int, float)) and 0 <= self.skip_dropout < 1,
               f"--skip-dropout is a rate in [0, 1), got {self.skip_dropout}")
        for name in ("arch_lr", "arch_beta1", "arch_beta2", "arch_weight_decay", "weight_lr", "grad_clip"):
            value = getattr(self, name)
            if value is None and name in ("weight_lr", "grad_clip"):
                continue
            _check(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
                   f"{_flag(name)} must be a finite number >= 0, got {value}")
        _check(self.arch_beta1 < 1 and self.arch_beta2 < 1, "--arch-beta1 and --arch-beta2 must be below 1")
        _check(self.criterion in CRITERIA, f"--criterion is one of {', '.join(CRITERIA)}, got {self.criterion!r}")
        _check(self.proxy in PROXY_CHOICES, f"--proxy is one of {', '.join(PROXY_CHOICES)}, got {self.proxy!r}")
        positive_seconds("epoch_timeout", self.epoch_timeout)
        positive_seconds("proxy_timeout", self.proxy_timeout)

    @property
    def warmup_epochs(self) -> int:
        from autoloss.differentiable.schedule import warmup_epochs

        return warmup_epochs(self.epochs, self.warmup)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class Darts2Options(DartsOptions):
    adam_jacobian: str = "frozen"  # the virtual Adam step's Jacobian: second moment frozen, or exact
    share_gradient: bool = True  # one weight gradient for the virtual and the real step (4 passes, not 5)
    LEGACY: ClassVar[dict] = {"share_gradient": False}  # added later: runs stored before did not share

    def validate(self) -> None:
        super().validate()
        _check(self.adam_jacobian in ("frozen", "exact"),
               f"--adam-jacobian is frozen or exact, got {self.adam_jacobian!r}")
        _check(isinstance(self.share_gradient, bool), f"share_gradient is true or false, got {self.share_gradient!r}")


@dataclass
class MsDartsOptions(DartsOptions):
    ms_eps: float = 0.25  # the sampling radius (ramped from eps/10 to eps over the epochs)
    ms_h: float = 1.0  # the Gaussian kernel's bandwidth
    ms_samples: int = 3  # N
    ms_iterations: int = 2  # T
    ms_temperature: float = 1.0  # of the softmax over the samples' losses
    ms_order: int = 1  # the architect's order (the authors' code: first)

    def validate(self) -> None:
        super().validate()
        for name in ("ms_eps", "ms_h", "ms_temperature"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
                   f"{_flag(name)} must be a positive number, got {value}")
        for name in ("ms_samples", "ms_iterations"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 10_000,
                   f"{_flag(name)} must be a positive integer, got {value}")
        _check(self.ms_order in (1, 2), f"--ms-order is 1 or 2, got {self.ms_order}")


# ---------------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class EpochJob:
    """One epoch of one seed's search: runs in a worker, from and into ``checkpoint``."""

    task: dict
    method: str
    options: dict  # the strategy's options, as stored with the run
    seed: int  # the seed's index (the candidates' index)
    seed_value: int  # what initialises the supernet and draws its random numbers
    epoch: int
    checkpoint: str


def search_options(method: str, options: dict, seed_value: int):
    """The core loop's :class:`~autoloss.differentiable.search.SearchOptions` of a strategy's options."""
    from autoloss.differentiable.schedule import warmup_epochs
    from autoloss.differentiable.search import SearchOptions

    extra = {}
    if method == "darts2":
        extra["adam_jacobian"] = options.get("adam_jacobian", "frozen")
        extra["share_gradient"] = options.get("share_gradient", False)
    if method == "ms-darts":
        extra.update({name: options[name] for name in ("ms_eps", "ms_h", "ms_samples", "ms_iterations",
                                                       "ms_temperature", "ms_order")})
    return SearchOptions(method=method, epochs=options["epochs"],
                         warmup_epochs=warmup_epochs(options["epochs"], options["warmup"]),
                         skip_dropout=options["skip_dropout"], grad_clip=options["grad_clip"],
                         patience=options["patience"], early_stopping_criterion=options["criterion"],
                         eigenvalue=options["eigenvalue"], eigenvalue_iterations=options["eigenvalue_iterations"],
                         seed=seed_value, **extra)


def build_search(job: EpochJob, settings):
    """The seed's DifferentiableSearch, freshly initialised (a checkpoint is loaded by the caller)."""
    import torch

    from autoloss.differentiable.search import DifferentiableSearch
    from autoloss.tracking.supernet_model import build_supernet_search

    task, options = job.task, job.options
    splits = task.get("splits", {})
    setup = build_supernet_search(settings, task["data_root"], task["baseline"], seed=job.seed_value,
                                  steps_per_epoch=options["steps_per_epoch"],
                                  architecture_batches=options["architecture_batches"],
                                  holdout_batches=options["holdout_batches"],
                                  skip_dropout=options["skip_dropout"],
                                  splits={"weights": splits.get("weights", "weights"),
                                          "architecture": splits.get("architecture", "architecture"),
                                          "holdout": splits.get("holdout", "holdout")})
    model = setup.model
    weight_optimizer = torch.optim.Adam(model.weight_parameters(), lr=options["weight_lr"] or settings.lr)
    arch_optimizer = torch.optim.Adam(model.arch_parameters(), lr=options["arch_lr"],
                                      betas=(options["arch_beta1"], options["arch_beta2"]),
                                      weight_decay=options["arch_weight_decay"])
    return DifferentiableSearch(model, setup.loss_fn, setup.train_batches, setup.arch_batches, weight_optimizer,
                                arch_optimizer, search_options(job.method, options, job.seed_value),
                                holdout_batches=setup.holdout_batches)


def run_epoch_job(job: EpochJob) -> dict:
    """Worker side: continue the seed's search from its checkpoint by one epoch; the epoch's record."""
    from autoloss.engine import heartbeat
    from autoloss.tracking.problem import worker_settings
    from autoloss.tracking.train import torch_threads

    settings = worker_settings(job.task)
    heartbeat.begin(f"{job.method} epoch {job.epoch + 1}", f"seed {job.seed}")
    try:
        with torch_threads(settings.threads):
            search = build_search(job, settings)
            path = Path(job.checkpoint)
            if path.is_file():
                search.load(path)
            if search.epoch > job.epoch:  # ran and saved, but the store missed it (killed in between)
                return search.history[job.epoch]
            if search.epoch < job.epoch:
                raise RuntimeError(f"{path} holds {search.epoch} epochs, epoch {job.epoch + 1} was asked for")
            record = search.run_epoch(job.epoch)
            path.parent.mkdir(parents=True, exist_ok=True)
            search.save(path)
            return record
    finally:
        heartbeat.end()


# -------------------------------------------------------------------------------- the scheduler


def seed_epochs(study, seed: int) -> list[tuple[Any, Any]]:
    """The seed's recorded epochs, ``[(candidate row, derived verdict)]`` in epoch order."""
    found = []
    for row in study.store.candidates():
        if row.generation >= 0 and row.index == seed:
            verdict = study.store.verdict(row.id, DERIVED)
            if verdict is not None:
                found.append((row, verdict))
    return sorted(found, key=lambda item: item[0].generation)


def holdout_loss(verdict, criterion: str) -> float | None:
    value = verdict.metrics.get(HOLDOUT_KEYS[criterion])
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def best_epoch(epochs: list[tuple[Any, Any]], criterion: str) -> tuple[Any, Any] | None:
    """The epoch of the hold-out minimum (the earlier one on ties), as early stopping keeps it."""
    scored = [(loss, row.generation, row, verdict) for row, verdict in epochs
              if (loss := holdout_loss(verdict, criterion)) is not None]
    if not scored:
        return None
    _, _, row, verdict = min(scored, key=lambda s: (s[0], s[1]))
    return row, verdict


class DifferentiableScheduler:
    """Runs a differentiable strategy's seeds epoch by epoch through the study; resumable from store + checkpoints."""

    name = "differentiable"

    def run(self, study, strategy):
        from autoloss.engine.schedulers import HALL_SIZE
        from autoloss.engine.study import SearchResult

        options = strategy.options
        self.prepare(study)
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
        summaries = self.summarise(study, strategy)
        study.close_gates()
        study.progress.close()
        return SearchResult(study.hall_of_fame(HALL_SIZE), baseline, study.evaluations, summaries)

    # -- before anything runs
    def prepare(self, study) -> None:
        """The architecture split must exist (written for a synthetic data set that lacks it)."""
        from autoloss.tracking.problem import worker_settings
        from autoloss.tracking.supernet_model import ensure_architecture_split

        task = study.problem.task
        folder = task.get("splits", {}).get("architecture", "architecture")
        root = Path(task["data_root"])
        if not (root / folder / "list.txt").is_file():
            if folder != "architecture":
                raise UserError(f"a differentiable search needs its architecture split: {root / folder} holds no list.txt")
            ensure_architecture_split(worker_settings(task), root)

    # -- the epochs
    def checkpoint(self, study, strategy, seed: int) -> Path:
        return Path(study.store.path).parent / "work" / strategy.name / f"seed-{seed}.pt"

    def failures(self, study, strategy) -> dict:
        return study.store.get_state(f"{strategy.name}:failures", {})

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
                        str(self.checkpoint(study, strategy, seed)))

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
                study.store.finish_generation(epoch, summary)
                study.progress.generation_done(summary, study.hall_of_fame(1))

    def record_epoch(self, study, strategy, job: EpochJob, record: dict, seconds: float) -> None:
        rep = study.representation
        genotype = rep.parse(record["genotype"])
        row = study.add_candidate(job.epoch, job.seed, Proposal(genotype, (), f"{strategy.name} seed {job.seed}"))
        metrics = {key: value for key, value in record.items() if key != "genotype"}
        metrics["seed"] = job.seed
        criterion = strategy.options.criterion
        loss = metrics.get(HOLDOUT_KEYS[criterion])
        reason = (f"epoch {job.epoch + 1}, seed {job.seed}: hold-out loss cell {_fmt(metrics.get('cell_holdout'))} "
                  f"supernet {_fmt(metrics.get('supernet_holdout'))}, {metrics.get('skips')} skip connection(s)")
        study.record(row, Verdict(DERIVED, loss is not None, reason, metrics), "ok", seconds)
        study.progress.note(f"  seed {job.seed} epoch {job.epoch + 1}: {reason.split(': ', 1)[1]}")

    def record_failure(self, study, strategy, job: EpochJob, outcome) -> None:
        failures = self.failures(study, strategy)
        entry = failures.get(f"{job.seed}:{job.epoch}", {"attempts": 0})
        entry = {"attempts": entry["attempts"] + 1, "status": outcome.status, "error": (outcome.error or "")[:500]}
        failures[f"{job.seed}:{job.epoch}"] = entry
        study.store.set_state(f"{strategy.name}:failures", failures)
        give_up = entry["attempts"] > study.retries
        study.progress.note(f"  seed {job.seed} epoch {job.epoch + 1} failed ({outcome.status}: {entry['error'][:200]})"
                            + ("; the seed stops here" if give_up else "; retried"))

    def epoch_summary(self, study, strategy, epoch: int) -> dict:
        from autoloss.engine.schedulers import generation_summary

        rows = study.store.candidates(epoch)
        seeds = {}
        for row in rows:
            verdict = study.store.verdict(row.id, DERIVED)
            if verdict is None:
                continue
            m = verdict.metrics
            seeds[str(row.index)] = {"genotype": row.genotype, "cell_holdout": m.get("cell_holdout"),
                                     "supernet_holdout": m.get("supernet_holdout"), "skips": m.get("skips"),
                                     "eigenvalue": m.get("eigenvalue"), "skip_dropout": m.get("skip_dropout")}
        return generation_summary(study, epoch, len(rows), {"epoch": epoch, "method": strategy.name, "seeds": seeds})

    # -- the choice
    def choose(self, study, strategy) -> dict[int, Any]:
        """Each seed's epoch of the hold-out minimum: its derived verdict passes, the other epochs' do not."""
        criterion = strategy.options.criterion
        chosen = {}
        for seed in range(strategy.options.seeds):
            epochs = seed_epochs(study, seed)
            best = best_epoch(epochs, criterion)
            if best is None:
                continue
            best_row, best_verdict = best
            chosen[seed] = best_row
            minimum = holdout_loss(best_verdict, criterion)
            for row, verdict in epochs:
                passed = row.id == best_row.id
                loss = holdout_loss(verdict, criterion)
                reason = (f"the {criterion}'s hold-out minimum of seed {seed} ({_fmt(minimum)})" if passed else
                          f"{criterion} hold-out loss {_fmt(loss)} above seed {seed}'s minimum {_fmt(minimum)} "
                          f"at epoch {best_row.generation + 1}")
                if verdict.passed != passed or verdict.reason != reason:
                    study.record(row, Verdict(DERIVED, passed, reason, verdict.metrics), verdict.status,
                                 verdict.seconds, verdict.attempts)
        if chosen:
            winner = self.winner(study, strategy, chosen)
            study.store.set_state(f"{strategy.name}:choice", {
                "chosen": {str(seed): row.id for seed, row in chosen.items()}, "winner_seed": winner,
                "winner": chosen[winner].id, "criterion": criterion})
        return chosen

    def winner(self, study, strategy, chosen: dict[int, Any]) -> int:
        """The seed whose chosen cell has the lowest hold-out loss (the lower seed on ties)."""
        criterion = strategy.options.criterion
        return min(chosen, key=lambda seed: (holdout_loss(study.store.verdict(chosen[seed].id, DERIVED), criterion),
                                             seed))

    def summarise(self, study, strategy) -> list[dict]:
        """The epochs' summaries rewritten with the ranking stage's results."""
        summaries = []
        for epoch in study.store.finished_generations():
            summary = self.epoch_summary(study, strategy, epoch)
            study.store.finish_generation(epoch, summary)
            summaries.append(summary)
        return summaries


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


# -------------------------------------------------------------------------------- the strategies


class DartsStrategy(StrategyBase):
    """First-order DARTS with CHASE's changes done right (skip dropout, warm-up, early stopping, seeds)."""

    name = "darts"
    Options = DartsOptions
    scheduler = DifferentiableScheduler

    def cheap_gates(self, gates: list[Gate]) -> list[Gate]:
        return list(gates)  # the chosen cells pass the structure and budget gates before the proxy

    def stages(self, timeouts: dict[str, float]) -> list[Stage]:
        return [Stage("proxy", self.options.proxy_timeout or timeouts.get("proxy", 3600.0), ranks=True)]

    # the generational hook: a differentiable search proposes no bred candidates
    def propose(self, study, generation, count: int, rng: random.Random) -> list[Proposal]:
        raise UserError(f"--strategy {self.name} runs with its own scheduler, not --mode generational/steady-state")


class Darts2Strategy(DartsStrategy):
    """Second-order DARTS: the virtual step is the weight optimiser actually used (Adam)."""

    name = "darts2"
    Options = Darts2Options


class MsDartsStrategy(DartsStrategy):
    """MS-DARTS: the weight step at the mean-shifted mixing weights."""

    name = "ms-darts"
    Options = MsDartsOptions


STRATEGIES = (DartsStrategy, Darts2Strategy, MsDartsStrategy)
NAMES = tuple(cls.name for cls in STRATEGIES)


def is_differentiable(name: str | None) -> bool:
    return name in NAMES


DEMO_BUDGET = {"epochs": 6, "seeds": 3, "steps_per_epoch": 10, "holdout_batches": 4, "patience": 3,
               "eigenvalue_iterations": 10}  # `autoloss search --tracker dimp_small --demo --strategy darts`
CLI_OPTIONS = ("epochs", "seeds", "warmup", "skip_dropout", "patience", "steps_per_epoch", "holdout_batches",
               "weight_lr", "arch_lr", "eigenvalue", "proxy", "epoch_timeout", "ms_eps", "ms_h", "ms_samples",
               "ms_iterations", "ms_temperature", "share_gradient")  # the options `autoloss search` has flags for
