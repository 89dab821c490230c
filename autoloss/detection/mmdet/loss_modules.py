"""MMDetection loss modules around a loss function ``loss_fn``: mmdet's conventions, written once.

Arguments, inputs, weights, reductions and edge cases of the three kinds of searched loss live
here: the Searched* losses of :mod:`autoloss.detection.mmdet.losses` subclass these bases with a compiled
expression as ``loss_fn``, and :mod:`autoloss.detection.export.module` copies the definitions below, as they
are written here, into every exported module that needs them (with a copy of
:func:`autoloss.loss.samples.box_areas`), whose subclasses set a generated torch function as
``loss_fn``. So they use only torch and mmdet, and only subclasses are registered in mmdet's MODELS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor, nn

from autoloss.loss.samples import box_areas  # an exported module carries a copy

REDUCTIONS = ("none", "mean", "sum")


def per_sample(loss: Tensor, *inputs: Tensor) -> Tensor:
    """A loss that reads no input (a constant), broadcast to one value per sample (B x 1)."""
    shape = torch.broadcast_shapes(*(t.shape for t in inputs), loss.shape)
    return torch.broadcast_to(loss, (shape[0], 1) if len(shape) == 2 else shape)


def per_element(loss: Tensor, *inputs: Tensor) -> Tensor:
    """A loss that reads no input (a constant), broadcast to one value per logit (B x C)."""
    return torch.broadcast_to(loss, torch.broadcast_shapes(*(t.shape for t in inputs), loss.shape))


class LossBase(nn.Module):
    """Shared by every loss: the loss weight, the reduction and mmdet's weighting."""

    expression = ""  # the tree of loss_fn in prefix form, for reference

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        self.loss_weight = loss_weight
        self.reduction = reduction

    @staticmethod
    def loss_fn(*inputs: Tensor) -> Tensor:  # set by each subclass
        raise NotImplementedError

    def _reduction(self, override: str | None) -> str:
        assert override in (None, "none", "mean", "sum")
        return override if override else self.reduction

    def _reduce(self, loss: Tensor, weight: Tensor | None, reduction: str,
                avg_factor: float | None) -> Tensor:
        if loss.numel() == 0 and reduction == "mean" and avg_factor is None:
            reduction = "sum"  # an empty batch: a zero that keeps the graph, not mean()'s nan
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)

    def extra_repr(self) -> str:
        return f"expression={self.expression!r}, loss_weight={self.loss_weight}, reduction={self.reduction!r}"


class SoftmaxClsLossBase(LossBase):
    """A softmax classification loss for two-stage heads, per sample over C+1 logits.

    ``loss_fn(X, Y, W)`` sees X = logits (N x C+1), Y = one-hot label (background = C, the last
    column) and W = the detached IoU of each positive's prediction with its ground truth, 1 for
    background rows (1 everywhere when ``iou`` is not given).
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__(loss_weight, reduction)
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
        loss = self.loss_fn(cls_score, target, w).reshape(-1)
        if weight is not None:
            weight = weight.to(dtype)
        return self._reduce(loss, weight, reduction, avg_factor)


class SigmoidClsLossBase(LossBase):
    """A sigmoid classification loss for one-stage heads, element-wise over N x C logits.

    ``loss_fn(X, Y, W)`` sees X = logits, Y = one-hot label without a background column
    (background rows are all zero) and W = the detached IoU at the ground-truth entry of positives,
    0 elsewhere (W = Y when ``iou`` is not given). The focal alpha weighting (``alpha`` for y = 1,
    ``1 - alpha`` for y = 0; ``alpha=None`` disables it) is applied outside the searched function.
    """

    def __init__(self, use_sigmoid: bool = True, alpha: float | None = 0.25, loss_weight: float = 1.0,
                 reduction: str = "mean"):
        if not use_sigmoid:
            raise ValueError(f"{type(self).__name__} only supports use_sigmoid=True")
        super().__init__(loss_weight, reduction)
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
        loss = self.loss_fn(pred, y, w)
        if self.alpha is not None:
            loss = loss * (self.alpha * y + (1 - self.alpha) * (1 - y))
        if weight is not None:
            weight = weight.to(dtype)
            if weight.shape != loss.shape:
                weight = weight.view(-1, 1) if weight.size(0) == loss.size(0) else weight.view(loss.size(0), -1)
        return self._reduce(loss, weight, reduction, avg_factor)


class IoULossBase(LossBase):
    """A box regression loss on decoded x1y1x2y2 boxes, one value per box.

    ``loss_fn(I, U, E)`` sees the intersection, union and enclosing area of each predicted and
    ground-truth box (``box_areas``: EPS added to U and E). Weights follow ``GIoULoss``: an (N, 4)
    weight is averaged over the last axis, and a weight with no positive entry returns
    ``(pred * weight).sum()``.
    """

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
        loss = self.loss_fn(i[:, None], u[:, None], e[:, None]).reshape(-1)
        if weight is not None:
            weight = weight.to(pred.dtype)
        return self._reduce(loss, weight, reduction, avg_factor)

