"""Deterministic input batches for the cheap gates: what a loss of each mode is fed in training.

``probe_batch`` mixes ordinary samples with the edge values that break fragile losses: IoU exactly
0 and 1, logits of +-50, all-zero rows, perfect box overlap, disjoint boxes, tiny and huge boxes.
It is generated from a fixed seed, so the values and gradients on it are a functional fingerprint.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from autoloss.loss.primitives import EPS
from autoloss.loss.space import SearchSpace

NUM_CLASSES = 5  # columns of the probe matrices (the softmax mode's last column is background)


def box_areas(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersection, union and enclosing area of aligned x1y1x2y2 boxes, eps added to U and E."""
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_p = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(dim=1)
    area_t = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(dim=1)
    union = area_p + area_t - inter + EPS
    enclose = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])).prod(dim=1) + EPS
    return inter, union, enclose


def _classification(mode: str, generator: torch.Generator, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    rows, c = 48, NUM_CLASSES
    logits = torch.randn(rows, c, generator=generator, dtype=dtype) * 3.0
    edges = torch.zeros(8, c, dtype=dtype)
    edges[1] = 50.0
    edges[2] = -50.0
    edges[3, 0], edges[4, 0], edges[5, -1] = 50.0, -50.0, 50.0
    edges[6] = torch.linspace(-50, 50, c, dtype=dtype)
    edges[7] = torch.linspace(50, -50, c, dtype=dtype)
    logits = torch.cat([logits, edges])
    n = logits.shape[0]
    labels = torch.randint(0, c, (n,), generator=generator)
    labels[-8:] = torch.tensor([0, 0, 1, 0, 0, c - 1, 2, 2])
    iou = torch.rand(n, 1, generator=generator, dtype=dtype)
    iou[::7] = 0.0
    iou[3::7] = 1.0
    if mode == "softmax":
        target = torch.nn.functional.one_hot(labels, c).to(dtype)
        background = labels == c - 1
        iou = torch.where(background[:, None], torch.ones_like(iou), iou)  # negatives carry 1
        return {"logits": logits, "target": target, "iou": iou}
    # sigmoid: a third of the rows are negatives (no ground-truth class at all)
    target = torch.nn.functional.one_hot(labels, c).to(dtype)
    target[::3] = 0.0
    return {"logits": logits, "target": target, "iou": iou * target}


def _regression(generator: torch.Generator, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    n = 40
    centres = torch.rand(n, 2, generator=generator, dtype=dtype) * 200
    sizes = torch.exp(torch.rand(n, 2, generator=generator, dtype=dtype) * 5) + 1  # 2 .. 150 px
    target = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    jitter = torch.randn(n, 4, generator=generator, dtype=dtype) * sizes.repeat(1, 2) * 0.3
    pred = target + jitter
    pred = torch.cat([torch.minimum(pred[:, :2], pred[:, 2:] - 0.5), pred[:, 2:]], dim=1)
    pred[0] = target[0]  # perfect overlap
    pred[1] = target[1] + torch.tensor([500.0, 500.0, 500.0, 500.0], dtype=dtype)  # disjoint
    pred[2] = target[2] * 0 + torch.tensor([0.0, 0.0, 0.1, 0.1], dtype=dtype)  # tiny
    target[3] = torch.tensor([0.0, 0.0, 1000.0, 1000.0], dtype=dtype)  # huge
    i, u, e = box_areas(pred, target)
    return {"intersection": i, "union": u, "enclosing": e}


@lru_cache(maxsize=32)
def _probe_by_role(mode: str, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if mode == "regression":
        return _regression(generator, dtype)
    return _classification(mode, generator, dtype)


def probe_batch(space: SearchSpace, dtype: torch.dtype = torch.float64, seed: int = 0) -> dict[str, torch.Tensor]:
    """The fixed probe inputs of a space, keyed by its input names (fresh tensors on each call)."""
    by_role = _probe_by_role(space.mode, dtype, seed)
    return {i.name: by_role[i.role].clone() for i in space.inputs}


def prediction_input(space: SearchSpace) -> list[str]:
    """The inputs a detector's gradients flow into: the logits, or the three box areas."""
    if space.mode == "regression":
        return [i.name for i in space.inputs]
    return [space.input_for("logits").name]
