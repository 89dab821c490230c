"""The neck slot between the adapted backbone maps and the target classifier: the hand neck or a cell.

Any module fits the slot that has ``forward(s0, s1)`` with both inputs ``[B, C, H, W]`` returning
``[B, out_channels, H, W]`` and an ``out_channels`` attribute (the cell's is 4 C).
"""

from __future__ import annotations

import torch
from torch import nn

HAND = "hand"


class HandNeck(nn.Module):
    """The hand-designed baseline neck: concatenate the two inputs, then a 3x3 conv stack (BN, ReLU) to 4 C."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = 4 * channels
        self.layers = nn.Sequential(
            nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * channels, 4 * channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(4 * channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(4 * channels, 4 * channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(4 * channels),
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([s0, s1], dim=1))


def make_neck(spec: str, channels: int) -> nn.Module:
    """``"hand"`` -> HandNeck; anything else is a genotype string -> the discrete cell it describes."""
    if spec.strip() == HAND:
        return HandNeck(channels)
    from autoloss.cell.genotype import parse_genotype
    from autoloss.cell.model import Cell

    return Cell(parse_genotype(spec), channels)
