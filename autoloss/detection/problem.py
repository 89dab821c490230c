"""The loss search on an MMDetection detector (``autoloss search --detector``)."""

from __future__ import annotations

from autoloss.detection.task import DetectionTask, evaluate
from autoloss.engine.study import Problem
from autoloss.loss.problem import loss_problem
from autoloss.loss.representation import LossGateOptions
from autoloss.loss.space import load_space

# Seconds per evaluation: a detector's proxy is an epoch of its training set (hours on COCO).
DETECTOR_TIMEOUTS = {"mos": 3600.0, "proxy": 24 * 3600.0}


def detection_problem(task: DetectionTask, gate_options: LossGateOptions | None = None) -> Problem:
    """A loss search on the detector of ``task``.

    Detector workers are spawned, not forked: a fork of a process whose OpenMP (libgomp) thread pool
    is running can hang in the child, and mmcv/torch use OpenMP.
    """
    return loss_problem(load_space(task.space), evaluate, task.to_dict(), "mAP", iou="iou",
                        gate_options=gate_options, timeouts=DETECTOR_TIMEOUTS, start_method="spawn")
