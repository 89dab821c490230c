"""The MMDetection proxy: train a detector with a candidate loss, score it by COCO bbox mAP.

Two stages, as in CSE-Autoloss:

* ``stage="mos"`` (model optimisation simulation): train ``mos_iters`` iterations on D_verify (one
  training image per category) and test on D_verify itself;
* ``stage="proxy"``: train ``proxy_iters`` iterations on the training split (the paper trains one
  epoch) and test on the validation split.

Fitness is CocoMetric's ``bbox_mAP``. CocoMetric returns no metric at all when a model makes no
detection (an untrained model, a loss that taught it nothing); that is a score of 0, not an error.

The searched branch gets the candidate expression; the other branch keeps the config's own loss
(GIoU for regression, CE or FL for classification, as in the paper's section 4). For the
classification branch the searched head is swapped for its IoU-aware version, so a loss with the IoU
input W (CEI, FLI and their offspring) sees the detached IoU of each positive.

A run raises :class:`Diverged` when the training loss becomes NaN or infinite; any other exception
(a loss of the wrong shape, CUDA out of memory, ...) propagates too: the engine records either as a
failed evaluation. Each run writes its log to ``<work_root>/<stage>/<hash>-s<seed>/run.log`` and its
console output goes there as well, so a worker never scribbles over the search's progress display.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import multiprocessing
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from autoloss.detection.coco import CocoSplits, sample_verify_set
from autoloss.engine import heartbeat
from autoloss.errors import UserError, reject_unknown_fields
from autoloss.loss.genotype import LossGenotype
from autoloss.loss.space import load_space

STAGES = ("mos", "proxy")
BRANCHES = ("cls", "reg")
SPACE_MODES = {"cls": ("softmax", "sigmoid"), "reg": ("regression",)}


class Diverged(RuntimeError):
    """The training loss of a candidate became NaN or infinite."""


@dataclass(frozen=True)
class DetectionTask:
    """Everything a worker needs to train and score one candidate (plain data: it is stored and pickled)."""

    detector: str  # a bundled name (autoloss.detection.mmdet.detectors.BUNDLED) or an absolute config path
    branch: str  # "cls" or "reg": which loss the candidate replaces
    space: str  # search-space name or YAML path of the searched branch
    train_ann: str
    val_ann: str
    train_img_dir: str
    val_img_dir: str
    verify_ann: str  # D_verify: one training image per category (images in train_img_dir)
    categories: tuple
    work_root: str  # work directories of the runs go below this
    proxy_iters: int = 100
    mos_iters: int = 30
    batch_size: int | None = None  # None: the config's
    threads: int = 0  # torch intra-op threads per evaluation (0: torch's default)
    backbone_checkpoint: str | None = None  # the backbone's starting weights (None: the config's, from scratch)
    backbone_prefix: str | None = None  # the key prefix to strip from them ("backbone." in a detector's checkpoint)

    def __post_init__(self):
        object.__setattr__(self, "categories", tuple(self.categories))
        if self.branch not in BRANCHES:
            raise UserError(f"branch must be one of {', '.join(BRANCHES)}, got {self.branch!r}")
        for name in ("proxy_iters", "mos_iters"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise UserError(f"batch size must be a positive integer, got {self.batch_size!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["categories"] = list(self.categories)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DetectionTask":
        reject_unknown_fields(cls, d, "detection")
        return cls(**d)

    # ------------------------------------------------------------------ configs

    def losses(self, expression: str) -> tuple[dict | None, dict | None]:
        """``(cls_loss, reg_loss)`` config dicts: the candidate in the searched branch, None (the
        config's own loss) in the other."""
        space = load_space(self.space)
        if space.mode not in SPACE_MODES[self.branch]:
            raise UserError(f"space '{space.name}' ({space.mode}) cannot search the {self.branch} branch")
        if self.branch == "reg":
            return None, {"type": "SearchedIoULoss", "expression": expression, "space": self.space}
        kind = "SearchedSoftmaxClsLoss" if space.mode == "softmax" else "SearchedSigmoidClsLoss"
        return {"type": kind, "expression": expression, "space": self.space}, None

    def config(self, expression: str, stage: str, seed: int, work_dir):
        """The mmengine Config of one run (no validation loop, no checkpoints; test on the scored split)."""
        from autoloss.detection.mmdet.detectors import load_detector_config  # heavy: mmengine, mmdet

        if stage not in STAGES:
            raise ValueError(f"unknown stage '{stage}': expected one of {', '.join(STAGES)}")
        if stage == "mos":
            splits = CocoSplits(self.verify_ann, self.verify_ann, self.train_img_dir, self.train_img_dir,
                                list(self.categories), 0, 0)
            iters = self.mos_iters
        else:
            splits = CocoSplits(self.train_ann, self.val_ann, self.train_img_dir, self.val_img_dir,
                                list(self.categories), 0, 0)
            iters = self.proxy_iters
        cls_loss, reg_loss = self.losses(expression)
        cfg = load_detector_config(self.detector, splits, work_dir, max_iters=iters, batch_size=self.batch_size,
                                   cls_loss=cls_loss, reg_loss=reg_loss, iou_aware_heads=self.branch == "cls")
        start_backbone_from(cfg, self.backbone_checkpoint, self.backbone_prefix)
        if stage == "mos":  # D_verify is tiny: never ask for more images per batch than it has
            cfg.train_dataloader.batch_size = min(cfg.train_dataloader.batch_size, len(self.categories))
        return finish_run_config(cfg, iters, seed, f"{stage}-{_short_hash(expression)}-s{seed}")

    # ------------------------------------------------------------------ one run

    def evaluate(self, expression: str, stage: str = "proxy", seed: int = 0) -> dict:
        """Train with ``expression`` in the searched branch and test; return the metrics.

        ``{"fitness": bbox mAP, "mAP_50", "mAP_75", "stage", "iters", "final_loss", "seconds",
        "work_dir"}``; raises :class:`Diverged` when the training loss stops being finite.
        """
        work_dir = Path(self.work_root) / stage / f"{_short_hash(expression)}-s{seed}"
        work_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        threads = set_threads(self.threads)
        try:
            with output_to(work_dir / "run.log"):
                metrics, final_loss = self._train_and_test(expression, stage, seed, work_dir)
        finally:
            set_threads(threads)
        return {
            **scores(metrics),
            "stage": stage,
            "iters": self.mos_iters if stage == "mos" else self.proxy_iters,
            "final_loss": final_loss,
            "seconds": time.perf_counter() - start,
            "work_dir": str(work_dir),
        }

    def _train_and_test(self, expression: str, stage: str, seed: int, work_dir: Path) -> tuple[dict, float]:
        return train_and_test(self.config(expression, stage, seed, work_dir))


def start_backbone_from(cfg, checkpoint: str | None, prefix: str | None = None) -> None:
    """Point ``cfg``'s backbone at ``checkpoint`` (nothing when None: the config's own start)."""
    if checkpoint:
        init = dict(type="Pretrained", checkpoint=str(checkpoint))
        if prefix:
            init["prefix"] = prefix
        cfg.model.backbone.init_cfg = init


def finish_run_config(cfg, iters: int, seed: int, name: str):
    """Make a filled-in detector config one scored training run, in place: train ``iters`` iterations
    in this process (no dataloader workers), no validation loop and no checkpoints (``test()`` scores
    once at the end), quiet logs, a seed, and a unique experiment name (``name`` + a timestamp)."""
    for key in ("train_dataloader", "test_dataloader"):
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.train_cfg.val_interval = iters + 1
    cfg.test_evaluator.outfile_prefix = None
    hooks = cfg.default_hooks
    hooks.checkpoint = None
    hooks.pop("visualization", None)  # draws nothing unless asked; not one of mmengine's defaults
    hooks.logger.interval = max(1, min(int(hooks.logger.get("interval", 50)), iters))
    # keep this process's start method (mmengine would force 'fork' on a spawned worker)
    cfg.env_cfg.setdefault("mp_cfg", {})["mp_start_method"] = multiprocessing.get_start_method()
    cfg.randomness = dict(seed=int(seed), deterministic=False)
    cfg.log_level = "WARNING"
    unique = f"{name}-{time.time_ns()}"
    cfg.experiment_name = unique  # mmengine keys its logger and visualizer instances by it
    cfg.visualizer.name = unique
    return cfg


def train_and_test(cfg) -> tuple[dict, float]:
    """Train with ``cfg`` (see :func:`finish_run_config`) and test; ``(test metrics, last training
    loss)``. Raises :class:`Diverged` as soon as the training loss is NaN or infinite."""
    from mmengine.runner import Runner  # heavy: mmengine

    runner = Runner.from_cfg(cfg)
    watch = loss_watch()
    runner.register_hook(watch, priority="VERY_HIGH")
    try:
        runner.train()
        metrics = runner.test()
    finally:
        _release(runner)
    return dict(metrics or {}), watch.last


def scores(metrics: dict) -> dict:
    """COCO bbox AP, AP50 and AP75 of a test run (0 where CocoMetric had nothing to score)."""
    return {"fitness": _metric(metrics, "bbox_mAP"), "mAP_50": _metric(metrics, "bbox_mAP_50"),
            "mAP_75": _metric(metrics, "bbox_mAP_75")}


def _metric(metrics: dict, key: str) -> float:
    """A CocoMetric value (``coco/<key>``); missing (no detections at all) or -1 (nothing to score) is 0."""
    value = metrics.get(f"coco/{key}", metrics.get(key))
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0


def loss_watch():
    """An mmengine hook that stops training as soon as the loss is NaN or infinite (``.last``: the
    latest loss)."""
    from mmengine.hooks import Hook  # heavy: mmengine

    class LossWatch(Hook):
        def __init__(self):
            self.last = float("nan")

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            loss = (outputs or {}).get("loss")
            if loss is None:
                return
            value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
            self.last = value
            heartbeat.beat(runner.iter + 1, getattr(runner, "max_iters", None), value)
            if not math.isfinite(value):
                raise Diverged(f"training loss became {value} at iteration {runner.iter + 1}")

    return LossWatch()


def _release(runner) -> None:
    """Close the run's log file and forget its mmengine singletons (a worker runs many candidates)."""
    from mmengine.logging import MMLogger, MessageHub  # heavy: mmengine
    from mmengine.visualization import Visualizer

    name = runner.experiment_name
    for manager in (MMLogger, MessageHub, Visualizer):
        instance = manager._instance_dict.pop(name, None)
        if manager is MMLogger and instance is not None:
            for handler in list(instance.handlers):
                handler.close()
                instance.removeHandler(handler)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads when ``threads`` > 0; return the previous number."""
    before = torch.get_num_threads()
    if threads and threads > 0:
        torch.set_num_threads(int(threads))
    return before


@contextlib.contextmanager
def output_to(path: Path):
    """Send this process's output to ``path``: ``sys.stdout``/``sys.stderr`` and file descriptors 1 and 2
    (what C code prints), whichever of them the caller had them pointing at."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "a", buffering=1, encoding="utf-8", errors="replace") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    yield
            finally:
                log.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)


def evaluate(task: dict, expression: str, stage: str, seed: int) -> dict:
    """Picklable entry point for worker processes: ``DetectionTask.from_dict(task).evaluate(...)``."""
    import autoloss.detection.mmdet.detectors  # noqa: F401  (heavy: mmdet; registers the searched losses and heads)

    return DetectionTask.from_dict(task).evaluate(expression, stage, seed)


def require_mmdetection(purpose: str) -> None:
    """A :class:`UserError` saying how to install it when MMDetection is missing."""
    try:  # optional: the detection extra
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
    except ImportError as exc:
        raise UserError(f"{purpose} need MMDetection 3.3 ({exc}); run scripts/install.sh, which installs "
                        f"mmengine, mmcv with its compiled ops and mmdet") from None


def prepare_task(detector: str, branch: str, data_dir, run_dir, space: str | None = None,
                 proxy_iters: int | None = None, mos_iters: int = 30, batch_size: int | None = None,
                 seed: int = 0, check_build: bool = True, backbone_checkpoint=None, pretrain=None,
                 progress=None) -> tuple[DetectionTask, dict]:
    """Validate a detector search's inputs in the parent process and write D_verify.

    Every problem is a :class:`UserError` with one clear message (MMDetection missing, an unknown
    detector, a config without the expected head or not iteration-based, a dataset that is missing or
    malformed, a search space of the wrong kind for the head). ``proxy_iters`` defaults to one epoch of
    the training split (the paper's proxy). With ``check_build`` the detector is built once with the
    initial loss, so a config that cannot build fails here rather than in every worker.

    The backbone starts from ``backbone_checkpoint`` (a user's weights, checked to fit), or with
    ``pretrain`` (:class:`~autoloss.detection.pretrain.PretrainSettings`) from a ResNet pretrained on the
    training split's objects, cached in ``run_dir`` (:mod:`autoloss.detection.pretrain`); otherwise as
    the config says (the bundled configs: from scratch).

    Returns the task and a summary dict for people (dataset sizes, D_verify, the space, notes).
    """
    require_mmdetection("detector searches")
    # heavy: mmengine, mmdet (registers the searched losses and heads)
    from autoloss.detection.mmdet.detectors import IOU_AWARE_HEADS, TWO_STAGE, build_detector, open_detector

    if branch not in BRANCHES:
        raise UserError(f"branch must be one of {', '.join(BRANCHES)}, got {branch!r}")
    run_dir = Path(run_dir)
    target = open_detector(detector, data_dir, run_dir)
    detector, path, splits, cfg, kind = target.detector, target.path, target.splits, target.cfg, target.kind
    head, sigmoid_head = target.head, target.sigmoid
    if space is None:
        space = "reg" if branch == "reg" else ("cls_sigmoid" if sigmoid_head else "cls_softmax")
    loaded = load_space(space)
    if loaded.mode not in SPACE_MODES[branch]:
        raise UserError(f"space '{loaded.name}' is a {loaded.mode} space; the {branch} branch needs "
                        f"{' or '.join(SPACE_MODES[branch])}")
    if branch == "cls" and (loaded.mode == "sigmoid") != sigmoid_head:
        want = "sigmoid (e.g. cls_sigmoid)" if sigmoid_head else "softmax (e.g. cls_softmax)"
        raise UserError(f"the {head.get('type')} head of {path.name} classifies with "
                        f"{'sigmoid' if sigmoid_head else 'softmax'} scores: use a {want} space, "
                        f"not '{loaded.name}' ({loaded.mode})")
    notes = []
    head_type = head.get("type")
    if branch == "cls" and head_type not in IOU_AWARE_HEADS and head_type not in IOU_AWARE_HEADS.values():
        raise UserError(f"the classification branch needs an IoU-aware version of the searched head, and "
                        f"{head_type!r} has none (supported: {', '.join(IOU_AWARE_HEADS)})")

    verify_ann = run_dir / "d_verify.json"
    verify = sample_verify_set(splits.train_ann, verify_ann, seed=seed)
    if verify["images"] == 0:
        raise UserError(f"{splits.train_ann}: no annotated image to build D_verify from")
    if verify["uncovered"]:
        notes.append(f"D_verify: {len(verify['uncovered'])} categor(ies) have no training annotation")

    batch = int(batch_size or cfg.train_dataloader.batch_size)
    if proxy_iters is None:
        proxy_iters = max(2, math.ceil(splits.num_train / batch))  # one epoch, as in the paper
    checkpoint, prefix, backbone = starting_backbone(cfg, splits, run_dir, backbone_checkpoint, pretrain, progress)
    task = DetectionTask(detector, branch, str(space), splits.train_ann, splits.val_ann, splits.train_img_dir,
                         splits.val_img_dir, str(verify_ann.resolve()), tuple(splits.categories),
                         str((run_dir / "work").resolve()), proxy_iters=int(proxy_iters),
                         mos_iters=int(mos_iters), batch_size=batch_size, backbone_checkpoint=checkpoint,
                         backbone_prefix=prefix)
    if check_build:
        initial = str(LossGenotype(loaded).initial())
        try:
            cfg = task.config(initial, "proxy", seed, run_dir / "work")
            build_detector(cfg)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001  (the user's config: anything can go wrong)
            lines = str(exc).strip().splitlines()
            raise UserError(f"{path}: cannot build the detector ({type(exc).__name__}: "
                            f"{lines[0] if lines else ''})") from None
    summary = {
        "config": str(path), "kind": "two-stage" if kind == TWO_STAGE else "one-stage", "space": loaded.name,
        "train_images": splits.num_train, "val_images": splits.num_val, "carved_val": splits.carved,
        "categories": len(splits.categories), "verify_images": verify["images"], "batch_size": batch,
        "proxy_iters": int(proxy_iters), "mos_iters": int(mos_iters), "notes": notes, "backbone": backbone,
    }
    return task, summary


def starting_backbone(cfg, splits, run_dir: Path, checkpoint, pretrain, progress=None
                      ) -> tuple[str | None, str | None, str]:
    """``(checkpoint path, key prefix, words for people)`` of the backbone's starting weights: a user's
    ``checkpoint`` (checked to fit), the one ``pretrain`` trains (cached in ``run_dir``), or the config's."""
    from autoloss.detection.pretrain import checkpoint_prefix, pretrained_backbone

    backbone = cfg.model.get("backbone") or {}
    depth = backbone.get("depth")
    if checkpoint is not None and pretrain is not None:
        raise UserError("--backbone-checkpoint and --pretrain-backbone exclude each other: give one")
    if (checkpoint is not None or pretrain is not None) and (backbone.get("type") != "ResNet" or depth is None):
        raise UserError(f"a backbone checkpoint or pretraining needs a ResNet backbone; the config's is "
                        f"{backbone.get('type')!r}")
    if checkpoint is not None:
        prefix = checkpoint_prefix(checkpoint, int(depth))
        path = Path(checkpoint).resolve()
        return str(path), prefix, f"ResNet-{depth} from {path}"
    if pretrain is not None:
        pretrain = replace(pretrain, depth=int(depth))
        path = pretrained_backbone(splits.train_ann, splits.train_img_dir, run_dir, pretrain, progress=progress)
        return str(path.resolve()), None, f"ResNet-{depth} pretrained on the training split's objects ({path.name})"
    init = backbone.get("init_cfg")
    return None, None, (f"ResNet-{depth}, the config's init_cfg {init!r}" if init else f"{backbone.get('type')}"
                        f"{'-' + str(depth) if depth else ''} from scratch (the config sets no init_cfg)")
