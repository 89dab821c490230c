"""The options of the differentiable strategies and their validation (one-line errors naming the flag).

:class:`DartsOptions` is CHASE's schedule with DARTS's architect optimiser; :class:`Darts2Options`
adds the second-order architect's choices, :class:`MsDartsOptions` MS-DARTS' mean shift. The
defaults are the CLI's. This module does not import torch (the CLI reads it to build its flags).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

from autoloss.differentiable.schedule import warmup_epochs
from autoloss.strategies.base import check, positive_seconds

CHASE_WARMUP = 10 / 70
CRITERIA = ("cell", "supernet")
PROXY_CHOICES = ("seeds", "winner")
WEIGHT_SCHEDULES = ("cosine", "constant")


# The numeric options' ranges: (low, high), a "(" or ")" where the bound itself is excluded. Beyond them
# a search measures nothing: alpha or the weights turn NaN (an lr of 1e9, a bandwidth of 1e-300 whose
# kernel underflows), or nothing moves (an lr of 0 on the weights, a clip at 0).
NUMBER_RANGES = {"weight_lr": ("(0", "10]"), "arch_lr": ("[0", "10]"), "arch_beta1": ("[0", "1)"),
                 "arch_beta2": ("[0", "1)"), "arch_weight_decay": ("[0", "1]"), "grad_clip": ("(0", "1e6]")}
MS_RANGES = {"ms_eps": ("(0", "1]"), "ms_h": ("[1e-3", "1e3]"), "ms_temperature": ("[1e-3", "1e3]")}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(name: str, value, low: str, high: str) -> None:
    """A UserError naming the flag unless ``value`` is a number within ``low`` and ``high`` (as in
    :data:`NUMBER_RANGES`: "[0" includes 0, "(0" excludes it)."""
    lo, hi = float(low[1:]), float(high[:-1])
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= lo if low[0] == "[" else value > lo) and (value <= hi if high[-1] == "]" else value < hi)
    check(ok, f"{_flag(name)} must be a number in {low}, {high}, got {str(value)[:40]}")


@dataclass
class DartsOptions:
    """A differentiable search's schedule (defaults: CHASE's; the architect's optimiser: DARTS's)."""

    epochs: int = 70
    seeds: int = 3  # independent searches, each one worker; the winner by hold-out loss
    warmup: float = CHASE_WARMUP  # share of the epochs before alpha is updated (CHASE: 10 of 70)
    skip_dropout: float = 0.6  # dropout after skip connections at epoch 0, decaying to 0
    patience: int | None = 10  # stop a seed after this many epochs without a new hold-out minimum
    criterion: str = "cell"  # the hold-out loss that chooses the epoch: the derived cell's or the supernet's
    steps_per_epoch: int | None = None  # weight and architecture steps per epoch (default: the problem's pool)
    architecture_batches: int | None = None  # cached architecture-split batches (default: the pool)
    holdout_batches: int = 8  # fixed hold-out batches the losses are averaged over
    weight_lr: float | None = None  # Adam on the weights (default: the problem's lr, CHASE 1e-3)
    weight_schedule: str = "cosine"  # the weights' lr over the epochs: cosine annealing to 0 (CHASE) or constant
    arch_lr: float = 3e-4
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3
    grad_clip: float | None = 5.0
    eigenvalue: bool = True  # log the largest eigenvalue of the architecture loss's Hessian in alpha (exact)
    eigenvalue_iterations: int = 20  # unused since the Hessian is exact; kept so that stored runs and configs load
    proxy: str = "seeds"  # which chosen cells are retrained on the ranking stage: each seed's, or the winner
    epoch_timeout: float | None = None  # seconds per epoch job (default: 6 hours)
    proxy_timeout: float | None = None  # seconds per proxy evaluation (default: the problem's)
    LEGACY: ClassVar[dict] = {"weight_schedule": "constant"}  # added later: runs stored before kept the lr

    def validate(self) -> None:
        for name in ("epochs", "seeds", "holdout_batches", "eigenvalue_iterations"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1_000_000,
                  f"{_flag(name)} must be a positive integer (at most 1000000), got {value}")
        for name in ("patience", "steps_per_epoch", "architecture_batches"):
            value = getattr(self, name)
            check(value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1_000_000),
                  f"{_flag(name)} must be a positive integer, got {value}")
        check(isinstance(self.warmup, (int, float)) and 0 <= self.warmup < 1,
              f"--warmup is a share of the epochs in [0, 1), got {self.warmup}")
        check(isinstance(self.skip_dropout, (int, float)) and 0 <= self.skip_dropout < 1,
              f"--skip-dropout is a rate in [0, 1), got {self.skip_dropout}")
        for name, (low, high) in NUMBER_RANGES.items():
            value = getattr(self, name)
            if value is None and name in ("weight_lr", "grad_clip"):
                continue
            _number(name, value, low, high)
        check(isinstance(self.eigenvalue, bool), f"eigenvalue is true or false, got {self.eigenvalue!r}")
        check(self.criterion in CRITERIA, f"--criterion is one of {', '.join(CRITERIA)}, got {self.criterion!r}")
        check(self.proxy in PROXY_CHOICES, f"--proxy is one of {', '.join(PROXY_CHOICES)}, got {self.proxy!r}")
        check(self.weight_schedule in WEIGHT_SCHEDULES,
              f"--weight-schedule is one of {', '.join(WEIGHT_SCHEDULES)}, got {self.weight_schedule!r}")
        check(self.warmup_epochs < self.epochs,
              f"--warmup {self.warmup:g} of --epochs {self.epochs} is {self.warmup_epochs} warm-up epoch(s), all of "
              "them: alpha would never be trained and no epoch could be chosen (lower --warmup or raise --epochs)")
        positive_seconds("epoch_timeout", self.epoch_timeout)
        positive_seconds("proxy_timeout", self.proxy_timeout)

    @property
    def warmup_epochs(self) -> int:
        return warmup_epochs(self.epochs, self.warmup)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class Darts2Options(DartsOptions):
    adam_jacobian: str = "frozen"  # the virtual Adam step's Jacobian: second moment frozen, or exact
    share_gradient: bool = True  # one weight gradient for the virtual and the real step (4 passes, not 5)
    LEGACY: ClassVar[dict] = {**DartsOptions.LEGACY, "share_gradient": False}  # added later: earlier runs did not share

    def validate(self) -> None:
        super().validate()
        check(self.adam_jacobian in ("frozen", "exact"),
              f"--adam-jacobian is frozen or exact, got {self.adam_jacobian!r}")
        check(isinstance(self.share_gradient, bool), f"share_gradient is true or false, got {self.share_gradient!r}")


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
        for name, (low, high) in MS_RANGES.items():
            _number(name, getattr(self, name), low, high)
        for name in ("ms_samples", "ms_iterations"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 10_000,
                  f"{_flag(name)} must be a positive integer, got {value}")
        check(self.ms_order in (1, 2), f"--ms-order is 1 or 2, got {self.ms_order}")
