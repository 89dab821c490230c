"""Searched losses as MMDetection loss modules, configured by a genotype string.

Importing this module registers three modules in ``mmdet.registry.MODELS``:

* ``SearchedSoftmaxClsLoss`` (space ``cls_softmax``): drop-in for ``CrossEntropyLoss(use_sigmoid=False)``;
* ``SearchedSigmoidClsLoss`` (space ``cls_sigmoid``): drop-in for ``FocalLoss(use_sigmoid=True)``;
* ``SearchedIoULoss`` (space ``reg``): drop-in for ``GIoULoss`` / ``IoULoss`` on decoded boxes.

Each takes ``expression`` (a prefix expression or a named ready loss of the space, e.g. ``'CE'``,
``'FL'``, ``'GIoU'``) and ``space`` (a bundled space name or a YAML path). The expression is parsed
and compiled once at construction; a bad one raises :class:`autoloss.errors.ExpressionError`.
Forward signatures, weights, ``avg_factor`` and reductions follow MMDetection's conventions, and
the optional ``iou`` keyword feeds the space's IoU input (detached): the bases of
:mod:`autoloss.detection.mmdet.loss_modules`, which exported losses share.
"""

from __future__ import annotations

from mmdet.registry import MODELS
from torch import Tensor

from autoloss.errors import ExpressionError
from autoloss.loss.compile import compile_loss
from autoloss.loss.expression import parse
from autoloss.loss.space import SearchSpace, load_space
from autoloss.detection.mmdet.loss_modules import IoULossBase, SigmoidClsLossBase, SoftmaxClsLossBase

# the order in which the bases of autoloss.detection.mmdet.loss_modules pass the inputs to loss_fn
INPUT_ROLES = {"softmax": ("logits", "target", "iou"), "sigmoid": ("logits", "target", "iou"),
               "regression": ("intersection", "union", "enclosing")}


class _SearchedExpression:
    """Mixed into a loss module base: ``loss_fn`` is an expression of a space, parsed and compiled once."""

    MODE = ""

    def _compile(self, expression: str, space: str) -> None:
        self.space: SearchSpace = load_space(space)
        if self.space.mode != self.MODE:
            raise ExpressionError(f"{type(self).__name__} needs a search space in {self.MODE} mode, "
                                  f"but space '{self.space.name}' is in {self.space.mode} mode")
        node = parse(expression, self.space)
        self.expression = str(node)
        self.compiled = compile_loss(node, self.space.output)
        self.input_names = tuple(self.space.input_for(role).name for role in INPUT_ROLES[self.MODE])

    def loss_fn(self, *inputs: Tensor) -> Tensor:
        return self.compiled(**dict(zip(self.input_names, inputs)))

    def extra_repr(self) -> str:
        return (f"expression={self.expression!r}, space={self.space.name!r}, "
                f"loss_weight={self.loss_weight}, reduction={self.reduction!r}")


@MODELS.register_module()
class SearchedSoftmaxClsLoss(_SearchedExpression, SoftmaxClsLossBase):
    """A searched softmax classification loss (two-stage heads), per sample over C+1 logits.

    The searched tree sees X = logits (N x C+1), Y = one-hot label (background = C, the last
    column) and W = the detached IoU of each positive's prediction with its ground truth, 1 for
    background rows (1 everywhere when ``iou`` is not given).
    """

    MODE = "softmax"

    def __init__(self, expression: str, space: str = "cls_softmax", loss_weight: float = 1.0,
                 reduction: str = "mean"):
        super().__init__(loss_weight, reduction)
        self._compile(expression, space)


@MODELS.register_module()
class SearchedSigmoidClsLoss(_SearchedExpression, SigmoidClsLossBase):
    """A searched sigmoid classification loss (one-stage heads), element-wise over N x C logits.

    The tree sees X = logits, Y = one-hot label without a background column (background rows are
    all zero) and W = the detached IoU at the ground-truth entry of positives, 0 elsewhere (W = Y
    when ``iou`` is not given). The focal alpha weighting (``alpha`` for y = 1, ``1 - alpha`` for
    y = 0; ``alpha=None`` disables it) is applied outside the searched function.
    """

    MODE = "sigmoid"

    def __init__(self, expression: str, space: str = "cls_sigmoid", use_sigmoid: bool = True,
                 alpha: float | None = 0.25, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__(use_sigmoid, alpha, loss_weight, reduction)
        self._compile(expression, space)


@MODELS.register_module()
class SearchedIoULoss(_SearchedExpression, IoULossBase):
    """A searched box regression loss on decoded x1y1x2y2 boxes, one value per box.

    The tree sees the intersection I, union U and enclosing area E of each predicted and
    ground-truth box (``autoloss.loss.samples.box_areas``: eps 1e-7 added to U and E).
    Weights follow ``GIoULoss``: an (N, 4) weight is averaged over the last axis, and a weight
    with no positive entry returns ``(pred * weight).sum()``.
    """

    MODE = "regression"

    def __init__(self, expression: str, space: str = "reg", loss_weight: float = 1.0,
                 reduction: str = "mean"):
        super().__init__(loss_weight, reduction)
        self._compile(expression, space)
