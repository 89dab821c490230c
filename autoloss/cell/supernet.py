"""The DARTS supernet of the tracking cell: every edge a softmax-weighted mixture of the 8 operations.

``SuperCell(channels)`` has the 14 edges of a 4-node cell (node k reads states 0..k+1, rows in that
order, see :mod:`autoloss.differentiable.derive`); ``forward(s0, s1, weights)`` mixes edge ``e``'s
operations by ``weights[e]`` and concatenates the 4 nodes (``[B, 4C, H, W]``). As in DARTS's search
network, BN has no affine parameters and pools are followed by a BN. Each ``skip_connect`` is followed
by a :class:`SkipDropout` (CHASE's operation-level dropout), whose rate ``set_skip_dropout`` sets on
the modules themselves.

``ArchitectureParameters`` holds alpha (``[14, 8]``) as a registered parameter, so it is saved in the
state dict with the weights; ``CellSupernet`` is a SuperCell with its alpha, the model interface the
architect and the search loop use (``arch_parameters``, ``weight_parameters``, ``mixing_weights``,
``fixed_mixing_weights``). A larger model embedding a supernet can implement that interface with
:func:`architecture_parameters` and :func:`weight_parameters`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from autoloss.cell.operations import OPERATIONS, PRIMITIVES


class SkipDropout(nn.Dropout):
    """The dropout after a supernet's skip connection (a subclass so that only these are scheduled)."""


class MixedOp(nn.Module):
    """One edge: ``sum_o weights[o] * o(x)`` over the operations of ``primitives``."""

    def __init__(self, channels: int, stride: int = 1, primitives: list[str] = PRIMITIVES,
                 skip_dropout: float = 0.0):
        super().__init__()
        self.primitives = list(primitives)
        self.ops = nn.ModuleList()
        for name in self.primitives:
            op = OPERATIONS[name](channels, stride, False, pool_bn=True)
            if name == "skip_connect":
                op = nn.Sequential(op, SkipDropout(skip_dropout))
            self.ops.append(op)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        total = None
        for weight, op in zip(weights, self.ops):
            term = weight * op(x)
            total = term if total is None else total + term
        return total


def edge_count(nodes: int) -> int:
    """Edges of a cell of ``nodes`` intermediate nodes with two inputs: 2 + 3 + ... + (nodes + 1)."""
    return sum(k + 2 for k in range(nodes))


class SuperCell(nn.Module):
    """The cell's 14 mixed edges at stride 1; inputs are two ``[B, C, H, W]`` maps of one shape."""

    def __init__(self, channels: int, nodes: int = 4, primitives: list[str] = PRIMITIVES,
                 skip_dropout: float = 0.0):
        super().__init__()
        if channels < 1 or nodes < 1:
            raise ValueError(f"channels and nodes must be positive, got {channels} and {nodes}")
        self.channels, self.nodes, self.primitives = channels, nodes, list(primitives)
        self.out_channels = nodes * channels
        self.edges = nn.ModuleList(MixedOp(channels, 1, primitives, skip_dropout)
                                   for _ in range(edge_count(nodes)))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        expected = (len(self.edges), len(self.primitives))
        if tuple(weights.shape) != expected:
            raise ValueError(f"SuperCell expects {expected[0]} x {expected[1]} weights, got {tuple(weights.shape)}")
        if s0.shape != s1.shape or s0.dim() != 4 or s0.shape[1] != self.channels:
            raise ValueError(f"SuperCell expects two [B, {self.channels}, H, W] inputs of one shape, "
                             f"got {tuple(s0.shape)} and {tuple(s1.shape)}")
        states = [s0, s1]
        row = 0
        for _ in range(self.nodes):
            node = None
            for state in states:
                term = self.edges[row](state, weights[row])
                node = term if node is None else node + term
                row += 1
            states.append(node)
        return torch.cat(states[2:], dim=1)


class ArchitectureParameters(nn.Module):
    """alpha, ``[edges, operations]``, initialised as DARTS (``1e-3 * N(0, 1)``); ``weights()`` its row softmax.

    Inside ``fixed(weights)``, ``weights()`` returns the given mixing weights instead (MS-DARTS's
    weight step at a shifted point; a derived cell's loss with one-hot weights) and alpha is untouched.
    """

    def __init__(self, edges: int = 14, operations: int = len(PRIMITIVES), init_scale: float = 1e-3,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.alpha = nn.Parameter(init_scale * torch.randn(edges, operations, generator=generator))
        self._fixed: torch.Tensor | None = None

    def weights(self) -> torch.Tensor:
        if self._fixed is not None:
            return self._fixed
        return torch.softmax(self.alpha, dim=-1)

    @contextmanager
    def fixed(self, weights: torch.Tensor) -> Iterator[None]:
        if tuple(weights.shape) != tuple(self.alpha.shape):
            raise ValueError(f"fixed weights must be {tuple(self.alpha.shape)}, got {tuple(weights.shape)}")
        previous, self._fixed = self._fixed, weights.detach().to(self.alpha)
        try:
            yield
        finally:
            self._fixed = previous


class CellSupernet(nn.Module):
    """A SuperCell and its alpha: ``forward(s0, s1)`` mixes by ``softmax(alpha)`` (or the fixed weights)."""

    def __init__(self, channels: int, nodes: int = 4, primitives: list[str] = PRIMITIVES,
                 skip_dropout: float = 0.0, generator: torch.Generator | None = None):
        super().__init__()
        self.cell = SuperCell(channels, nodes, primitives, skip_dropout)
        self.architecture = ArchitectureParameters(edge_count(nodes), len(primitives), generator=generator)
        self.out_channels = self.cell.out_channels

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        return self.cell(s0, s1, self.architecture.weights())

    def arch_parameters(self) -> list[nn.Parameter]:
        return architecture_parameters(self)

    def weight_parameters(self) -> list[nn.Parameter]:
        return weight_parameters(self)

    def mixing_weights(self) -> torch.Tensor:
        """The current mixing weights (``softmax(alpha)`` outside ``fixed_mixing_weights``)."""
        return self.architecture.weights()

    def fixed_mixing_weights(self, weights: torch.Tensor):
        """Context manager: the supernet mixes by ``weights`` inside it."""
        return self.architecture.fixed(weights)


def architecture_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of every ArchitectureParameters inside ``module`` (each once)."""
    found, seen = [], set()
    for sub in module.modules():
        if isinstance(sub, ArchitectureParameters):
            for p in sub.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    found.append(p)
    return found


def weight_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``module`` that is not an architecture parameter."""
    arch = {id(p) for p in architecture_parameters(module)}
    return [p for p in module.parameters() if id(p) not in arch]


def set_skip_dropout(module: nn.Module, p: float) -> int:
    """Set the rate of every SkipDropout inside ``module`` to ``p``; returns how many were set."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"a dropout rate must be in [0, 1), got {p}")
    count = 0
    for sub in module.modules():
        if isinstance(sub, SkipDropout):
            sub.p = float(p)
            count += 1
    return count
