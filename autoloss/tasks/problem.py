"""The loss search on a cheap built-in task (``autoloss search --task``)."""

from __future__ import annotations

from autoloss.engine.study import Problem
from autoloss.errors import UserError
from autoloss.loss.problem import loss_problem
from autoloss.loss.representation import LossGateOptions
from autoloss.loss.space import SearchSpace
from autoloss.tasks import noisy_digits

TASKS = ("noisy-digits",)
TASK_TIMEOUTS = {"mos": 600.0, "proxy": 3600.0}  # seconds per evaluation


def task_problem(task: str, space: SearchSpace, params: dict | None = None,
                 gate_options: LossGateOptions | None = None) -> Problem:
    """A loss search on one of the cheap built-in tasks (``noisy-digits``)."""
    if task != "noisy-digits":
        raise UserError(f"unknown task '{task}': expected one of {', '.join(TASKS)}")
    if space.mode == "regression":
        raise UserError("the noisy-digits task trains a classifier: use --branch cls (space cls_softmax or cls_sigmoid)")
    try:
        settings = noisy_digits.NoisyDigitsTask.from_dict({**(params or {}), "space": space.source or space.name})
    except (TypeError, ValueError) as exc:
        raise UserError(f"task options: {exc}") from None
    return loss_problem(space, noisy_digits.evaluate, settings.to_dict(), "accuracy", iou=settings.iou,
                        gate_options=gate_options, timeouts=TASK_TIMEOUTS)
