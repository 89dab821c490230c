"""The bundled MMDetection proxy detectors: configs load, fill in, build and train one step on CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")

from mmengine.config import Config

from autoloss.detection.coco import find_coco_splits
from autoloss.detection.synthetic import make_synthetic_coco
from autoloss.errors import UserError
from autoloss.detection.mmdet.detectors import (
    BUNDLED,
    build_detector,
    detector_config_path,
    detector_kind,
    load_detector_config,
)

torch.set_num_threads(2)

CLS_LOSS = {
    "faster_rcnn_small": {"type": "SearchedSoftmaxClsLoss", "expression": "CE"},
    "fcos_small": {"type": "SearchedSigmoidClsLoss", "expression": "FL", "use_sigmoid": True},
}
REG_LOSS = {"type": "SearchedIoULoss", "expression": "GIoU"}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_synthetic_coco(root, num_train=16, num_val=8, seed=0)
    return find_coco_splits(root)


def test_bundled_paths_exist():
    for name, filename in BUNDLED.items():
        path = detector_config_path(name)
        assert path.is_file() and path.name == filename


def test_unknown_name_and_missing_path(tmp_path):
    with pytest.raises(UserError, match="faster_rcnn_small"):
        detector_config_path("retinanet")
    with pytest.raises(UserError, match="not found"):
        detector_config_path(tmp_path / "nope.py")


@pytest.mark.parametrize("name,kind", [("faster_rcnn", "two_stage"), ("fcos", "one_stage")])
def test_full_configs_load(name, kind):
    cfg = Config.fromfile(str(detector_config_path(name)))
    assert detector_kind(cfg) == kind
    assert cfg.model.backbone.depth == 50 and cfg.model.backbone.init_cfg is None
    assert cfg.default_scope == "mmdet"
    assert "_base_" not in cfg
    if kind == "two_stage":
        head = cfg.model.roi_head.bbox_head
        assert head.reg_decoded_bbox and head.loss_bbox == {"type": "GIoULoss", "loss_weight": 10.0}
    else:
        head = cfg.model.bbox_head
        assert head.center_sampling and head.norm_on_bbox and head.centerness_on_reg
        assert head.loss_bbox.type == "GIoULoss" and head.loss_cls.type == "FocalLoss"


def test_full_configs_fill_in(splits, tmp_path):
    cfg = load_detector_config("faster_rcnn", splits, tmp_path, max_iters=300, batch_size=2,
                               cls_loss={"type": "SearchedSoftmaxClsLoss", "expression": "CE"},
                               reg_loss=REG_LOSS)
    head = cfg.model.roi_head.bbox_head
    assert head.num_classes == 4 and head.loss_bbox.loss_weight == 10.0  # kept from GIoULoss
    assert cfg.train_cfg.max_iters == 300 and cfg.train_cfg.val_interval == 300
    assert cfg.param_scheduler[1].milestones == [200, 267] and cfg.param_scheduler[0].end == 75
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.train_dataloader.dataset.metainfo == {"classes": tuple(splits.categories)}
    assert cfg.val_evaluator.ann_file == str(Path(splits.val_ann).resolve())
    assert cfg.work_dir == str(tmp_path.resolve())


def test_short_schedule_keeps_a_working_warmup(splits, tmp_path):
    cfg = load_detector_config("fcos_small", splits, tmp_path, max_iters=6)
    warmup, steps = cfg.param_scheduler
    assert warmup.end == 2 and steps.end == 6 and steps.milestones == [4, 5]
    assert cfg.default_hooks.checkpoint.interval == 6


def test_searched_sigmoid_loss_gets_use_sigmoid(splits, tmp_path):
    cfg = load_detector_config("fcos_small", splits, tmp_path,
                               cls_loss={"type": "SearchedSigmoidClsLoss", "expression": "FL"})
    assert cfg.model.bbox_head.loss_cls.use_sigmoid is True
    assert cfg.model.bbox_head.loss_cls.loss_weight == 1.0


@pytest.mark.parametrize("name", ["faster_rcnn_small", "fcos_small"])
def test_small_detector_trains_one_step(name, splits, tmp_path):
    from mmengine.runner import Runner

    cfg = load_detector_config(name, splits, tmp_path, max_iters=10, batch_size=4,
                               cls_loss=CLS_LOSS[name], reg_loss=REG_LOSS)
    assert cfg.model.backbone.depth == 18 and cfg.model.backbone.init_cfg is None
    head = cfg.model.roi_head.bbox_head if name.startswith("faster") else cfg.model.bbox_head
    assert head.num_classes == len(splits.categories) == 4
    assert head.loss_cls.type == CLS_LOSS[name]["type"]
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False

    torch.manual_seed(0)
    model = build_detector(cfg)
    model.train()
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    batch = next(iter(loader))
    assert len(batch["inputs"]) == 4
    data = model.data_preprocessor(batch, True)
    assert max(data["inputs"].shape[-2:]) <= 128
    losses = model(**data, mode="loss")
    keys = set(losses)
    assert any(k.endswith("loss_cls") for k in keys) and any(k.endswith("loss_bbox") for k in keys)
    loss, log_vars = model.parse_losses(losses)
    assert math.isfinite(loss.item())
    assert all(math.isfinite(float(torch.as_tensor(v).detach())) for v in log_vars.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_r50_detectors_build():
    for name in ("faster_rcnn", "fcos"):
        model = build_detector(Config.fromfile(str(detector_config_path(name))))
        assert model.backbone.depth == 50


def test_config_without_head(tmp_path, splits):
    path = tmp_path / "bad.py"
    path.write_text("model = dict(type='FasterRCNN', backbone=dict(type='ResNet', depth=18))\n")
    with pytest.raises(UserError, match="has no roi_head.bbox_head or bbox_head with loss_cls"):
        load_detector_config(path, splits, tmp_path)
