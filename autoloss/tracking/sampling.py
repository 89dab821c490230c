"""Training samples for the tracker: per sample, one sequence's train and test frames, cropped around the target.

As DiMP samples them: from one sequence, ``frames`` train frames and ``frames`` test frames (target
visible) within ``max_gap`` frames of each other, the train frames before the test frames; each frame
cropped around a jittered target box (centre moved uniformly by up to ``jitter / 2`` target sizes,
size scaled by ``exp(N(0, scale_jitter))``) to a square of ``search_factor`` x the jittered target
size, resized to ``crop_size`` pixels; the boxes in crop coordinates. Batch ``i`` of seed ``s`` depends
only on ``(s, i)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from autoloss.tracking.dataset import TrackingSequence, load_frame


@dataclass(frozen=True)
class CropWindow:
    """A square window of the frame (centre, side in frame pixels) resized to ``out_size`` pixels."""

    cx: float
    cy: float
    side: float
    out_size: int

    @property
    def scale(self) -> float:
        return self.out_size / self.side

    def to_crop(self, box: np.ndarray) -> np.ndarray:
        """x, y, w, h in the frame -> in the crop."""
        x0, y0 = self.cx - self.side / 2, self.cy - self.side / 2
        return np.array([(box[0] - x0) * self.scale, (box[1] - y0) * self.scale, box[2] * self.scale, box[3] * self.scale])

    def to_frame(self, box: np.ndarray) -> np.ndarray:
        """x, y, w, h in the crop -> in the frame."""
        x0, y0 = self.cx - self.side / 2, self.cy - self.side / 2
        return np.array([box[0] / self.scale + x0, box[1] / self.scale + y0, box[2] / self.scale, box[3] / self.scale])


def window_around(box: np.ndarray, search_factor: float, out_size: int) -> CropWindow:
    """The window ``search_factor`` x sqrt(w * h) wide centred on ``box`` (x, y, w, h)."""
    side = search_factor * math.sqrt(max(box[2], 1.0) * max(box[3], 1.0))
    return CropWindow(float(box[0] + box[2] / 2), float(box[1] + box[3] / 2), float(side), int(out_size))


def crop(image: np.ndarray, window: CropWindow) -> np.ndarray:
    """The window's pixels (bilinear), outside the frame filled with the frame's mean colour."""
    scale = window.scale
    x0, y0 = window.cx - window.side / 2, window.cy - window.side / 2
    # pixel centres sit at half-integers in box coordinates
    matrix = np.array([[scale, 0.0, scale * (0.5 - x0) - 0.5], [0.0, scale, scale * (0.5 - y0) - 0.5]])
    fill = tuple(float(v) for v in image.reshape(-1, 3).mean(axis=0))
    size = (window.out_size, window.out_size)
    return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """H x W x 3 uint8 images -> float ``[N, 3, H, W]`` in 0..255."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


@dataclass
class SampleBatch:
    """``frames`` train and test frames of ``S`` sequences: images ``[I, S, 3, H, W]``, boxes ``[I, S, 4]`` (crop x, y, w, h)."""

    train_images: torch.Tensor
    train_boxes: torch.Tensor
    test_images: torch.Tensor
    test_boxes: torch.Tensor

    def to(self, device: str | torch.device) -> "SampleBatch":
        return SampleBatch(*(t.to(device) for t in (self.train_images, self.train_boxes, self.test_images, self.test_boxes)))


class FrameCache:
    """Decoded frames, kept once read (small synthetic splits fit in memory)."""

    def __init__(self):
        self._frames: dict[str, np.ndarray] = {}

    def get(self, path) -> np.ndarray:
        key = str(path)
        if key not in self._frames:
            self._frames[key] = load_frame(path)
        return self._frames[key]


class PairSampler:
    """Deterministic training batches from a list of sequences."""

    def __init__(
        self,
        sequences: Sequence[TrackingSequence],
        crop_size: int,
        search_factor: float,
        frames: int = 3,
        max_gap: int = 10,
        train_jitter: float = 0.5,
        test_jitter: float = 1.0,
        scale_jitter: float = 0.15,
        seed: int = 0,
        cache: FrameCache | None = None,
    ):
        usable = [s for s in sequences if int((s.visible() & np.isfinite(s.boxes).all(axis=1)).sum()) >= 2]
        if not usable:
            raise ValueError("no sequence has two annotated frames with the target visible")
        self.sequences = usable
        self.crop_size = crop_size
        self.search_factor = search_factor
        self.frames = frames
        self.max_gap = max_gap
        self.train_jitter = train_jitter
        self.test_jitter = test_jitter
        self.scale_jitter = scale_jitter
        self.seed = seed
        self.cache = cache or FrameCache()

    def frame_indices(self, rng: np.random.Generator, sequence: TrackingSequence) -> np.ndarray:
        """``2 * frames`` visible frame indices within ``max_gap`` of each other, sorted."""
        visible = np.flatnonzero(sequence.visible() & np.isfinite(sequence.boxes).all(axis=1))
        base = int(rng.choice(visible))
        window = visible[(visible >= base) & (visible <= base + self.max_gap)]
        if window.size < 2:
            window = visible[(visible <= base) & (visible >= base - self.max_gap)]
        count = 2 * self.frames
        picked = rng.choice(window, size=count, replace=window.size < count)
        return np.sort(picked)

    def jittered_window(self, rng: np.random.Generator, box: np.ndarray, jitter: float) -> CropWindow:
        w, h = box[2] * math.exp(rng.normal(0, self.scale_jitter)), box[3] * math.exp(rng.normal(0, self.scale_jitter))
        offset = math.sqrt(w * h) * jitter * (rng.random(2) - 0.5)
        cx, cy = box[0] + box[2] / 2 + offset[0], box[1] + box[3] / 2 + offset[1]
        return window_around(np.array([cx - w / 2, cy - h / 2, w, h]), self.search_factor, self.crop_size)

    def sample(self, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        """One sequence's ``2 * frames`` crops (train first) and their boxes ``[2 * frames, 4]``."""
        sequence = self.sequences[int(rng.integers(len(self.sequences)))]
        crops, boxes = [], []
        for position, index in enumerate(self.frame_indices(rng, sequence)):
            box = sequence.boxes[index]
            jitter = self.train_jitter if position < self.frames else self.test_jitter
            window = self.jittered_window(rng, box, jitter)
            crops.append(crop(self.cache.get(sequence.frames[index]), window))
            boxes.append(window.to_crop(box))
        return crops, np.stack(boxes)

    def batch(self, index: int, size: int) -> SampleBatch:
        """Batch ``index``: ``size`` samples, determined by (seed, index) alone."""
        rng = np.random.default_rng([self.seed, index])
        images, boxes = [], []
        for _ in range(size):
            crops, crop_boxes = self.sample(rng)
            images.append(to_tensor(crops))
            boxes.append(torch.from_numpy(crop_boxes).float())
        stacked_images = torch.stack(images, dim=1)  # [2I, S, 3, H, W]
        stacked_boxes = torch.stack(boxes, dim=1)  # [2I, S, 4]
        i = self.frames
        return SampleBatch(stacked_images[:i], stacked_boxes[:i], stacked_images[i:], stacked_boxes[i:])
