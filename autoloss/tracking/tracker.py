"""The proxy tracker with the GOT-10k toolkit's API (``init(frame, box)``, ``update(frame) -> box``, ``track``),
and one-pass evaluation (OPE) over a sequence.

``init`` crops the first frame around the given box (plus a few shifted copies, DiMP's augmentation
in its simplest form), and learns the filter with the classifier's initialiser and steepest descent.
``update`` crops around the last estimate at the same search-area factor, takes the score peak as
the new centre and the size head's estimate there, smoothed over frames (``scale_lr``). Optionally
(``update_interval > 0``) the frame's crop joins a small memory and the filter takes a few more
steepest-descent steps on it, every ``update_interval`` frames.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from autoloss.tracking.boxes import peak_position, sample_at
from autoloss.tracking.classifier import apply_filter, cells_to_crop, crop_to_cells, gaussian_label_density
from autoloss.tracking.dataset import TrackingSequence, load_frame
from autoloss.tracking.model import STRIDE, TrackerNet
from autoloss.tracking.sampling import CropWindow, crop, to_tensor, window_around

MIN_SIDE = 4.0  # pixels: the smallest box side the tracker reports


def as_rgb_array(frame) -> np.ndarray:
    """A PIL image, an H x W x 3 array or a path -> H x W x 3 uint8 RGB."""
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"), dtype=np.uint8)
    if isinstance(frame, np.ndarray):
        return frame if frame.dtype == np.uint8 else np.clip(frame, 0, 255).astype(np.uint8)
    return load_frame(frame)


class ProxyTracker:
    """A DiMP-like tracker around a trained ``TrackerNet`` (put in eval mode here)."""

    def __init__(
        self,
        net: TrackerNet,
        crop_size: int,
        search_factor: float,
        sigma: float,
        init_iterations: int = 10,
        scale_lr: float = 0.5,
        init_shifts: int = 4,
        update_interval: int = 0,
        update_iterations: int = 2,
        memory: int = 8,
        device: str = "cpu",
        name: str = "ProxyDiMP",
    ):
        self.net = net.to(device)
        self.net.eval()
        self.crop_size = crop_size
        self.search_factor = search_factor
        self.sigma = sigma
        self.init_iterations = init_iterations
        self.scale_lr = scale_lr
        self.init_shifts = init_shifts
        self.update_interval = update_interval
        self.update_iterations = update_iterations
        self.memory = memory
        self.device = device
        self.name = name
        self.is_deterministic = True

    # -- features -------------------------------------------------------------------------------
    def _features(self, crops: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        images = to_tensor(crops).to(self.device)
        stride8, stride16 = self.net.backbone_maps(images)
        return self.net.classifier_features(stride8, stride16), stride16

    def _density(self, boxes: torch.Tensor, map_size: tuple[int, int]) -> torch.Tensor:
        centres = crop_to_cells(boxes[..., :2] + boxes[..., 2:] / 2, STRIDE)
        return gaussian_label_density(centres, map_size, self.sigma)

    def _init_windows(self, box: np.ndarray) -> list[CropWindow]:
        """The window around the box, and ``init_shifts`` copies shifted by a third of the target size."""
        base = window_around(box, self.search_factor, self.crop_size)
        step = np.sqrt(box[2] * box[3]) / 3
        shifts = [(step, 0), (-step, 0), (0, step), (0, -step), (step, step), (-step, -step), (step, -step), (-step, step)]
        return [base] + [CropWindow(base.cx + dx, base.cy + dy, base.side, base.out_size) for dx, dy in shifts[: self.init_shifts]]

    # -- the toolkit's API ----------------------------------------------------------------------
    @torch.no_grad()
    def init(self, frame, box) -> None:
        image = as_rgb_array(frame)
        box = np.asarray(box, dtype=np.float64).reshape(4)
        self.image_size = (image.shape[1], image.shape[0])
        self.centre = np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])
        self.size = np.maximum(box[2:], MIN_SIDE)
        windows = self._init_windows(box)
        feat, _ = self._features([crop(image, w) for w in windows])
        boxes = torch.tensor(np.stack([w.to_crop(box) for w in windows]), dtype=feat.dtype, device=self.device)
        self.train_feat = feat[:, None]
        self.train_boxes = boxes[:, None]
        self.train_density = self._density(self.train_boxes, feat.shape[-2:])
        self.filter = self.net.classifier.train_filter(self.train_feat, self.train_boxes, self.train_density, self.init_iterations)[-1]
        self.frame_index = 0
        self.init_count = len(windows)

    @torch.no_grad()
    def update(self, frame) -> np.ndarray:
        image = as_rgb_array(frame)
        self.frame_index += 1
        window = window_around(self.box(), self.search_factor, self.crop_size)
        feat, stride16 = self._features([crop(image, window)])
        scores = apply_filter(feat[:, None], self.filter)[0, 0]
        x, y, _ = peak_position(scores)
        centre = cells_to_crop(torch.tensor([x, y]), STRIDE).numpy()
        log_size = sample_at(self.net.size_head(stride16), torch.tensor([[x, y]], dtype=feat.dtype, device=self.device))[0]
        nominal = self.crop_size / self.search_factor
        size_in_crop = nominal * torch.exp(log_size.clamp(-2.0, 2.0)).cpu().numpy()
        estimate = window.to_frame(np.concatenate([centre - size_in_crop / 2, size_in_crop]))
        self.centre = estimate[:2] + estimate[2:] / 2
        self.size = (1 - self.scale_lr) * self.size + self.scale_lr * estimate[2:]
        self._clamp()
        if self.update_interval > 0 and self.frame_index % self.update_interval == 0:
            self._update_filter(feat, window)
        return self.box()

    def track(self, img_files: Sequence, box, visualize: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The GOT-10k toolkit's ``Tracker.track``: boxes ``(N, 4)`` and seconds per frame ``(N,)``."""
        boxes = np.zeros((len(img_files), 4))
        times = np.zeros(len(img_files))
        for index, path in enumerate(img_files):
            image = as_rgb_array(path)
            start = time.perf_counter()
            if index == 0:
                self.init(image, box)
                boxes[0] = np.asarray(box, dtype=np.float64)
            else:
                boxes[index] = self.update(image)
            times[index] = time.perf_counter() - start
        return boxes, times

    # -- state ----------------------------------------------------------------------------------
    def box(self) -> np.ndarray:
        return np.concatenate([self.centre - self.size / 2, self.size])

    def _clamp(self) -> None:
        width, height = self.image_size
        self.size = np.clip(self.size, MIN_SIDE, [width, height])
        self.centre = np.clip(self.centre, 0.0, [width, height])

    def _update_filter(self, feat: torch.Tensor, window: CropWindow) -> None:
        box = torch.tensor(window.to_crop(self.box()), dtype=feat.dtype, device=self.device)[None, None]
        self.train_feat = self._remember(self.train_feat, feat[:, None])
        self.train_boxes = self._remember(self.train_boxes, box)
        self.train_density = self._density(self.train_boxes, feat.shape[-2:])
        filters = self.net.classifier.optimizer(self.filter, self.train_feat, self.train_density, self.update_iterations)
        self.filter = filters[-1]

    def _remember(self, kept: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        """The init crops always, then the latest ``memory`` updates."""
        joined = torch.cat([kept, new])
        if joined.shape[0] <= self.init_count + self.memory:
            return joined
        return torch.cat([joined[: self.init_count], joined[-self.memory :]])


def run_sequence(tracker, sequence: TrackingSequence) -> tuple[np.ndarray, np.ndarray]:
    """One pass (OPE) as GOT-10k runs it: init on the first ground-truth box, update on every later frame."""
    return tracker.track(list(sequence.frames), sequence.boxes[0])


class StaticTracker:
    """The trivial reference: reports the first box on every frame."""

    name = "Static"
    is_deterministic = True

    def init(self, frame, box) -> None:
        self.first = np.asarray(box, dtype=np.float64).reshape(4)

    def update(self, frame) -> np.ndarray:
        return self.first.copy()

    def track(self, img_files: Sequence, box, visualize: bool = False) -> tuple[np.ndarray, np.ndarray]:
        self.init(None, box)
        return np.tile(self.first, (len(img_files), 1)), np.zeros(len(img_files))
