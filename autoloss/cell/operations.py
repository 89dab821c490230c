"""The eight candidate operations of a DARTS cell edge, as a name -> module-factory table.

Every factory has the signature ``factory(channels, stride, affine, *, pool_bn=False)`` and returns
an ``nn.Module`` mapping ``[B, C, H, W]`` to ``[B, C, ceil(H / stride), ceil(W / stride)]``:

- ``sep_conv_kxk``: (ReLU, depthwise k x k conv, pointwise 1 x 1 conv, BN) twice; only the first
  depthwise conv has the stride.
- ``dil_conv_kxk``: ReLU, depthwise k x k conv with dilation 2, pointwise 1 x 1 conv, BN.
- ``max_pool_3x3`` / ``avg_pool_3x3``: 3 x 3 pooling, padding 1 (the average ignores the padding);
  ``pool_bn=True`` appends a BN, as DARTS's supernet does (a discrete cell has none).
- ``skip_connect``: the identity at stride 1, a factorized reduce (two offset 1 x 1 stride-2 convs,
  concatenated, then BN) at stride 2.
- ``none``: zeros of the output's shape (the input times 0, subsampled by the stride).

Convolutions carry no bias (BN follows each of them). ``pool_bn`` matters to the pools only; it is
accepted by every factory so a supernet can call all of them the same way.
``PRIMITIVES`` (defined with the genotype, re-exported here) fixes the order of the operations
(the columns of a supernet's alpha).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from autoloss.cell.genotype import PRIMITIVES


class Zero(nn.Module):
    """Outputs zeros of the right shape: the 'no connection' edge."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halves the resolution without losing alternate pixels: two 1 x 1 stride-2 convs, one offset by a pixel."""

    def __init__(self, channels: int, affine: bool):
        super().__init__()
        half = channels // 2
        self.relu = nn.ReLU(inplace=False)
        self.conv_even = nn.Conv2d(channels, half, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(channels, channels - half, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # Pad one row and column at the end so the offset branch has the same output size for odd sizes.
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_even(x), self.conv_odd(shifted)], dim=1))


def _relu_dw_pw_bn(channels: int, kernel: int, stride: int, dilation: int, affine: bool) -> list[nn.Module]:
    padding = dilation * (kernel - 1) // 2
    return [
        nn.ReLU(inplace=False),
        nn.Conv2d(channels, channels, kernel, stride=stride, padding=padding, dilation=dilation,
                  groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels, affine=affine),
    ]


def sep_conv(kernel: int) -> Callable[..., nn.Module]:
    def factory(channels: int, stride: int, affine: bool, *, pool_bn: bool = False) -> nn.Module:
        return nn.Sequential(*_relu_dw_pw_bn(channels, kernel, stride, 1, affine),
                             *_relu_dw_pw_bn(channels, kernel, 1, 1, affine))
    return factory


def dil_conv(kernel: int) -> Callable[..., nn.Module]:
    def factory(channels: int, stride: int, affine: bool, *, pool_bn: bool = False) -> nn.Module:
        return nn.Sequential(*_relu_dw_pw_bn(channels, kernel, stride, 2, affine))
    return factory


def pool(kind: str) -> Callable[..., nn.Module]:
    def factory(channels: int, stride: int, affine: bool, *, pool_bn: bool = False) -> nn.Module:
        if kind == "max":
            layer: nn.Module = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            layer = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        return nn.Sequential(layer, nn.BatchNorm2d(channels, affine=affine)) if pool_bn else layer
    return factory


def skip_connect(channels: int, stride: int, affine: bool, *, pool_bn: bool = False) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, affine)


def none(channels: int, stride: int, affine: bool, *, pool_bn: bool = False) -> nn.Module:
    return Zero(stride)


OPERATIONS: dict[str, Callable[..., nn.Module]] = {
    "none": none,
    "max_pool_3x3": pool("max"),
    "avg_pool_3x3": pool("avg"),
    "skip_connect": skip_connect,
    "sep_conv_3x3": sep_conv(3),
    "sep_conv_5x5": sep_conv(5),
    "dil_conv_3x3": dil_conv(3),
    "dil_conv_5x5": dil_conv(5),
}

assert list(OPERATIONS) == PRIMITIVES
