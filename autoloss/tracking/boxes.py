"""Box estimation of the proxy tracker: the score peak for the position, a small regression head for the size.

What is simplified against PrDiMP: PrDiMP estimates the box with an IoU-Net (PrRoIPool of the
reference and test features, modulation vectors, a probabilistic box regression trained with a KL
loss on jittered proposals, refined at test time by gradient ascent on the predicted IoU from
several initial boxes). Here the position is the classifier's score-map peak refined to sub-cell
precision (the probability-weighted centroid of the 3 x 3 cells around the peak), and the size comes
from a small convolutional head on the raw stride-16 backbone map that regresses the log ratio of
the target's width and height to the nominal size (crop size / search-area factor), read by bilinear
sampling at the estimated centre. The head sees only the test frame, not the reference frame, and is
trained with an L1 loss at the true centre; the tracker smooths its output over frames. No proposals,
no IoU prediction, no refinement by gradient ascent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SizeHead(nn.Module):
    """Per stride-16 cell: (log w, log h) of the target relative to the nominal size."""

    def __init__(self, in_channels: int, hidden: int = 64):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 2, 1),
        )

    def forward(self, stride16: torch.Tensor) -> torch.Tensor:
        return self.layers(stride16)


def sample_at(maps: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Bilinear read of ``maps [N, C, H, W]`` at ``centres [N, 2]`` (x, y in cells, clamped) -> ``[N, C]``."""
    height, width = maps.shape[-2:]
    x = centres[:, 0].clamp(0, width - 1)
    y = centres[:, 1].clamp(0, height - 1)
    grid = torch.stack([2 * x / max(width - 1, 1) - 1, 2 * y / max(height - 1, 1) - 1], dim=-1)
    return F.grid_sample(maps, grid.view(-1, 1, 1, 2), mode="bilinear", align_corners=True).view(maps.shape[0], -1)


def peak_position(scores: torch.Tensor) -> tuple[float, float, float]:
    """The peak of ``scores [H, W]`` refined to sub-cell precision -> (x, y) in cells and the peak's probability.

    The refinement is the centroid of the softmax probabilities in the 3 x 3 window around the peak.
    """
    height, width = scores.shape
    prob = torch.softmax(scores.flatten(), dim=0).view(height, width)
    index = int(torch.argmax(prob))
    row, col = divmod(index, width)
    rows = slice(max(row - 1, 0), min(row + 2, height))
    cols = slice(max(col - 1, 0), min(col + 2, width))
    window = prob[rows, cols]
    ys = torch.arange(rows.start, rows.stop, dtype=prob.dtype, device=prob.device)[:, None]
    xs = torch.arange(cols.start, cols.stop, dtype=prob.dtype, device=prob.device)[None, :]
    mass = window.sum()
    return float((window * xs).sum() / mass), float((window * ys).sum() / mass), float(prob[row, col])
