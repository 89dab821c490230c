"""IoU-aware MMDetection heads: hand the detached IoU of each positive's prediction to the cls loss.

Importing this module registers two heads in ``mmdet.registry.MODELS``:

* ``IoUAwareShared2FCBBoxHead`` (two-stage RoI head, drop-in for ``Shared2FCBBoxHead``);
* ``IoUAwareFCOSHead`` (one-stage head, drop-in for ``FCOSHead``).

When the head's ``loss_cls`` accepts an ``iou`` keyword (a parameter named ``iou`` in the signature
of its ``forward``, as :class:`autoloss.detection.mmdet.losses.SearchedSoftmaxClsLoss` and
``SearchedSigmoidClsLoss`` have), the head computes, for every positive sample, the IoU (aligned
``bbox_overlaps``, detached, in [0, 1]) between its decoded predicted box and its ground-truth box,
and passes ``iou=`` (one value per sample) to ``loss_cls``. With a loss without that keyword
(``CrossEntropyLoss``, ``FocalLoss``, ...) the heads compute exactly what the stock heads compute.
"""

from __future__ import annotations

import inspect
from typing import Dict, List, Optional

import torch
from mmdet.models.dense_heads.fcos_head import FCOSHead
from mmdet.models.losses import accuracy
from mmdet.models.roi_heads.bbox_heads.convfc_bbox_head import Shared2FCBBoxHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps, get_box_tensor
from mmdet.utils import InstanceList, OptInstanceList, reduce_mean
from torch import Tensor

CENTERNESS_TARGETS = ("iou", "centerness")


def loss_accepts_iou(loss) -> bool:
    """Whether ``loss.forward`` has a parameter named ``iou`` (``**kwargs`` does not count)."""
    forward = getattr(loss, "forward", None)
    if forward is None:
        return False
    try:
        return "iou" in inspect.signature(forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def aligned_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Detached aligned IoU of x1y1x2y2 boxes ``pred`` and ``target`` (both (N, 4)), in [0, 1]."""
    if pred.numel() == 0:
        return pred.new_zeros(pred.size(0))
    with torch.no_grad():
        iou = bbox_overlaps(pred.detach().float(), target.detach().float(), mode="iou", is_aligned=True)
    return iou.clamp(0, 1).to(pred.dtype)


@MODELS.register_module()
class IoUAwareShared2FCBBoxHead(Shared2FCBBoxHead):
    """``Shared2FCBBoxHead`` that passes ``iou=`` (N,) to ``loss_cls`` when the loss accepts it.

    For each positive RoI the IoU is that of the decoded predicted box of its ground-truth class
    (class-specific regression: the gt-class column; class-agnostic: the single one) with its
    ground-truth box (``bbox_targets`` directly when ``reg_decoded_bbox``, else decoded from the RoI).
    Negative (background) RoIs get the value 1; the searched softmax loss uses W = 1 for background
    anyway. Without a bbox prediction all values are 1. The classification loss is otherwise
    computed as in ``BBoxHead.loss``; the regression loss is ``BBoxHead.loss``'s own.
    """

    def _positive_iou(self, bbox_pred: Tensor | None, rois: Tensor, labels: Tensor,
                      bbox_targets: Tensor) -> Tensor:
        iou = labels.new_ones(labels.size(0), dtype=rois.dtype)
        if bbox_pred is None:
            return iou
        pos = (labels >= 0) & (labels < self.num_classes)
        if not pos.any():
            return iou
        with torch.no_grad():
            pred = bbox_pred.detach()
            if self.reg_class_agnostic:
                pos_pred = pred.view(pred.size(0), -1)[pos]
            else:
                pos_pred = pred.view(pred.size(0), self.num_classes, -1)[pos, labels[pos]]
            pos_rois = rois[pos, 1:]
            pos_boxes = get_box_tensor(self.bbox_coder.decode(pos_rois, pos_pred))
            pos_targets = bbox_targets[pos]
            if not self.reg_decoded_bbox:
                pos_targets = get_box_tensor(self.bbox_coder.decode(pos_rois, pos_targets))
            iou[pos] = aligned_iou(pos_boxes, pos_targets).to(iou.dtype)
        return iou

    def loss(self, cls_score: Tensor, bbox_pred: Tensor, rois: Tensor, labels: Tensor,
             label_weights: Tensor, bbox_targets: Tensor, bbox_weights: Tensor,
             reduction_override: Optional[str] = None) -> dict:
        losses = dict()
        if cls_score is not None:
            avg_factor = max(torch.sum(label_weights > 0).float().item(), 1.)
            if cls_score.numel() > 0:
                kwargs = {}
                if loss_accepts_iou(self.loss_cls):
                    kwargs["iou"] = self._positive_iou(bbox_pred, rois, labels, bbox_targets)
                loss_cls_ = self.loss_cls(
                    cls_score, labels, label_weights, avg_factor=avg_factor,
                    reduction_override=reduction_override, **kwargs)
                if isinstance(loss_cls_, dict):
                    losses.update(loss_cls_)
                else:
                    losses['loss_cls'] = loss_cls_
                if self.custom_activation:
                    losses.update(self.loss_cls.get_accuracy(cls_score, labels))
                else:
                    losses['acc'] = accuracy(cls_score, labels)
        # the regression part, unchanged: BBoxHead.loss without its classification branch
        losses.update(super().loss(None, bbox_pred, rois, labels, label_weights, bbox_targets,
                                   bbox_weights, reduction_override=reduction_override))
        return losses


@MODELS.register_module()
class IoUAwareFCOSHead(FCOSHead):
    """``FCOSHead`` with IoU-aware classification and (optionally) an IoU centerness target.

    For positive points, the IoU of the decoded predicted box with the decoded target box (the
    pair mmdet decodes for its GIoU loss) is computed, detached. When ``loss_cls`` accepts an
    ``iou`` keyword it receives ``iou=`` over all flattened points (IoU for positives, 0 for
    negatives). With ``centerness_target='iou'`` (default, as CSE-Autoloss does for FCOS) the
    centerness branch regresses that IoU instead of the geometric centerness (the
    ``CrossEntropyLoss(use_sigmoid=True)`` centerness loss accepts soft targets); the box loss
    keeps the geometric centerness as its weight, as in ``FCOSHead``. With
    ``centerness_target='centerness'`` and a loss without ``iou`` this is exactly ``FCOSHead``.
    """

    def __init__(self, *args, centerness_target: str = "iou", **kwargs):
        if centerness_target not in CENTERNESS_TARGETS:
            raise ValueError(f"centerness_target must be one of {', '.join(CENTERNESS_TARGETS)}, "
                             f"got {centerness_target!r}")
        super().__init__(*args, **kwargs)
        self.centerness_target_type = centerness_target

    def loss_by_feat(self, cls_scores: List[Tensor], bbox_preds: List[Tensor],
                     centernesses: List[Tensor], batch_gt_instances: InstanceList,
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore: OptInstanceList = None) -> Dict[str, Tensor]:
        assert len(cls_scores) == len(bbox_preds) == len(centernesses)
        featmap_sizes = [featmap.size()[-2:] for featmap in cls_scores]
        all_level_points = self.prior_generator.grid_priors(
            featmap_sizes, dtype=bbox_preds[0].dtype, device=bbox_preds[0].device)
        labels, bbox_targets = self.get_targets(all_level_points, batch_gt_instances)

        num_imgs = cls_scores[0].size(0)
        flatten_cls_scores = torch.cat([
            cls_score.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)
            for cls_score in cls_scores])
        flatten_bbox_preds = torch.cat([
            bbox_pred.permute(0, 2, 3, 1).reshape(-1, 4) for bbox_pred in bbox_preds])
        flatten_centerness = torch.cat([
            centerness.permute(0, 2, 3, 1).reshape(-1) for centerness in centernesses])
        flatten_labels = torch.cat(labels)
        flatten_bbox_targets = torch.cat(bbox_targets)
        flatten_points = torch.cat([points.repeat(num_imgs, 1) for points in all_level_points])

        losses = dict()
        bg_class_ind = self.num_classes
        pos_inds = ((flatten_labels >= 0)
                    & (flatten_labels < bg_class_ind)).nonzero().reshape(-1)
        num_pos = torch.tensor(len(pos_inds), dtype=torch.float, device=bbox_preds[0].device)
        num_pos = max(reduce_mean(num_pos), 1.0)

        pos_bbox_preds = flatten_bbox_preds[pos_inds]
        pos_centerness = flatten_centerness[pos_inds]
        pos_bbox_targets = flatten_bbox_targets[pos_inds]
        pos_centerness_targets = self.centerness_target(pos_bbox_targets)
        centerness_denorm = max(reduce_mean(pos_centerness_targets.sum().detach()), 1e-6)

        if len(pos_inds) > 0:
            pos_points = flatten_points[pos_inds]
            pos_decoded_bbox_preds = self.bbox_coder.decode(pos_points, pos_bbox_preds)
            pos_decoded_target_preds = self.bbox_coder.decode(pos_points, pos_bbox_targets)
            pos_iou = aligned_iou(pos_decoded_bbox_preds, pos_decoded_target_preds)
        else:
            pos_iou = pos_bbox_preds.new_zeros(0)

        cls_kwargs = {}
        if loss_accepts_iou(self.loss_cls):
            flatten_iou = flatten_cls_scores.new_zeros(flatten_cls_scores.size(0))
            flatten_iou[pos_inds] = pos_iou.to(flatten_iou.dtype)
            cls_kwargs["iou"] = flatten_iou
        loss_cls = self.loss_cls(flatten_cls_scores, flatten_labels, avg_factor=num_pos,
                                 **cls_kwargs)
        if getattr(self.loss_cls, 'custom_accuracy', False):
            losses.update(self.loss_cls.get_accuracy(flatten_cls_scores, flatten_labels))

        if len(pos_inds) > 0:
            loss_bbox = self.loss_bbox(
                pos_decoded_bbox_preds, pos_decoded_target_preds,
                weight=pos_centerness_targets, avg_factor=centerness_denorm)
            centerness_targets = (pos_iou if self.centerness_target_type == "iou"
                                  else pos_centerness_targets)
            loss_centerness = self.loss_centerness(
                pos_centerness, centerness_targets, avg_factor=num_pos)
        else:
            loss_bbox = pos_bbox_preds.sum()
            loss_centerness = pos_centerness.sum()

        losses['loss_cls'] = loss_cls
        losses['loss_bbox'] = loss_bbox
        losses['loss_centerness'] = loss_centerness
        return losses
