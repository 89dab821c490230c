"""The search problem of the loss representation: the representation, its operators, and a task.

This is where the generic engine meets losses; a task supplies the picklable evaluation of the
expensive stages: the cheap noisy-digits task (:func:`autoloss.tasks.problem.task_problem`) or an
MMDetection detector (:func:`autoloss.detection.problem.detection_problem`).
"""

from __future__ import annotations

from autoloss.engine.study import Problem
from autoloss.loss.representation import LossGateOptions, LossRepresentation
from autoloss.loss.space import SearchSpace

# Seconds per evaluation unless the task says otherwise (enough for a cheap task).
DEFAULT_TIMEOUTS = {"mos": 600.0, "proxy": 3600.0}


def loss_problem(space: SearchSpace, evaluate, task: dict, metric: str, iou: str,
                 gate_options: LossGateOptions | None = None, timeouts: dict | None = None,
                 start_method: str | None = None) -> Problem:
    """The loss representation of ``space`` with the expensive ``evaluate(task, ...)``."""
    representation = LossRepresentation(space, iou=iou, gate_options=gate_options or LossGateOptions())
    return Problem(representation=representation, operators=representation.operators, evaluate=evaluate,
                   task=task, metric=metric, timeouts=dict(timeouts or DEFAULT_TIMEOUTS),
                   start_method=start_method)
