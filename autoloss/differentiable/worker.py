"""The worker side of a differentiable search: one epoch of one seed, from and into its checkpoint.

The scheduler (:mod:`autoloss.differentiable.scheduler`) sends an :class:`EpochJob` to a worker
process; :func:`run_epoch_job` asks the problem's supernet hook (``Problem.supernet.search``, e.g.
:func:`autoloss.tracking.supernet_model.supernet_search`) for the seed's :class:`SupernetSetup`,
builds the :class:`~autoloss.differentiable.search.DifferentiableSearch`, loads the checkpoint,
runs the epoch and saves it (atomically). Every epoch is thus a resume of the previous one.

torch is imported inside the functions that run in the worker: the CLI imports this module (through
the strategies) to build its flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from autoloss.differentiable.schedule import warmup_epochs
from autoloss.engine import heartbeat


@dataclass
class SupernetSetup:
    """What the problem's supernet hook builds for one seed's search (in the worker)."""

    model: Any  # a torch module with arch_parameters, weight_parameters, mixing_weights, fixed_mixing_weights
    loss_fn: Callable[[Any, Any], Any]  # (model, batch) -> the loss tensor
    train_batches: Callable[[int], list]  # epoch -> the weight-split batches of the epoch
    arch_batches: Callable[[int], list]  # epoch -> the architecture-split batches of the epoch
    holdout_batches: Callable[[int], list]  # epoch -> the hold-out batches the losses are averaged over
    weight_lr: float  # the weights' learning rate unless the options name one


@dataclass(frozen=True)
class EpochJob:
    """One epoch of one seed's search: runs in a worker, from and into ``checkpoint``; picklable."""

    task: dict
    method: str
    options: dict  # the strategy's options, as stored with the run
    seed: int  # the seed's index (the candidates' index)
    seed_value: int  # what initialises the supernet and draws its random numbers
    epoch: int
    checkpoint: str
    supernet: Callable  # the problem's hook (module-level): (task, seed, **sizes) -> context of a SupernetSetup


def supernet_sizes(options: dict) -> dict:
    """The keyword arguments of the supernet hook: the batches per epoch and the skip dropout."""
    return {"steps_per_epoch": options["steps_per_epoch"], "architecture_batches": options["architecture_batches"],
            "holdout_batches": options["holdout_batches"], "skip_dropout": options["skip_dropout"]}


def search_options(method: str, options: dict, seed_value: int):
    """The core loop's :class:`~autoloss.differentiable.search.SearchOptions` of a strategy's options."""
    from autoloss.differentiable.search import SearchOptions  # heavy: torch

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


def build_search(job: EpochJob, setup: SupernetSetup):
    """The seed's DifferentiableSearch on ``setup``, freshly initialised (a checkpoint is loaded by the caller)."""
    import torch  # heavy: torch

    from autoloss.differentiable.search import DifferentiableSearch  # heavy: torch

    options, model = job.options, setup.model
    weight_optimizer = torch.optim.Adam(model.weight_parameters(), lr=options["weight_lr"] or setup.weight_lr)
    arch_optimizer = torch.optim.Adam(model.arch_parameters(), lr=options["arch_lr"],
                                      betas=(options["arch_beta1"], options["arch_beta2"]),
                                      weight_decay=options["arch_weight_decay"])
    return DifferentiableSearch(model, setup.loss_fn, setup.train_batches, setup.arch_batches, weight_optimizer,
                                arch_optimizer, search_options(job.method, options, job.seed_value),
                                holdout_batches=setup.holdout_batches,
                                weight_scheduler=weight_scheduler(weight_optimizer, options))


def weight_scheduler(optimizer, options: dict):
    """The weights' learning-rate schedule of the options (stepped after every epoch, checkpointed with
    the optimisers): ``cosine`` anneals from the learning rate to 0 over ``epochs`` (CHASE's paper);
    ``constant`` (and options stored before the choice existed) has none."""
    import torch  # heavy: torch

    if options.get("weight_schedule", "constant") == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=options["epochs"], eta_min=0.0)


def run_epoch_job(job: EpochJob) -> dict:
    """Worker side: continue the seed's search from its checkpoint by one epoch; the epoch's record."""
    heartbeat.begin(f"{job.method} epoch {job.epoch + 1}", f"seed {job.seed}")
    try:
        with job.supernet(job.task, job.seed_value, **supernet_sizes(job.options)) as setup:
            search = build_search(job, setup)
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
