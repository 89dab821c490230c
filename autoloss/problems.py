"""Search problems for the loss genotype: the genotype, its cheap gates and an expensive task.

This is where the generic engine meets losses: the strategy decides the cheap gates (the CSE
pipeline runs validity, equivalence and convergence property verification; the paper's baselines run
validity only), and a task supplies the picklable evaluation of the expensive stages: the cheap
noisy-digits task (:func:`task_problem`) or an MMDetection detector (:func:`detection_problem`).
"""

from __future__ import annotations

from autoloss.engine.evolution import Problem
from autoloss.errors import UserError
from autoloss.gates.convergence import ConvergenceGate
from autoloss.gates.equivalence import EquivalenceGate
from autoloss.gates.validity import ValidityGate
from autoloss.loss.genotype import LossGenotype
from autoloss.loss.space import SearchSpace

TASKS = ("noisy-digits",)


def loss_gates(space: SearchSpace, strategy: str, seen: dict[str, str], cpv_symbolic: str = "ambiguous",
               cpv_timeout: float = 5.0) -> list:
    if strategy == "cse":
        return [ValidityGate(space), EquivalenceGate(space, seen),
                ConvergenceGate(space, symbolic=cpv_symbolic, timeout=cpv_timeout)]
    return [ValidityGate(space)]


def loss_problem(space: SearchSpace, evaluate, task: dict, metric: str, gate_options: dict,
                 start_method: str | None = None) -> Problem:
    """The loss genotype of ``space`` with its cheap gates and the expensive ``evaluate(task, ...)``."""
    return Problem(
        genotype=LossGenotype(space),
        cheap_gates=lambda strategy, seen: loss_gates(space, strategy, seen, **gate_options),
        evaluate=evaluate,
        task=task,
        metric=metric,
        start_method=start_method,
    )


def task_problem(task: str, space: SearchSpace, params: dict | None = None, **gate_options) -> Problem:
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
    return loss_problem(space, noisy_digits.evaluate, settings.to_dict(), "accuracy", gate_options)


def detection_problem(task, **gate_options) -> Problem:
    """A loss search on an MMDetection detector (:class:`autoloss.tasks.detection.DetectionTask`).

    Detector workers are spawned, not forked: a fork of a process whose OpenMP (libgomp) thread pool
    is running can hang in the child, and mmcv/torch use OpenMP.
    """
    from autoloss.loss.space import load_space
    from autoloss.tasks import detection

    return loss_problem(load_space(task.space), detection.evaluate, task.to_dict(), "mAP", gate_options,
                        start_method="spawn")
