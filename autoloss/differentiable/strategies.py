"""Differentiable cell search as engine strategies: ``darts`` (first order), ``darts2`` (second order), ``ms-darts``.

Each runs with a scheduler of its own (:class:`~autoloss.differentiable.scheduler.DifferentiableScheduler`)
on the problem's supernet (``Problem.supernet``); it proposes no bred candidates, so it declares no
``propose`` and the generational and steady-state schedulers refuse it. Its options are in
:mod:`autoloss.differentiable.options`; :data:`DEMO_BUDGET` and :data:`CLI_OPTIONS` are what
``autoloss search`` needs of them. This module does not import torch (the CLI reads it).
"""

from __future__ import annotations

from autoloss.differentiable.options import Darts2Options, DartsOptions, MsDartsOptions
from autoloss.differentiable.scheduler import DifferentiableScheduler
from autoloss.engine.protocols import Gate, Stage
from autoloss.strategies.base import StrategyBase


class DartsStrategy(StrategyBase):
    """First-order DARTS with CHASE's changes done right (skip dropout, warm-up, early stopping, seeds)."""

    name = "darts"
    Options = DartsOptions
    scheduler = DifferentiableScheduler

    def cheap_gates(self, gates: list[Gate]) -> list[Gate]:
        return list(gates)  # the chosen cells pass the structure and budget gates before the proxy

    def stages(self, timeouts: dict[str, float]) -> list[Stage]:
        return [Stage("proxy", self.options.proxy_timeout or timeouts.get("proxy", 3600.0), ranks=True)]


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


# `autoloss search --tracker dimp_small --demo --strategy darts`; eigenvalue_iterations is unused since the
# Hessian is exact, and stays so that the demo's stored runs keep their config (and resume).
DEMO_BUDGET = {"epochs": 6, "seeds": 3, "steps_per_epoch": 10, "holdout_batches": 4, "patience": 3,
               "eigenvalue_iterations": 10}
CLI_OPTIONS = ("epochs", "seeds", "warmup", "skip_dropout", "patience", "steps_per_epoch", "holdout_batches",
               "weight_lr", "weight_schedule", "arch_lr", "eigenvalue", "proxy", "epoch_timeout", "ms_eps", "ms_h",
               "ms_samples", "ms_iterations", "ms_temperature", "share_gradient")  # the flags of `autoloss search`
