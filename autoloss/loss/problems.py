"""Search problems for the loss representation: the representation, its operators, and a task.

This is where the generic engine meets losses: a task supplies the picklable evaluation of the
expensive stages: the cheap noisy-digits task (:func:`task_problem`) or an MMDetection detector
(:func:`detection_problem`).
"""

from __future__ import annotations

from autoloss.engine.study import Problem
from autoloss.errors import UserError
from autoloss.loss.representation import LossGateOptions, LossRepresentation
from autoloss.loss.space import SearchSpace

TASKS = ("noisy-digits",)
TASK_TIMEOUTS = {"mos": 600.0, "proxy": 3600.0}
# Seconds per evaluation: a detector's proxy is an epoch of its training set (hours on COCO).
DETECTOR_TIMEOUTS = {"mos": 3600.0, "proxy": 24 * 3600.0}


def loss_problem(space: SearchSpace, evaluate, task: dict, metric: str, iou: str,
                 gate_options: LossGateOptions | None = None, timeouts: dict | None = None,
                 start_method: str | None = None) -> Problem:
    """The loss representation of ``space`` with the expensive ``evaluate(task, ...)``."""
    representation = LossRepresentation(space, iou=iou, gate_options=gate_options or LossGateOptions())
    return Problem(representation=representation, operators=representation.operators, evaluate=evaluate,
                   task=task, metric=metric, timeouts=dict(timeouts or TASK_TIMEOUTS), start_method=start_method)


def task_problem(task: str, space: SearchSpace, params: dict | None = None,
                 gate_options: LossGateOptions | None = None) -> Problem:
    """A loss search on one of the cheap built-in tasks (``noisy-digits``)."""
    if task != "noisy-digits":
        raise UserError(f"unknown task '{task}': expected one of {', '.join(TASKS)}")
    if space.mode == "regression":
        raise UserError("the noisy-digits task trains a classifier: use --branch cls (space cls_softmax or cls_sigmoid)")
    from autoloss.tasks import noisy_digits

    try:
        settings = noisy_digits.NoisyDigitsTask.from_dict({**(params or {}), "space": space.source or space.name})
    except (TypeError, ValueError) as exc:
        raise UserError(f"task options: {exc}") from None
    return loss_problem(space, noisy_digits.evaluate, settings.to_dict(), "accuracy", iou=settings.iou,
                        gate_options=gate_options)


def detection_problem(task, gate_options: LossGateOptions | None = None) -> Problem:
    """A loss search on an MMDetection detector (:class:`autoloss.tasks.detection.DetectionTask`).

    Detector workers are spawned, not forked: a fork of a process whose OpenMP (libgomp) thread pool
    is running can hang in the child, and mmcv/torch use OpenMP.
    """
    from autoloss.loss.space import load_space
    from autoloss.tasks import detection

    return loss_problem(load_space(task.space), detection.evaluate, task.to_dict(), "mAP", iou="iou",
                        gate_options=gate_options, timeouts=DETECTOR_TIMEOUTS, start_method="spawn")
