"""A resumable differentiable cell search loop: DARTS first/second order and MS-DARTS, epoch by epoch.

The model is an ``nn.Module`` with ``arch_parameters()``, ``weight_parameters()``,
``mixing_weights()`` (the current ``[14, 8]`` softmax of alpha) and ``fixed_mixing_weights(w)`` (a
context manager in which the supernet mixes by ``w``), as :class:`autoloss.cell.supernet.CellSupernet`;
``loss_fn(model, batch) -> scalar``. Per iteration, on one weight-split and one architecture-split
batch:

1. an architecture step (:class:`Architect`, first or second order), once past the warm-up;
2. ``ms-darts``: the mixing weights are mean-shifted (samples measured on the architecture batch in
   eval mode, as the reference code does, so that no skip-dropout mask enters the samples' weights)
   and the weight step runs at the shifted point; alpha itself is never overwritten;
3. the weight step (gradient clipping as DARTS, 5 by default).

Second order (``darts2``) by default shares steps 1 and 3's weight gradient (``share_gradient``;
:meth:`Architect.shared_step`): the virtual step is then the real one and an iteration costs four
forward-backward passes instead of five.

Every epoch sets the skip-dropout rate on the modules, and ends with the derived genotype, the
hold-out losses of the supernet and of the derived cell (the supernet with the genotype's one-hot
weights, eval mode; BatchNorm recalibrated for the discrete cell first, see :meth:`recalibrated`),
optionally the largest eigenvalue of the architecture-split loss's Hessian in alpha (R-DARTS's and
MS-DARTS's measure: the full 112 x 112 Hessian, exact, in eval mode so that skip dropout does not
enter it, on the epoch's first architecture batch; it changes nothing in the search), and early
stopping. Epochs of the warm-up (``warmup``: alpha is still its initial noise) are recorded but are
never chosen and do not count toward the patience; options whose warm-up covers every epoch are
refused (``ValueError``). ``state_dict()`` after an epoch holds everything the next one depends on
(weights, alpha, both optimisers, the weights' learning-rate scheduler, the generators, early
stopping, the epoch), so a search loaded into fresh objects continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from autoloss.cell.supernet import SkipDropout, set_skip_dropout
from autoloss.differentiable.architect import ADAM_JACOBIANS, Architect, LossFn
from autoloss.differentiable.derive import count_skips, derive_genotype, genotype_weights
from autoloss.differentiable.hessian import largest_eigenvalue
from autoloss.differentiable.mean_shift import eps_schedule, mean_shift
from autoloss.differentiable.schedule import EarlyStopping, arch_warmup, skip_dropout_rate, warmup_epochs
from autoloss.differentiable.state import RandomState, cuda_devices, preserved_buffers
from autoloss.files import write_atomic

METHODS = ("darts", "darts2", "ms-darts")


class Diverged(RuntimeError):
    """A seed's search whose alpha, weights or loss stopped being finite (the engine stores status
    "diverged" for an error named so, and the scheduler stops the seed without retrying)."""

STATE_VERSION = 1
RECALIBRATION_BATCHES = 8  # weight-split batches of the epoch that recalibrate BN for the derived cell

Batches = Iterable[Any] | Callable[[int], Iterable[Any]]


@dataclass
class SearchOptions:
    """The knobs of a differentiable search (defaults: CHASE's schedule, MS-DARTS's mean shift)."""

    method: str = "darts2"
    epochs: int = 70
    warmup_epochs: int | None = None  # None: CHASE's 10 of 70 scaled to ``epochs``
    skip_dropout: float = 0.6
    grad_clip: float | None = 5.0
    patience: int | None = None  # None: no early stopping (the minimum is still tracked)
    early_stopping_criterion: str = "cell"
    adam_jacobian: str = "frozen"
    ms_order: int = 1  # the architect's order under ms-darts (the authors' code: first order)
    ms_eps: float = 0.25
    ms_h: float = 1.0
    ms_samples: int = 3
    ms_iterations: int = 2
    ms_temperature: float = 1.0
    eigenvalue: bool = False
    eigenvalue_iterations: int = 20  # unused since the Hessian is exact; kept so that configs naming it load
    share_gradient: bool = True  # second order: one weight gradient for the virtual and the real step
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1")
        if self.adam_jacobian not in ADAM_JACOBIANS:
            raise ValueError(f"adam_jacobian must be one of {ADAM_JACOBIANS}")
        if self.warmup >= self.epochs:
            raise ValueError(f"the warm-up ({self.warmup} epochs) covers all {self.epochs} epochs: alpha would "
                             "never be trained and no epoch could be chosen")

    @property
    def order(self) -> int:
        return {"darts": 1, "darts2": 2}.get(self.method, self.ms_order)

    @property
    def warmup(self) -> int:
        return warmup_epochs(self.epochs) if self.warmup_epochs is None else self.warmup_epochs


class DifferentiableSearch:
    """Runs and checkpoints a search; ``run_epoch(epoch)`` returns that epoch's record (a plain dict)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, train_batches: Batches, arch_batches: Batches,
                 weight_optimizer: torch.optim.Optimizer, arch_optimizer: torch.optim.Optimizer,
                 options: SearchOptions | None = None, *, holdout_batches: Batches | None = None,
                 weight_scheduler: Any = None):
        self.model, self.loss_fn = model, loss_fn
        self.train_batches, self.arch_batches, self.holdout_batches = train_batches, arch_batches, holdout_batches
        self.weight_optimizer, self.arch_optimizer = weight_optimizer, arch_optimizer
        self.weight_scheduler = weight_scheduler
        self.options = options or SearchOptions()
        self.architect = Architect(model, loss_fn, weight_optimizer, arch_optimizer, order=self.options.order,
                                   adam_jacobian=self.options.adam_jacobian)
        self.early_stopping = EarlyStopping(self.options.patience or 1, self.options.early_stopping_criterion,
                                            start=self.options.warmup)
        self.generator = torch.Generator().manual_seed(self.options.seed)
        self.epoch = 0  # the next epoch to run
        self.history: list[dict] = []
        self.stopped = False
        self._weights = [p for group in weight_optimizer.param_groups for p in group["params"]]

    # ------------------------------------------------------------------ running

    def run(self, on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
        """Epochs from ``self.epoch`` until ``options.epochs`` or early stopping; ``on_epoch(record)`` after each."""
        while self.epoch < self.options.epochs and not self.stopped:
            record = self.run_epoch(self.epoch)
            if on_epoch is not None:
                on_epoch(record)
        return self.history

    def run_epoch(self, epoch: int) -> dict:
        options, model = self.options, self.model
        started = time.perf_counter()
        model.train()
        dropout = skip_dropout_rate(epoch, options.epochs, options.skip_dropout)
        set_skip_dropout(model, dropout)
        eps = eps_schedule(options.ms_eps, epoch, options.epochs)
        arch_active = not arch_warmup(epoch, options.warmup)
        train_losses, arch_losses = [], []
        arch_seconds = weight_seconds = 0.0
        first_arch_batch = None
        for train_batch, arch_batch in zip(_iterate(self.train_batches, epoch), _iterate(self.arch_batches, epoch)):
            if first_arch_batch is None:
                first_arch_batch = arch_batch
            if arch_active and self.shares_gradient:
                tick = time.perf_counter()
                train_loss, arch_loss = self.architect.shared_step(train_batch, arch_batch, options.grad_clip)
                train_losses.append(train_loss)
                arch_losses.append(arch_loss)
                arch_seconds += time.perf_counter() - tick
                continue
            if arch_active:
                tick = time.perf_counter()
                arch_losses.append(self.architect.step(train_batch, arch_batch))
                arch_seconds += time.perf_counter() - tick
            tick = time.perf_counter()
            if options.method == "ms-darts":
                center = model.mixing_weights().detach()
                shifted, _, _ = mean_shift(center, lambda w: self._loss_at(w, arch_batch), eps=eps, h=options.ms_h,
                                           n_samples=options.ms_samples, iterations=options.ms_iterations,
                                           temperature=options.ms_temperature, generator=self.generator)
                with model.fixed_mixing_weights(shifted):
                    train_losses.append(self._weight_step(train_batch))
            else:
                train_losses.append(self._weight_step(train_batch))
            weight_seconds += time.perf_counter() - tick
        if self.weight_scheduler is not None:
            self.weight_scheduler.step()
        self._check_finite(epoch, train_losses + arch_losses)

        weights = model.mixing_weights().detach()
        genotype = derive_genotype(weights, softmax=False)
        supernet_loss = cell_loss = None
        if self.holdout_batches is not None:
            supernet_loss = self._holdout_loss(epoch, None)
            cell_loss = self._holdout_loss(epoch, genotype_weights(genotype, dtype=weights.dtype))
        eigenvalue = None
        if options.eigenvalue and first_arch_batch is not None:
            eigenvalue = self._eigenvalue(epoch, first_arch_batch)
        if supernet_loss is not None:
            stop = self.early_stopping.update(epoch, supernet_loss, cell_loss, genotype)
            self.stopped = bool(options.patience) and stop
        record = {
            "epoch": epoch, "method": options.method, "genotype": str(genotype), "skips": count_skips(genotype),
            "weights": weights.cpu().tolist(), "train_loss": _mean(train_losses), "arch_loss": _mean(arch_losses),
            "supernet_holdout": supernet_loss, "cell_holdout": cell_loss, "eigenvalue": eigenvalue,
            "skip_dropout": dropout, "ms_eps": eps if options.method == "ms-darts" else None,
            "arch_steps": len(arch_losses), "arch_seconds": arch_seconds, "weight_seconds": weight_seconds,
            "seconds": time.perf_counter() - started, "stop": self.stopped, "warmup": not arch_active,
        }
        self.history.append(record)
        self.epoch = epoch + 1
        return record

    def _check_finite(self, epoch: int, losses: list[float]) -> None:
        """Raise :class:`Diverged` once alpha, a weight or a loss of the epoch is not finite (NaN or
        infinite): no genotype is derived from it and the state is not saved (the seed stops there)."""
        if any(not torch.isfinite(p).all() for p in self.model.arch_parameters()):
            what = "alpha"
        elif any(not torch.isfinite(p).all() for p in self._weights):
            what = "the supernet's weights"
        elif not all(math.isfinite(value) for value in losses):
            what = "the training loss"
        else:
            return
        raise Diverged(f"{what} became NaN or infinite in epoch {epoch + 1} of this seed's {self.options.method} search "
                       "(too large a learning rate, or a degenerate mean-shift bandwidth?)")

    @property
    def shares_gradient(self) -> bool:
        """Second order without a mean shift (whose weight step is at the shifted point): see
        :meth:`Architect.shared_step`."""
        return self.options.share_gradient and self.options.order == 2 and self.options.method != "ms-darts"

    def _weight_step(self, batch: Any) -> float:
        loss = self.loss_fn(self.model, batch)
        grads = torch.autograd.grad(loss, self._weights, allow_unused=True)
        for parameter, grad in zip(self._weights, grads):
            parameter.grad = grad
        if self.options.grad_clip is not None:
            nn.utils.clip_grad_norm_([p for p in self._weights if p.grad is not None], self.options.grad_clip)
        self.weight_optimizer.step()
        return float(loss.detach())

    def _loss_at(self, weights: torch.Tensor, batch: Any) -> float:
        """One mean-shift sample's loss: eval mode (the reference code's; no skip-dropout mask, BN's
        running statistics), so equal samples get equal losses; the modules' modes are put back."""
        with torch.no_grad(), _eval_mode(self.model), preserved_buffers(self.model), \
                self.model.fixed_mixing_weights(weights):
            return float(self.loss_fn(self.model, batch))

    def _holdout_loss(self, epoch: int, weights: torch.Tensor | None) -> float:
        """The mean hold-out loss in eval mode: of the supernet (``weights`` None), or of the discrete
        cell the one-hot ``weights`` select, with BN recalibrated for it (:meth:`recalibrated`)."""
        if weights is not None:
            with self.recalibrated(weights, epoch):
                return self._holdout_loss(epoch, None)
        with torch.no_grad(), _eval_mode(self.model):
            return _mean([float(self.loss_fn(self.model, batch)) for batch in _iterate(self.holdout_batches, epoch)])

    @contextmanager
    def recalibrated(self, weights: torch.Tensor, epoch: int) -> Iterator[None]:
        """Inside: the supernet mixes by ``weights`` and its BatchNorm statistics are the discrete
        cell's. The supernet's running statistics are the mixed network's, whose node activations
        differ in scale from the derived cell's; so they are reset and re-estimated by train-mode
        forward passes (no gradient, no weight update, skip dropout off) over up to
        :data:`RECALIBRATION_BATCHES` of the epoch's weight-split batches, with cumulative averages
        (``momentum=None``). Afterwards every buffer, momentum, dropout rate, module mode and
        generator is as it was."""
        model = self.model
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and m.track_running_stats]
        momenta = [m.momentum for m in norms]
        dropouts = [(m, m.p) for m in model.modules() if isinstance(m, SkipDropout)]
        random_state = RandomState.capture(cuda_devices(list(model.parameters())))
        modes = [(module, module.training) for module in model.modules()]
        try:
            with preserved_buffers(model), model.fixed_mixing_weights(weights):
                for norm in norms:
                    norm.reset_running_stats()
                    norm.momentum = None
                set_skip_dropout(model, 0.0)
                model.train()
                batches = list(_iterate(self.train_batches, epoch))[:RECALIBRATION_BATCHES]
                with torch.no_grad():
                    for batch in batches:
                        self.loss_fn(model, batch)
                for norm, momentum in zip(norms, momenta):
                    norm.momentum = momentum
                for module, training in modes:
                    module.training = training
                yield
        finally:
            for norm, momentum in zip(norms, momenta):
                norm.momentum = momentum
            for module, p in dropouts:
                module.p = p
            for module, training in modes:
                module.training = training
            random_state.restore()

    def _eigenvalue(self, epoch: int, batch: Any) -> float:
        """The largest eigenvalue of the architecture loss's Hessian in alpha, in eval mode (no skip
        dropout, BN's running statistics); the model's mode, buffers and generators are put back."""
        arch = list(self.model.arch_parameters())
        random_state = RandomState.capture(cuda_devices(arch))
        try:
            with _eval_mode(self.model), preserved_buffers(self.model):
                return largest_eigenvalue(lambda: self.loss_fn(self.model, batch), arch)
        finally:
            random_state.restore()

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Everything the next epoch depends on; plain data and tensors (``torch.load(weights_only=True)``)."""
        devices = cuda_devices(list(self.model.parameters()))
        return {
            "version": STATE_VERSION, "epoch": self.epoch, "stopped": self.stopped,
            "options": asdict(self.options), "model": self.model.state_dict(),
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "weight_scheduler": None if self.weight_scheduler is None else self.weight_scheduler.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "random": RandomState.capture(devices, host=True).to_plain(),
            "generator": self.generator.get_state(), "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``: the generators are set now, so call ``run`` next."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown search state version {state.get('version')!r}")
        if state["options"]["method"] != self.options.method:
            raise ValueError(f"the checkpoint is a {state['options']['method']} search, not {self.options.method}")
        self.model.load_state_dict(state["model"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        if (self.weight_scheduler is None) != (state["weight_scheduler"] is None):
            raise ValueError("the checkpoint was saved " + ("without" if self.weight_scheduler is not None else "with")
                             + " a learning-rate schedule on the weights, this search has "
                             + ("one" if self.weight_scheduler is not None else "none"))
        if self.weight_scheduler is not None:
            self.weight_scheduler.load_state_dict(state["weight_scheduler"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.generator.set_state(state["generator"])
        self.epoch, self.stopped = int(state["epoch"]), bool(state["stopped"])
        self.history = list(state["history"])
        RandomState.from_plain(state["random"]).restore()

    def save(self, path: str | os.PathLike) -> None:
        """Write the state atomically (a kill mid-write leaves the previous checkpoint)."""
        path = os.fspath(path)
        state = self.state_dict()
        write_atomic(path, lambda file: torch.save(state, file))  # a full disk: one line, no temporary left

    def load(self, path: str | os.PathLike) -> None:
        self.load_state_dict(torch.load(os.fspath(path), map_location="cpu", weights_only=True))


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; every module's own mode put back after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _iterate(batches: Batches, epoch: int) -> Iterable[Any]:
    return batches(epoch) if callable(batches) else batches


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
