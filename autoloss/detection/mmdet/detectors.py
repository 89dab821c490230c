"""The bundled MMDetection proxy detectors: find a config, fill it in for a dataset, build the model.

The configs live in ``detectors/`` at the top of the repository and ship inside the wheel as
``autoloss/detectors`` (see pyproject.toml). They are MMDetection 3.x configs
(``coco_detection.py`` holds the shared data, schedule and runtime; the others build on it by
relative ``_base_``), with placeholder dataset paths and class counts that
:func:`load_detector_config` fills in from a :class:`autoloss.detection.coco.CocoSplits`.

Importing this module imports :mod:`autoloss.detection.mmdet.losses`, so the ``Searched*`` loss modules are
registered without any ``custom_imports`` in the config.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config, ConfigDict

import autoloss.detection.mmdet.heads  # noqa: F401  (registers the IoUAware* heads in mmdet's MODELS)
import autoloss.detection.mmdet.losses  # noqa: F401  (registers the Searched* losses in mmdet's MODELS)
from autoloss.detection.coco import CocoSplits, find_coco_splits, require_min_side
from autoloss.errors import UserError

BUNDLED = {
    "faster_rcnn": "faster_rcnn_r50_fpn.py",
    "fcos": "fcos_r50_fpn.py",
    "faster_rcnn_small": "faster_rcnn_r18_small.py",
    "fcos_small": "fcos_r18_small.py",
}

TWO_STAGE, ONE_STAGE = "two_stage", "one_stage"

# stock head type -> its IoU-aware version (autoloss.detection.mmdet.heads), for load_detector_config(iou_aware_heads=True)
IOU_AWARE_HEADS = {
    "Shared2FCBBoxHead": "IoUAwareShared2FCBBoxHead",
    "FCOSHead": "IoUAwareFCOSHead",
}


def _bundled_dirs() -> list[Path]:
    """Where bundled configs may be: inside the installed package, then the source checkout."""
    dirs = []
    try:
        dirs.append(Path(str(resources.files("autoloss"))) / "detectors")
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - autoloss is importable here
        pass
    dirs.append(Path(__file__).resolve().parents[3] / "detectors")
    return dirs


def detector_config_path(name_or_path) -> Path:
    """The config file for a bundled detector name (see :data:`BUNDLED`) or an existing path."""
    name = str(name_or_path)
    if name in BUNDLED:
        for folder in _bundled_dirs():
            path = folder / BUNDLED[name]
            if path.is_file():
                return path
        raise UserError(f"bundled detector config {BUNDLED[name]!r} not found "
                        f"(looked in {', '.join(str(d) for d in _bundled_dirs())})")
    looks_like_path = isinstance(name_or_path, Path) or name.endswith(".py") or "/" in name or "\\" in name
    if not looks_like_path:
        raise UserError(f"unknown detector {name!r}; choose one of {', '.join(BUNDLED)} "
                        f"or give the path of an MMDetection config file")
    path = Path(name).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: detector config file not found")
    return path


def detector_kind(cfg) -> str:
    """``'two_stage'`` for a model with ``roi_head.bbox_head.loss_cls``, ``'one_stage'`` for one with
    ``bbox_head.loss_cls``; a :class:`UserError` otherwise."""
    model = cfg.get("model") if hasattr(cfg, "get") else None
    if isinstance(model, dict):
        roi_head = model.get("roi_head")
        if isinstance(roi_head, dict):
            bbox_head = roi_head.get("bbox_head")
            if isinstance(bbox_head, dict) and "loss_cls" in bbox_head:
                return TWO_STAGE
        bbox_head = model.get("bbox_head")
        if isinstance(bbox_head, dict) and "loss_cls" in bbox_head:
            return ONE_STAGE
    where = getattr(cfg, "filename", None) or "(in memory)"
    raise UserError(f"config {where} has no roi_head.bbox_head or bbox_head with loss_cls")


def searched_head(cfg) -> ConfigDict:
    """The head whose ``loss_cls`` / ``loss_bbox`` the searched losses replace."""
    if detector_kind(cfg) == TWO_STAGE:
        return cfg.model.roi_head.bbox_head
    return cfg.model.bbox_head


def _replace_loss(head, key: str, loss: dict) -> None:
    """Put ``loss`` in ``head[key]``; its ``loss_weight`` defaults to that of the loss it replaces."""
    if not isinstance(loss, dict) or "type" not in loss:
        raise UserError(f"{key} must be a dict with a 'type', got {loss!r}")
    new = dict(copy.deepcopy(loss))
    old = head.get(key) or {}
    if "loss_weight" not in new and "loss_weight" in old:
        new["loss_weight"] = old["loss_weight"]
    # one-stage heads read use_sigmoid from the config dict to size their class output
    if new["type"] == "SearchedSigmoidClsLoss":
        new.setdefault("use_sigmoid", True)
    head[key] = ConfigDict(new)


def _set_dataset(loader, ann_file: str, img_dir: str, classes: tuple) -> None:
    dataset = loader.dataset
    while "dataset" in dataset and dataset.get("type") in ("RepeatDataset", "ClassBalancedDataset"):
        dataset = dataset.dataset
    dataset.data_root = ""
    dataset.ann_file = str(Path(ann_file).resolve())
    dataset.data_prefix = {"img": str(Path(img_dir).resolve()) + "/"}
    dataset.metainfo = {"classes": classes}


def _rescale_schedule(cfg, max_iters: int) -> None:
    """Fit the iteration schedule (loop, val interval, LR milestones, warm-up, checkpoints) to max_iters."""
    old = int(cfg.train_cfg.get("max_iters", max_iters)) or max_iters
    cfg.train_cfg.max_iters = max_iters
    if "val_interval" in cfg.train_cfg:
        interval = int(cfg.train_cfg.val_interval)
        cfg.train_cfg.val_interval = max_iters if interval >= old else min(interval, max_iters)
    for sched in cfg.get("param_scheduler") or []:
        if sched.get("by_epoch", True):
            continue
        if sched.get("type") == "MultiStepLR":
            sched.milestones = [max(1, round(m * max_iters / old)) for m in sched.milestones]
            sched.end = max_iters
        elif sched.get("type") in ("LinearLR", "ConstantLR") and "end" in sched:
            # warm-up: at most a quarter of the run, but 2 steps at least (mmengine's LinearLR
            # with end - begin == 1 never leaves its start factor)
            sched.end = max(2, min(int(sched.end), max_iters // 4))
    checkpoint = (cfg.get("default_hooks") or {}).get("checkpoint")
    if checkpoint is not None and not checkpoint.get("by_epoch", True):
        checkpoint.interval = max_iters


def load_detector_config(name_or_path, data_splits: CocoSplits, work_dir, max_iters: int | None = None,
                         batch_size: int | None = None, cls_loss: dict | None = None,
                         reg_loss: dict | None = None, iou_aware_heads: bool = False) -> Config:
    """Read a detector config and fill it in for ``data_splits``.

    Sets the train/val/test datasets' (absolute) annotation files and image folders, their classes
    (``metainfo=dict(classes=...)``), the val/test CocoMetric annotation file, ``num_classes`` of
    the searched head, ``work_dir``, and optionally ``max_iters`` (rescaling the schedule) and the
    training batch size. ``cls_loss`` / ``reg_loss`` replace ``loss_cls`` / ``loss_bbox`` of the RoI
    bbox head (two-stage) or of the bbox head (one-stage); without a ``loss_weight`` they keep the
    replaced loss's weight. ``iou_aware_heads=True`` swaps the searched head's type for its
    IoU-aware version (:data:`IOU_AWARE_HEADS`; a :class:`UserError` for another type). Returns an :class:`mmengine.Config`.
    """
    path = detector_config_path(name_or_path)
    try:
        cfg = Config.fromfile(str(path))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001  (a syntax error, a missing _base_, ...)
        raise UserError(f"{path}: cannot read the detector config ({type(exc).__name__}: {exc})") from None
    if "model" not in cfg:
        raise UserError(f"config {path} has no model")
    kind = detector_kind(cfg)
    head = searched_head(cfg)

    classes = tuple(str(c) for c in data_splits.categories)
    if not classes:
        raise UserError("the dataset has no categories")
    head.num_classes = len(classes)

    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(key) is None or "dataset" not in cfg[key]:
            raise UserError(f"config {path} has no {key}.dataset")
    _set_dataset(cfg.train_dataloader, data_splits.train_ann, data_splits.train_img_dir, classes)
    # val and test share one dataloader dict in the bundled configs; give them separate copies
    cfg.test_dataloader = copy.deepcopy(cfg.test_dataloader)
    for key in ("val_dataloader", "test_dataloader"):
        _set_dataset(cfg[key], data_splits.val_ann, data_splits.val_img_dir, classes)
    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        if isinstance(evaluator, dict) and "ann_file" in evaluator:
            evaluator.ann_file = str(Path(data_splits.val_ann).resolve())

    if cls_loss is not None:
        _replace_loss(head, "loss_cls", cls_loss)
    if reg_loss is not None:
        _replace_loss(head, "loss_bbox", reg_loss)
        if kind == TWO_STAGE:
            head.reg_decoded_bbox = True  # IoU-type losses need decoded boxes

    if iou_aware_heads:
        use_iou_aware_heads(head)

    if max_iters is not None:
        if int(max_iters) < 1:
            raise UserError(f"max_iters must be at least 1, got {max_iters}")
        if cfg.get("train_cfg") is None or cfg.train_cfg.get("type") != "IterBasedTrainLoop":
            raise UserError(f"config {path}: max_iters needs train_cfg=dict(type='IterBasedTrainLoop', ...)")
        _rescale_schedule(cfg, int(max_iters))
    if batch_size is not None:
        if int(batch_size) < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        cfg.train_dataloader.batch_size = int(batch_size)

    cfg.work_dir = str(Path(work_dir).resolve())
    cfg.setdefault("default_scope", "mmdet")
    return cfg


@dataclass(frozen=True)
class DetectorOnData:
    """A detector config opened for a dataset (what a search or an evaluation checks first)."""

    detector: str  # the bundled name, or the config's absolute path (it travels to the workers)
    path: Path  # the config file
    splits: CocoSplits
    cfg: Config  # filled in for the splits, with the config's own losses
    kind: str  # TWO_STAGE or ONE_STAGE
    sigmoid: bool  # the searched head classifies with sigmoid scores (loss_cls.use_sigmoid)

    @property
    def head(self) -> ConfigDict:
        return searched_head(self.cfg)


def open_detector(name_or_path, data_dir, out_dir) -> DetectorOnData:
    """Find the detector config, check the COCO dataset in ``data_dir`` (a val split carved out of
    train goes below ``out_dir`` when needed) and fill the config in for it; a :class:`UserError`
    for each problem."""
    path = detector_config_path(name_or_path)
    detector = name_or_path if name_or_path in BUNDLED else str(path.resolve())
    out = Path(out_dir)
    splits = find_coco_splits(data_dir, seed=0, work_dir=out)
    cfg = load_detector_config(path, splits, out / "work")
    filter_cfg = cfg.train_dataloader.dataset.get("filter_cfg") or {}
    require_min_side(splits, filter_cfg.get("min_size", 0), path)
    head = searched_head(cfg)
    return DetectorOnData(detector, path, splits, cfg, detector_kind(cfg),
                          bool((head.get("loss_cls") or {}).get("use_sigmoid", False)))


def use_iou_aware_heads(head) -> None:
    """Swap ``head.type`` for its IoU-aware version (see :data:`IOU_AWARE_HEADS`), in place."""
    kind = head.get("type")
    if kind in IOU_AWARE_HEADS.values():
        return
    if kind not in IOU_AWARE_HEADS:
        raise UserError(f"no IoU-aware version of head type {kind!r}; "
                        f"supported: {', '.join(IOU_AWARE_HEADS)}")
    head.type = IOU_AWARE_HEADS[kind]


def build_detector(cfg):
    """Build ``cfg.model`` with mmdet's registry (all mmdet modules and the Searched* losses registered)."""
    register_all_modules()
    model_cfg = cfg.model if hasattr(cfg, "model") else cfg["model"]
    return MODELS.build(copy.deepcopy(model_cfg))
