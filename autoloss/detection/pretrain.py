"""A backbone that does not start from scratch: a ResNet pretrained on the dataset's own objects, cached.

The paper's proxy starts from ImageNet weights; nothing can be downloaded here, and a detector trained
from scratch for a few hundred iterations learns so little that its mAP ranks seed noise. So the
proxy can start from a ResNet pretrained once on a classification task made from the training split:
every annotated object is cropped (its box grown by a random margin and shifted a little), resized to
``crop`` pixels and labelled by its category; random windows that overlap no object by more than
``BACKGROUND_IOU`` are the extra class "background". The images are normalised as the detector's data
preprocessor normalises them (RGB, ImageNet mean and std), so the weights fit the detector as they are.

The weights are cached next to the data as ``autoloss_backbone_r<depth>.pth`` with a manifest
``autoloss_backbone_r<depth>.json`` written last: the key is a hash of the training annotations, the
bytes of every training image and the settings, so a changed dataset (or setting) trains again, and
the same one never does. Only files whose manifest says this module wrote them are ever replaced.

:func:`pretrained_backbone` returns the checkpoint's path; a detector config loads it with
``backbone.init_cfg = dict(type="Pretrained", checkpoint=path)`` (``DetectionTask.backbone_checkpoint``).
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from autoloss.errors import UserError
from autoloss.files import write_atomic

GENERATOR = "autoloss.detection.pretrain"
VERSION = 1
BACKGROUND_IOU = 0.3
MEAN_RGB = (123.675, 116.28, 103.53)  # the bundled configs' DetDataPreprocessor (ImageNet, RGB)
STD_RGB = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class PretrainSettings:
    depth: int = 18
    crop: int = 32  # pixels of a crop's side (the synthetic objects are 12 to 48 px)
    steps: int = 300
    batch: int = 32
    lr: float = 1e-3
    seed: int = 0

    def check(self) -> None:
        if self.depth not in (18, 34, 50):
            raise UserError(f"backbone depth must be 18, 34 or 50, got {self.depth}")
        for name in ("crop", "steps", "batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"pretraining {name} must be a positive integer, got {value!r}")
        if not 0 < self.lr < 1:
            raise UserError(f"pretraining learning rate must be in (0, 1), got {self.lr}")


def cache_paths(folder, depth: int) -> tuple[Path, Path]:
    """``(weights, manifest)`` of the cached backbone of ``depth`` in ``folder``."""
    folder = Path(folder)
    return folder / f"autoloss_backbone_r{depth}.pth", folder / f"autoloss_backbone_r{depth}.json"


def data_key(train_ann, img_dir, settings: PretrainSettings) -> str:
    """A hash of what the backbone is trained on: the annotations, every training image's bytes, the settings."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": VERSION, **asdict(settings)}, sort_keys=True).encode())
    try:
        ann_bytes = Path(train_ann).read_bytes()
        digest.update(hashlib.sha256(ann_bytes).digest())
        for image in sorted(json.loads(ann_bytes).get("images", []), key=lambda i: i["id"]):
            digest.update(str(image["file_name"]).encode() + b"\0")
            digest.update(hashlib.sha256((Path(img_dir) / image["file_name"]).read_bytes()).digest())
    except OSError as exc:
        raise UserError(f"cannot read the training split to pretrain on: {exc.filename}: {exc.strerror}") from None
    return digest.hexdigest()


def pretrained_backbone(train_ann, img_dir, cache_folder, settings: PretrainSettings = PretrainSettings(),
                        progress=None) -> Path:
    """The cached backbone for this training split and ``settings`` (trained now when missing or stale)."""
    settings.check()
    weights, manifest = cache_paths(cache_folder, settings.depth)
    key = data_key(train_ann, img_dir, settings)
    stored = _manifest(manifest)
    if stored is not None and stored.get("key") == key and weights.is_file():
        return weights
    if stored is None and (weights.exists() or manifest.exists()):
        raise UserError(f"{weights.parent}: {weights.name} or {manifest.name} exists and was not written by "
                        "autoloss; move it away (autoloss replaces only its own cached backbone)")
    if progress:
        progress(f"pretraining a ResNet-{settings.depth} backbone on the training split's objects "
                 f"({settings.steps} steps; cached in {weights})")
    state, accuracy = train_backbone(train_ann, img_dir, settings)
    import torch

    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {weights.parent}: {exc.strerror or exc}") from None

    write_atomic(weights, lambda file: torch.save(state, file))
    write_atomic(manifest, json.dumps({"generator": GENERATOR, "version": VERSION, "key": key,
                                       "settings": asdict(settings), "train_accuracy": accuracy}, indent=2))
    return weights


def _manifest(path: Path) -> dict | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("generator") == GENERATOR else None


# ------------------------------------------------------------------------------------------ the task


def load_objects(train_ann, img_dir):
    """``(images, boxes)``: every training image as a float RGB tensor (3 x H x W), and per image its
    ``[(x, y, w, h, label)]`` with labels 1..C by the annotation file's category order (0: background)."""
    import numpy as np
    import torch
    from PIL import Image

    data = json.loads(Path(train_ann).read_text())
    labels = {c["id"]: i + 1 for i, c in enumerate(sorted(data.get("categories", []), key=lambda c: c["id"]))}
    by_image: dict[int, list] = {}
    for ann in data.get("annotations", []):
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w >= 2 and h >= 2 and ann.get("category_id") in labels:
            by_image.setdefault(ann["image_id"], []).append((x, y, w, h, labels[ann["category_id"]]))
    images, boxes = [], []
    for image in sorted(data.get("images", []), key=lambda i: i["id"]):
        try:
            with Image.open(Path(img_dir) / image["file_name"]) as opened:
                array = np.asarray(opened.convert("RGB"), dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read training image {Path(img_dir) / image['file_name']}: {exc}") from None
        images.append(torch.from_numpy(array).permute(2, 0, 1).contiguous())
        boxes.append(by_image.get(image["id"], []))
    if not any(boxes):
        raise UserError(f"{train_ann}: no annotated object to pretrain a backbone on")
    return images, boxes, len(labels)


def _iou(a, b) -> float:
    ax, ay, aw, ah = a[:4]
    bx, by, bw, bh = b[:4]
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter) if inter else 0.0


def sample_window(rng: random.Random, size: tuple[int, int], objects: list, background: bool):
    """One crop window ``(x, y, w, h, label)``: an object's box grown by 10-50% and shifted by up to 10%
    of its size, or (``background``) a random window overlapping no object by more than BACKGROUND_IOU."""
    height, width = size
    if not background and objects:
        x, y, w, h, label = rng.choice(objects)
        grow = rng.uniform(1.1, 1.5)
        cx, cy = x + w / 2 + rng.uniform(-0.1, 0.1) * w, y + h / 2 + rng.uniform(-0.1, 0.1) * h
        side = max(w, h) * grow
        return cx - side / 2, cy - side / 2, side, side, label
    for _ in range(20):
        side = rng.uniform(12, min(height, width) / 2)
        window = (rng.uniform(0, width - side), rng.uniform(0, height - side), side, side)
        if all(_iou(window, o) <= BACKGROUND_IOU for o in objects):
            return (*window, 0)
    return (*window, 0)  # a crowded image: the last try (rare; a little label noise)


def crops(images, windows, crop: int):
    """The ``windows`` (image index, x, y, w, h) cut out and resized to ``crop`` pixels (bilinear), normalised."""
    import torch
    import torch.nn.functional as F

    out = []
    for index, x, y, w, h in windows:
        image = images[index]
        _, height, width = image.shape
        # affine_grid maps the output square onto the window in normalised coordinates (-1..1)
        theta = torch.tensor([[w / width, 0.0, (2 * x + w) / width - 1], [0.0, h / height, (2 * y + h) / height - 1]],
                             dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, 3, crop, crop], align_corners=False)
        out.append(F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0])
    batch = torch.stack(out)
    mean = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
    std = torch.tensor(STD_RGB).view(1, 3, 1, 1)
    return (batch - mean) / std


def build_resnet(depth: int):
    """MMDetection's ResNet as the bundled detector configs build it (the weights' names match)."""
    import autoloss.detection.mmdet.detectors  # noqa: F401  (heavy: mmdet; its registry)
    from mmdet.registry import MODELS

    return MODELS.build(dict(type="ResNet", depth=depth, num_stages=4, out_indices=(3,), frozen_stages=-1,
                             norm_cfg=dict(type="BN", requires_grad=True), norm_eval=False, style="pytorch",
                             init_cfg=None))


def train_backbone(train_ann, img_dir, settings: PretrainSettings) -> tuple[dict, float]:
    """Train the backbone on the crop task; ``(its state dict, the last 50 steps' training accuracy)``."""
    import torch
    from torch import nn

    images, boxes, classes = load_objects(train_ann, img_dir)
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    backbone = build_resnet(settings.depth)
    channels = {18: 512, 34: 512, 50: 2048}[settings.depth]
    head = nn.Linear(channels, classes + 1)
    model = nn.ModuleDict({"backbone": backbone, "head": head})
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    with_objects = [i for i, b in enumerate(boxes) if b]
    hits = []
    model.train()
    for _ in range(settings.steps):
        windows, labels = [], []
        for k in range(settings.batch):
            index = rng.choice(with_objects)
            _, height, width = images[index].shape
            x, y, w, h, label = sample_window(rng, (height, width), boxes[index], background=k % 4 == 3)
            windows.append((index, x, y, w, h))
            labels.append(label)
        batch = crops(images, windows, settings.crop)
        flip = torch.rand(len(labels)) < 0.5
        batch[flip] = batch[flip].flip(-1)
        features = backbone(batch)[-1].mean(dim=(2, 3))
        logits = head(features)
        target = torch.tensor(labels)
        loss = nn.functional.cross_entropy(logits, target)
        if not torch.isfinite(loss):
            raise UserError("backbone pretraining diverged (the loss is not finite)")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        hits.append(float((logits.argmax(1) == target).float().mean()))
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}, sum(hits[-50:]) / len(hits[-50:])


# ------------------------------------------------------------------------------------------ a user's weights


def read_state_dict(path) -> dict:
    """The state dict in a user's checkpoint file (a detector checkpoint's ``state_dict``), read without
    running any of its code (``weights_only``); one :class:`UserError` for anything else."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--backbone-checkpoint {path}: {'not a regular file' if path.exists() else 'no such file'}")
    try:
        with warnings.catch_warnings():  # torch warns about a file's pickle protocol: the error below says it all
            warnings.simplefilter("ignore")
            found = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (a user's file: anything can be wrong with it)
        lines = str(exc).strip().splitlines()
        why = ("it holds Python objects beside tensors, which autoloss never unpickles: save the state dict "
               "alone" if type(exc).__name__ == "UnpicklingError" else
               f"{type(exc).__name__}: {lines[0][:200] if lines else ''}")
        raise UserError(f"--backbone-checkpoint {path}: not a PyTorch checkpoint of plain tensors ({why})") from None
    if isinstance(found, dict) and isinstance(found.get("state_dict"), dict):
        found = found["state_dict"]
    if not isinstance(found, dict) or not found:
        raise UserError(f"--backbone-checkpoint {path}: holds no state dict (a mapping of names to tensors)")
    return found


def checkpoint_prefix(path, depth: int) -> str | None:
    """Check that ``path`` holds weights for the detector's ResNet-``depth`` backbone; the key prefix to
    strip (``"backbone."`` for a whole detector's checkpoint, None for a backbone's own or a torchvision
    ResNet's). One clear :class:`UserError` when the file cannot be read or too few weights fit: mmengine
    would load such a file without complaint and train from scratch."""
    import torch

    found = read_state_dict(path)
    prefix = "backbone." if sum(str(k).startswith("backbone.") for k in found) > len(found) / 2 else None
    expected = build_resnet(depth).state_dict()
    fits = sum(1 for name, tensor in expected.items()
               if isinstance(found.get((prefix or "") + name), torch.Tensor)
               and found[(prefix or "") + name].shape == tensor.shape)
    if fits < 0.9 * len(expected):
        raise UserError(f"--backbone-checkpoint {path}: only {fits} of the {len(expected)} weights of the "
                        f"detector's ResNet-{depth} backbone are in it with the right shape (a checkpoint of "
                        "another network or depth?)")
    return prefix
