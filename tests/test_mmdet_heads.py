"""The IoU-aware heads: one training step with searched IoU losses, no-positive batches, the iou
reaching the loss, and exact equality with the stock heads under standard losses."""

from __future__ import annotations

import copy
import math

import pytest
import torch

pytest.importorskip("mmdet")

from mmengine.structures import InstanceData

from autoloss.detection.coco import find_coco_splits
from autoloss.errors import UserError
from autoloss.detection.mmdet.detectors import build_detector, load_detector_config, searched_head
from autoloss.detection.mmdet.heads import IoUAwareFCOSHead, IoUAwareShared2FCBBoxHead, loss_accepts_iou

torch.set_num_threads(2)

CLS_LOSS = {
    "faster_rcnn_small": {"type": "SearchedSoftmaxClsLoss", "expression": "CEI"},
    "fcos_small": {"type": "SearchedSigmoidClsLoss", "expression": "FLI", "use_sigmoid": True},
}
REG_LOSS = {"type": "SearchedIoULoss", "expression": "GIoU"}
NAMES = ["faster_rcnn_small", "fcos_small"]


@pytest.fixture(scope="module")
def splits(synthetic_coco):
    return find_coco_splits(synthetic_coco)


@pytest.fixture(scope="module")
def batches(splits, tmp_path_factory):
    """One raw training batch (2 images) per detector: the pipelines of both configs agree."""
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    register_all_modules()
    out = {}
    for name in NAMES:
        cfg = load_detector_config(name, splits, tmp_path_factory.mktemp("w"), batch_size=2)
        cfg.train_dataloader.num_workers = 0
        cfg.train_dataloader.persistent_workers = False
        loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
        out[name] = next(iter(loader))
    return out


def _model(name, splits, tmp_path, seed=0, **kwargs):
    cfg = load_detector_config(name, splits, tmp_path, batch_size=2, **kwargs)
    torch.manual_seed(seed)
    model = build_detector(cfg)
    model.train()
    return cfg, model


def _head(model):
    return model.roi_head.bbox_head if hasattr(model, "roi_head") else model.bbox_head


def _without_gt(data):
    data = dict(data)
    samples = copy.deepcopy(data["data_samples"])
    for sample in samples:
        empty = InstanceData()
        empty.bboxes = torch.zeros(0, 4)
        empty.labels = torch.zeros(0, dtype=torch.long)
        sample.gt_instances = empty
    data["data_samples"] = samples
    return data


def _capture_iou(head):
    """Wrap ``head.loss_cls.forward`` (keeping an explicit ``iou`` parameter) to record the iou."""
    captured = []
    original = head.loss_cls.forward

    def forward(*args, iou=None, **kwargs):
        captured.append((args[0].shape[0], args[1].clone(), None if iou is None else iou.clone()))
        return original(*args, iou=iou, **kwargs)

    head.loss_cls.forward = forward
    assert loss_accepts_iou(head.loss_cls)
    return captured


def _step(model, data, seed=0):
    torch.manual_seed(seed)  # the RoI sampler draws at random
    model.zero_grad()
    losses = model(**data, mode="loss")
    loss, log_vars = model.parse_losses(losses)
    return losses, loss, log_vars


def _check_finite_with_grads(model, loss, log_vars):
    assert math.isfinite(loss.item())
    assert all(math.isfinite(float(torch.as_tensor(v).detach())) for v in log_vars.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_config_option_swaps_head_types(splits, tmp_path):
    for name, kind in (("faster_rcnn_small", "IoUAwareShared2FCBBoxHead"), ("fcos_small", "IoUAwareFCOSHead")):
        cfg = load_detector_config(name, splits, tmp_path, iou_aware_heads=True)
        assert searched_head(cfg).type == kind
        assert searched_head(load_detector_config(name, splits, tmp_path)).type != kind
    with pytest.raises(ValueError, match="centerness_target"):
        IoUAwareFCOSHead(num_classes=2, in_channels=8, centerness_target="nope")


def test_config_option_rejects_other_heads(splits, tmp_path):
    from autoloss.detection.mmdet.detectors import use_iou_aware_heads
    from mmengine.config import ConfigDict

    with pytest.raises(UserError, match="no IoU-aware version"):
        use_iou_aware_heads(ConfigDict(type="RetinaHead"))


@pytest.mark.parametrize("name", NAMES)
def test_iou_aware_step_with_searched_losses(name, splits, batches, tmp_path):
    cfg, model = _model(name, splits, tmp_path, cls_loss=CLS_LOSS[name], reg_loss=REG_LOSS,
                        iou_aware_heads=True)
    head = _head(model)
    assert isinstance(head, IoUAwareShared2FCBBoxHead if name.startswith("faster") else IoUAwareFCOSHead)
    captured = _capture_iou(head)
    data = model.data_preprocessor(batches[name], True)

    losses, loss, log_vars = _step(model, data)
    assert len(captured) == 1
    n, labels, iou = captured[0]
    assert iou is not None and iou.shape == (n,) and not iou.requires_grad
    assert torch.all((iou >= 0) & (iou <= 1))
    pos = (labels >= 0) & (labels < head.num_classes)
    assert pos.any()
    if name.startswith("faster"):
        assert torch.all(iou[~pos] == 1)  # background: 1 (the softmax loss uses 1 there anyway)
        # gt boxes are among the RoIs (add_gt_as_proposals) and the initial deltas are near 0
        assert iou[pos].max() > 0.5
    else:
        assert torch.all(iou[~pos] == 0)
        assert iou[pos].max() > 0
    _check_finite_with_grads(model, loss, log_vars)

    # a batch without any ground truth: no positive sample anywhere
    captured.clear()
    losses, loss, log_vars = _step(model, _without_gt(data))
    n, labels, iou = captured[0]
    assert not ((labels >= 0) & (labels < head.num_classes)).any()
    assert iou.shape == (n,) and torch.all(iou == (1 if name.startswith("faster") else 0))
    assert float(losses["loss_bbox"].detach()) == 0.0
    _check_finite_with_grads(model, loss, log_vars)


def test_fcos_iou_centerness_target_is_used(splits, batches, tmp_path):
    _, stock = _model("fcos_small", splits, tmp_path)
    _, aware = _model("fcos_small", splits, tmp_path, iou_aware_heads=True)
    aware.load_state_dict(stock.state_dict())
    data = stock.data_preprocessor(batches["fcos_small"], True)
    a, _, _ = _step(stock, data)
    b, _, _ = _step(aware, data)
    assert torch.equal(a["loss_cls"], b["loss_cls"]) and torch.equal(a["loss_bbox"], b["loss_bbox"])
    assert not torch.equal(a["loss_centerness"], b["loss_centerness"])  # IoU, not centerness


@pytest.mark.parametrize("name", NAMES)
def test_equal_to_stock_heads_with_standard_losses(name, splits, batches, tmp_path):
    _, stock = _model(name, splits, tmp_path, seed=1)
    cfg, aware = _model(name, splits, tmp_path, seed=2, iou_aware_heads=True)
    if name == "fcos_small":
        assert searched_head(cfg).loss_cls.type == "FocalLoss"
        aware.bbox_head.centerness_target_type = "centerness"
    else:
        assert searched_head(cfg).loss_cls.type == "CrossEntropyLoss"
    assert not loss_accepts_iou(_head(aware).loss_cls)
    aware.load_state_dict(stock.state_dict())
    data = stock.data_preprocessor(batches[name], True)
    for batch in (data, _without_gt(data)):
        a, loss_a, _ = _step(stock, batch)
        b, loss_b, _ = _step(aware, batch)
        assert list(a) == list(b)
        for key in a:
            va, vb = a[key], b[key]
            if isinstance(va, (list, tuple)):
                assert all(torch.equal(x, y) for x, y in zip(va, vb))
            else:
                assert torch.equal(va, vb), key
        loss_a.backward()
        loss_b.backward()
        for (ka, pa), (kb, pb) in zip(stock.named_parameters(), aware.named_parameters()):
            assert ka == kb
            assert (pa.grad is None) == (pb.grad is None)
            if pa.grad is not None:
                assert torch.equal(pa.grad, pb.grad), ka


@pytest.mark.parametrize("agnostic,decoded", [(False, False), (True, False), (False, True), (True, True)])
def test_rcnn_head_iou_values(agnostic, decoded):
    """The iou handed over is that of the gt-class (or agnostic) decoded box with the gt box."""
    from mmdet.structures.bbox import bbox_overlaps

    head = IoUAwareShared2FCBBoxHead(
        in_channels=4, fc_out_channels=8, roi_feat_size=2, num_classes=3,
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
        reg_class_agnostic=agnostic, reg_decoded_bbox=decoded,
        loss_cls=dict(type="SearchedSoftmaxClsLoss", expression="CEI"),
        loss_bbox=dict(type="SearchedIoULoss", expression="GIoU") if decoded else dict(type="L1Loss"))
    captured = _capture_iou(head)
    torch.manual_seed(0)
    xy = torch.rand(6, 2) * 50
    rois_xyxy = torch.cat([xy, xy + 10 + torch.rand(6, 2) * 20], 1)
    rois = torch.cat([torch.zeros(6, 1), rois_xyxy], 1)
    gt = rois_xyxy + torch.randn(6, 4) * 2
    pred_boxes = rois_xyxy + torch.randn(6, 4) * 3
    labels = torch.tensor([0, 2, 1, 3, 3, 2])  # 3 = background
    pos = labels < 3
    deltas = head.bbox_coder.encode(rois_xyxy, pred_boxes)
    if agnostic:
        bbox_pred = deltas
    else:  # the gt-class column holds the prediction, the others noise
        bbox_pred = torch.randn(6, 3, 4)
        bbox_pred[pos, labels[pos]] = deltas[pos]
        bbox_pred = bbox_pred.reshape(6, 12)
    targets = gt if decoded else head.bbox_coder.encode(rois_xyxy, gt)
    targets = torch.where(pos[:, None], targets, torch.zeros_like(targets))
    cls_score = torch.randn(6, 4, requires_grad=True)
    losses = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(6), targets,
                       pos[:, None].float().expand(6, 4))
    _, _, iou = captured[0]
    expected = bbox_overlaps(pred_boxes, gt, is_aligned=True)
    assert torch.allclose(iou[pos], expected[pos], atol=1e-4)
    assert torch.all(iou[~pos] == 1)
    assert torch.isfinite(losses["loss_cls"]) and torch.isfinite(losses["loss_bbox"])
    # the iou changes the searched loss: W = iou for positives
    plain = head.loss_cls(cls_score, labels, torch.ones(6), avg_factor=6.0)
    assert not torch.allclose(plain, losses["loss_cls"])
