"""The discrete cell as a module (its parameter and multiply-add counts: :mod:`autoloss.cell.cost`).

``Cell(genotype, channels)`` maps two ``[B, C, H, W]`` inputs (the tracker's adapted Block3 and
Block4 features, at the same stride) to the concatenation of its four nodes, ``[B, 4C, H, W]``.
Node k sums its two edges, each an operation of :data:`OPERATIONS` at stride 1 on an earlier
state. ``none`` edges build nothing; a node whose both edges are ``none`` outputs zeros.

Drop-path (``drop_path_prob``, a plain attribute a schedule may change between epochs): in training,
each edge other than ``skip_connect`` and ``none`` is zeroed per sample with that probability and
rescaled by 1 / (1 - p), as in DARTS's evaluation networks.
"""

from __future__ import annotations

import torch
from torch import nn

from autoloss.cell.cost import count_flops, count_parameters  # noqa: F401  (the cell's counts, torch-free)
from autoloss.cell.genotype import NODES, Genotype, check
from autoloss.cell.operations import OPERATIONS


def drop_path(x: torch.Tensor, prob: float) -> torch.Tensor:
    """Zero whole samples with probability ``prob``; rescale the kept ones."""
    keep = 1.0 - prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class Cell(nn.Module):
    """The DARTS cell of a genotype, at stride 1, without input preprocessing."""

    def __init__(self, genotype: Genotype, channels: int, affine: bool = True, drop_path_prob: float = 0.0):
        super().__init__()
        check(genotype)
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.genotype = genotype
        self.channels = channels
        self.out_channels = NODES * channels
        self.drop_path_prob = drop_path_prob
        self.edges = nn.ModuleList()
        self.edge_specs: list[tuple[int, str, int]] = []  # (node, operation, input state), aligned with edges
        self._wiring: list[list[tuple[int, int, bool]]] = []  # per node: (input state, edge index, droppable)
        for k in range(NODES):
            node = []
            for op, source in genotype.node(k):
                if op == "none":
                    continue
                self.edges.append(OPERATIONS[op](channels, 1, affine))
                self.edge_specs.append((k, op, source))
                node.append((source, len(self.edges) - 1, op != "skip_connect"))
            self._wiring.append(node)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        if s0.shape != s1.shape or s0.dim() != 4 or s0.shape[1] != self.channels:
            raise ValueError(f"Cell expects two [B, {self.channels}, H, W] inputs of one shape, "
                             f"got {tuple(s0.shape)} and {tuple(s1.shape)}")
        states = [s0, s1]
        dropping = self.training and self.drop_path_prob > 0
        for node in self._wiring:
            total = None
            for source, index, droppable in node:
                h = self.edges[index](states[source])
                if dropping and droppable:
                    h = drop_path(h, self.drop_path_prob)
                total = h if total is None else total + h
            states.append(torch.zeros_like(s0) if total is None else total)
        return torch.cat(states[2:], dim=1)
