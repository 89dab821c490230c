"""What a cell costs, counted from its genotype without building it (and without torch).

Parameters are those of ``Cell(genotype, channels, affine)``; multiply-adds those of its convolutions
at stride 1 with 'same' padding: a depthwise k x k conv costs k^2 * C per output pixel, a pointwise
conv C^2 (padded taps included, the usual convention); pools, additions, BN and ReLU are not counted.
"""

from __future__ import annotations

from autoloss.cell.genotype import Genotype, check


def kernel_of(op: str) -> int:
    """The kernel size of a conv operation (3 or 5), read from its name."""
    return int(op.rsplit("_", 1)[1].split("x")[0])


def _edge_parameters(op: str, channels: int, affine: bool) -> int:
    bn = 2 * channels if affine else 0
    if op.startswith("sep_conv"):
        return 2 * (kernel_of(op) ** 2 * channels + channels * channels + bn)
    if op.startswith("dil_conv"):
        return kernel_of(op) ** 2 * channels + channels * channels + bn
    return 0  # none, skip (identity at stride 1), pools (no BN in a discrete cell)


def _edge_macs(op: str, channels: int, pixels: int) -> int:
    if op.startswith("sep_conv"):
        return 2 * (kernel_of(op) ** 2 * channels + channels * channels) * pixels
    if op.startswith("dil_conv"):
        return (kernel_of(op) ** 2 * channels + channels * channels) * pixels
    return 0


def count_parameters(genotype: Genotype, channels: int, affine: bool = True) -> int:
    """Learnable parameters of ``Cell(genotype, channels, affine)``, without building it."""
    check(genotype)
    return sum(_edge_parameters(op, channels, affine) for op, _ in genotype.normal)


def count_flops(genotype: Genotype, channels: int, height: int, width: int) -> int:
    """Multiply-adds of the cell's convolutions on ``height x width`` maps (see the module docstring)."""
    check(genotype)
    return sum(_edge_macs(op, channels, height * width) for op, _ in genotype.normal)
