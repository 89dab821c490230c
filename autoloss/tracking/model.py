"""The proxy tracker's network: backbone -> adapters -> neck (the slot) -> target classifier, and the size head.

The size head reads the raw stride-16 backbone map (as PrDiMP's IoU-Net reads the raw backbone, not
the cell), so the search can freeze backbone and box estimation and swap only adapters, neck and
classifier (``replace_neck``).
"""

from __future__ import annotations

import torch
from torch import nn

from autoloss.tracking.backbone import STRIDES, InputAdapters, TrackingBackbone
from autoloss.tracking.boxes import SizeHead
from autoloss.tracking.classifier import TargetClassifier
from autoloss.tracking.necks import make_neck

STRIDE = STRIDES[1]


class TrackerNet(nn.Module):
    """All trainable parts of the proxy tracker; images are float RGB in 0..255, ``[N, 3, H, W]``."""

    def __init__(
        self,
        depth: int = 18,
        base_channels: int = 64,
        channels: int = 32,
        neck: str = "hand",
        filter_size: int = 3,
        init_step: float = 1.0,
        init_reg: float = 0.05,
    ):
        super().__init__()
        self.channels = channels
        self.filter_size = filter_size
        self.init_step = init_step
        self.init_reg = init_reg
        self.backbone = TrackingBackbone(depth, base_channels)
        self.size_head = SizeHead(self.backbone.out_channels[1])
        self.replace_neck(neck)

    def replace_neck(self, neck: str) -> None:
        """Fresh adapters, the neck ``neck`` ("hand" or a genotype string) and a fresh classifier."""
        self.neck_spec = neck
        self.adapters = InputAdapters(self.backbone.out_channels, self.channels)
        self.neck = make_neck(neck, self.channels)
        self.classifier = TargetClassifier(self.neck.out_channels, self.filter_size, STRIDE, self.init_step, self.init_reg)

    def backbone_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.backbone(images)

    def classifier_features(self, stride8: torch.Tensor, stride16: torch.Tensor) -> torch.Tensor:
        """Backbone maps -> adapters -> neck -> the classifier's normalised features ``[N, 4C, h, w]``."""
        return self.classifier.features(self.neck(*self.adapters(stride8, stride16)))

    def searched_parameters(self) -> list[nn.Parameter]:
        """What the search regime trains: adapters, neck and classifier."""
        return [*self.adapters.parameters(), *self.neck.parameters(), *self.classifier.parameters()]

    def frozen_modules(self) -> list[nn.Module]:
        """What the search regime freezes (backbone and box estimation)."""
        return [self.backbone, self.size_head]
