"""Searched losses as MMDetection loss modules, configured by a genotype string.

Importing this module registers three modules in ``mmdet.registry.MODELS``:

* ``SearchedSoftmaxClsLoss`` (space ``cls_softmax``): drop-in for ``CrossEntropyLoss(use_sigmoid=False)``;
* ``SearchedSigmoidClsLoss`` (space ``cls_sigmoid``): drop-in for ``FocalLoss(use_sigmoid=True)``;
* ``SearchedIoULoss`` (space ``reg``): drop-in for ``GIoULoss`` / ``IoULoss`` on decoded boxes.

Each takes ``expression`` (a prefix expression or a named ready loss of the space, e.g. ``'CE'``,
``'FL'``, ``'GIoU'``) and ``space`` (a bundled space name or a YAML path). The expression is parsed
and compiled once at construction; a bad one raises :class:`autoloss.errors.ExpressionError`.
Forward signatures, weights, ``avg_factor`` and reductions follow MMDetection's conventions, and
the optional ``iou`` keyword feeds the space's IoU input (detached).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.registry import MODELS
from torch import Tensor, nn

from autoloss.errors import ExpressionError
from autoloss.loss.compile import compile_loss
from autoloss.loss.expression import parse
from autoloss.loss.samples import box_areas
from autoloss.loss.space import SearchSpace, load_space

REDUCTIONS = ("none", "mean", "sum")


class _SearchedLoss(nn.Module):
    """Shared set-up: load the space, parse and compile the expression once."""

    MODE = ""

    def __init__(self, expression: str, space: str, loss_weight: float, reduction: str):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        self.space: SearchSpace = load_space(space)
        if self.space.mode != self.MODE:
            raise ExpressionError(f"{type(self).__name__} needs a search space in {self.MODE} mode, "
                                  f"but space '{self.space.name}' is in {self.space.mode} mode")
        node = parse(expression, self.space)
        self.expression = str(node)
        self.loss_fn = compile_loss(node, self.space.output)
        self.loss_weight = loss_weight
        self.reduction = reduction

    def _reduction(self, override: str | None) -> str:
        assert override in (None, "none", "mean", "sum")
        return override if override else self.reduction

    def _reduce(self, loss: Tensor, weight: Tensor | None, reduction: str,
                avg_factor: float | None) -> Tensor:
        if loss.numel() == 0 and reduction == "mean" and avg_factor is None:
            reduction = "sum"  # an empty batch: a zero that keeps the graph, not mean()'s nan
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)

    def extra_repr(self) -> str:
        return (f"expression={self.expression!r}, space={self.space.name!r}, "
                f"loss_weight={self.loss_weight}, reduction={self.reduction!r}")


@MODELS.register_module()
class SearchedSoftmaxClsLoss(_SearchedLoss):
    """A searched softmax classification loss (two-stage heads), per sample over C+1 logits.

    The searched tree sees X = logits (N x C+1), Y = one-hot label (background = C, the last
    column) and W = the detached IoU of each positive's prediction with its ground truth, 1 for
    background rows (1 everywhere when ``iou`` is not given).
    """

    MODE = "softmax"

    def __init__(self, expression: str, space: str = "cls_softmax", loss_weight: float = 1.0,
                 reduction: str = "mean"):
        super().__init__(expression, space, loss_weight, reduction)
        self.use_sigmoid = False

    def forward(self, cls_score: Tensor, label: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None,
                iou: Tensor | None = None, **kwargs) -> Tensor:
        reduction = self._reduction(reduction_override)
        dtype, num_columns = cls_score.dtype, cls_score.size(-1)
        target = F.one_hot(label.long(), num_columns).to(dtype)
        if iou is None:
            w = cls_score.new_ones(cls_score.size(0), 1)
        else:
            iou = iou.detach().reshape(-1, 1).to(dtype)
            positive = (label < num_columns - 1).reshape(-1, 1)
            w = torch.where(positive, iou, torch.ones_like(iou))
        inputs = {self.space.input_for("logits").name: cls_score,
                  self.space.input_for("target").name: target,
                  self.space.input_for("iou").name: w}
        loss = self.loss_fn(**inputs).reshape(-1)
        if weight is not None:
            weight = weight.to(dtype)
        return self._reduce(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class SearchedSigmoidClsLoss(_SearchedLoss):
    """A searched sigmoid classification loss (one-stage heads), element-wise over N x C logits.

    The tree sees X = logits, Y = one-hot label without a background column (background rows are
    all zero) and W = the detached IoU at the ground-truth entry of positives, 0 elsewhere (W = Y
    when ``iou`` is not given). The focal alpha weighting (``alpha`` for y = 1, ``1 - alpha`` for
    y = 0; ``alpha=None`` disables it) is applied outside the searched function.
    """

    MODE = "sigmoid"

    def __init__(self, expression: str, space: str = "cls_sigmoid", use_sigmoid: bool = True,
                 alpha: float | None = 0.25, loss_weight: float = 1.0, reduction: str = "mean"):
        if not use_sigmoid:
            raise ValueError("SearchedSigmoidClsLoss only supports use_sigmoid=True")
        super().__init__(expression, space, loss_weight, reduction)
        self.use_sigmoid = True
        self.alpha = alpha

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None,
                iou: Tensor | None = None, **kwargs) -> Tensor:
        reduction = self._reduction(reduction_override)
        dtype, num_classes = pred.dtype, pred.size(-1)
        if target.dim() == pred.dim():  # already one-hot, as FocalLoss accepts
            y = target.to(dtype)
        else:
            y = F.one_hot(target.long(), num_classes + 1)[:, :num_classes].to(dtype)
        w = y if iou is None else y * iou.detach().reshape(-1, 1).to(dtype)
        inputs = {self.space.input_for("logits").name: pred,
                  self.space.input_for("target").name: y,
                  self.space.input_for("iou").name: w}
        loss = self.loss_fn(**inputs)
        if self.alpha is not None:
            loss = loss * (self.alpha * y + (1 - self.alpha) * (1 - y))
        if weight is not None:
            weight = weight.to(dtype)
            if weight.shape != loss.shape:
                weight = weight.view(-1, 1) if weight.size(0) == loss.size(0) else weight.view(loss.size(0), -1)
        return self._reduce(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class SearchedIoULoss(_SearchedLoss):
    """A searched box regression loss on decoded x1y1x2y2 boxes, one value per box.

    The tree sees the intersection I, union U and enclosing area E of each predicted and
    ground-truth box (``autoloss.loss.samples.box_areas``: eps 1e-7 added to U and E).
    Weights follow ``GIoULoss``: an (N, 4) weight is averaged over the last axis, and a weight
    with no positive entry returns ``(pred * weight).sum()``.
    """

    MODE = "regression"

    def __init__(self, expression: str, space: str = "reg", loss_weight: float = 1.0,
                 reduction: str = "mean"):
        super().__init__(expression, space, loss_weight, reduction)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None,
                **kwargs) -> Tensor:
        if weight is not None and not torch.any(weight > 0):
            if pred.dim() == weight.dim() + 1:
                weight = weight.unsqueeze(1)
            return (pred * weight).sum()  # 0, connected to the graph
        reduction = self._reduction(reduction_override)
        if weight is not None and weight.dim() > 1:
            assert weight.shape == pred.shape
            weight = weight.mean(-1)
        i, u, e = box_areas(pred, target.to(pred.dtype))
        inputs = {self.space.input_for("intersection").name: i[:, None],
                  self.space.input_for("union").name: u[:, None],
                  self.space.input_for("enclosing").name: e[:, None]}
        loss = self.loss_fn(**inputs).reshape(-1)
        if weight is not None:
            weight = weight.to(pred.dtype)
        return self._reduce(loss, weight, reduction, avg_factor)
