"""A DiMP-style target classifier with PrDiMP's KL objective, written for small maps.

Shapes: ``I`` frames per sequence, ``S`` sequences, ``D`` feature channels, ``H x W`` map cells,
filters ``[S, D, k, k]`` (k odd, so scores keep the map's size). Positions on the map are in cell
units: cell ``j`` covers crop pixels ``[j * stride, (j + 1) * stride)`` and its centre is ``j``, so a
crop pixel ``x`` sits at ``x / stride - 0.5``.

- the filter initialiser: a 3x3 conv on the features, RoIAlign (mmcv, runs on CPU) of each train
  frame's box to ``k x k``, averaged over the train frames (DiMP's FilterInitializerLinear);
- the optimiser: PrDiMP's steepest descent on ``sum_i w_i KL_i + reg / 2 ||f||^2``, with the step
  length of the Newton (Gauss) quadratic model along the gradient, ``alpha = g.g / (g H g)``, times a
  learnt step factor; the filter regularisation is learnt too;
- the scores: correlation of the test features with the filter;
- the label: a Gaussian density at the target centre, normalised to mass 1 over the map; the loss
  PrDiMP's KL on a grid, ``logsumexp(s) + log(a) - a sum(s p)`` with cell area ``a``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def filter_patches(feat: torch.Tensor, size: int) -> torch.Tensor:
    """The ``k x k`` neighbourhood of every cell of every frame, ``[S, D * k * k, I * H * W]`` (zero padded).

    Laid out once per optimisation so that correlation and its transpose are plain batched matmuls.
    """
    images, sequences, dim, height, width = feat.shape
    patches = F.unfold(feat.reshape(images * sequences, dim, height, width), size, padding=size // 2)
    patches = patches.reshape(images, sequences, dim * size * size, height * width).permute(1, 2, 0, 3)
    return patches.reshape(sequences, dim * size * size, images * height * width)


def correlate(patches: torch.Tensor, filters: torch.Tensor, map_size: tuple[int, int]) -> torch.Tensor:
    """Scores ``[I, S, H, W]`` from ``filter_patches`` and filters ``[S, D, k, k]``."""
    sequences = filters.shape[0]
    height, width = map_size
    scores = torch.bmm(filters.reshape(sequences, 1, -1), patches)
    return scores.reshape(sequences, -1, height, width).transpose(0, 1)


def correlate_transpose(patches: torch.Tensor, residual: torch.Tensor, filter_shape: torch.Size) -> torch.Tensor:
    """The transpose of ``correlate``: d/df of ``sum(residual * correlate(patches, f))`` -> ``[S, D, k, k]``."""
    flat = residual.transpose(0, 1).reshape(residual.shape[1], -1, 1)
    return torch.bmm(patches, flat).reshape(filter_shape)


def apply_filter(feat: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Correlate ``feat [I, S, D, H, W]`` with ``filters [S, D, k, k]`` -> scores ``[I, S, H, W]``."""
    return correlate(filter_patches(feat, filters.shape[-1]), filters, feat.shape[-2:])


def filter_gradient(feat: torch.Tensor, residual: torch.Tensor, size: int) -> torch.Tensor:
    """The transpose of ``apply_filter``: d/df of ``sum(residual * apply_filter(feat, f))`` -> ``[S, D, k, k]``."""
    shape = torch.Size([feat.shape[1], feat.shape[2], size, size])
    return correlate_transpose(filter_patches(feat, size), residual, shape)


def crop_to_cells(xy: torch.Tensor, stride: int) -> torch.Tensor:
    """Crop pixel coordinates -> map coordinates in cell units (cell centres at integers)."""
    return xy / stride - 0.5


def cells_to_crop(uv: torch.Tensor, stride: int) -> torch.Tensor:
    """Map coordinates in cell units -> crop pixel coordinates (inverse of ``crop_to_cells``)."""
    return (uv + 0.5) * stride


def gaussian_label_density(centres: torch.Tensor, map_size: tuple[int, int], sigma: float) -> torch.Tensor:
    """A Gaussian at each centre ``[..., 2]`` (x, y in cells) on an ``H x W`` grid, mass 1 -> ``[..., H, W]``."""
    height, width = map_size
    ys = torch.arange(height, dtype=centres.dtype, device=centres.device)
    xs = torch.arange(width, dtype=centres.dtype, device=centres.device)
    dx = xs - centres[..., 0:1]
    dy = ys - centres[..., 1:2]
    gauss = torch.exp(-(dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / (2 * sigma**2))
    return gauss / gauss.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-12)


def kl_grid_loss(scores: torch.Tensor, density: torch.Tensor, cell_area: float = 1.0) -> torch.Tensor:
    """PrDiMP's KL of the score distribution to a label density on a grid, per map ``[...]``.

    ``density`` integrates to 1 (``cell_area * density.sum() == 1``); the scores are unnormalised
    log densities. Equals ``KL(p || softmax(s))`` up to the label's entropy.
    """
    flat_scores = scores.flatten(-2)
    correlation = cell_area * (flat_scores * density.flatten(-2)).sum(-1)
    return torch.logsumexp(flat_scores, dim=-1) + math.log(cell_area) - correlation


class InstanceL2Norm(nn.Module):
    """Scale each map so that its mean square is ``scale ** 2`` (DiMP's InstanceL2Norm)."""

    def __init__(self, scale: float, eps: float = 1e-5):
        super().__init__()
        self.scale = scale
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        count = x.shape[1] * x.shape[2] * x.shape[3]
        energy = (x * x).sum(dim=(1, 2, 3), keepdim=True)
        return x * (self.scale * torch.sqrt(count / (energy + self.eps)))


class FilterInitializer(nn.Module):
    """A conv on the features, RoIAlign of each train box to ``k x k``, the mean over train frames."""

    def __init__(self, dim: int, filter_size: int, stride: int):
        super().__init__()
        from mmcv.ops import RoIAlign

        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.pool = RoIAlign((filter_size, filter_size), spatial_scale=1.0 / stride, sampling_ratio=2, aligned=True)

    def forward(self, feat: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        images, sequences = feat.shape[:2]
        maps = self.conv(feat.flatten(0, 1))
        xywh = boxes.reshape(-1, 4).to(maps.dtype)
        index = torch.arange(xywh.shape[0], dtype=maps.dtype, device=maps.device)[:, None]
        rois = torch.cat([index, xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        pooled = self.pool(maps, rois)
        return pooled.reshape(images, sequences, *pooled.shape[1:]).mean(dim=0)


class KLSteepestDescent(nn.Module):
    """PrDiMP's filter optimiser: steepest descent on the regularised KL with the Newton step length."""

    def __init__(self, init_step: float = 1.0, init_reg: float = 0.05, min_reg: float = 1e-3):
        super().__init__()
        self.log_step = nn.Parameter(torch.tensor(math.log(init_step)))
        self.reg = nn.Parameter(torch.tensor(init_reg))
        self.min_reg = min_reg

    def regularisation(self) -> torch.Tensor:
        return (self.reg * self.reg).clamp(min=self.min_reg**2)

    def objective(self, filters: torch.Tensor, feat: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
        """Per sequence ``[S]``: mean KL over the frames plus ``reg / 2 ||f||^2``."""
        kl = kl_grid_loss(apply_filter(feat, filters), density).mean(dim=0)
        return kl + 0.5 * self.regularisation() * (filters * filters).sum(dim=(1, 2, 3))

    def step(self, filters: torch.Tensor, feat: torch.Tensor, density: torch.Tensor, patches: torch.Tensor | None = None) -> torch.Tensor:
        """One steepest-descent step on ``objective`` (each frame weighted 1 / I)."""
        images, sequences = feat.shape[:2]
        map_size = feat.shape[-2:]
        if patches is None:
            patches = filter_patches(feat, filters.shape[-1])
        reg = self.regularisation()
        weight = 1.0 / images
        scores = correlate(patches, filters, map_size)
        prob = torch.softmax(scores.flatten(-2), dim=-1).reshape(scores.shape)
        gradient = correlate_transpose(patches, weight * (prob - density), filters.shape) + reg * filters
        direction_scores = correlate(patches, gradient, map_size)
        weighted = prob * direction_scores
        hessian_direction = weighted - prob * weighted.sum(dim=(-2, -1), keepdim=True)
        curvature = weight * (direction_scores * hessian_direction).sum(dim=(-2, -1)).clamp(min=0).sum(dim=0)
        squared = (gradient * gradient).sum(dim=(1, 2, 3))
        alpha = squared / (curvature + reg * squared).clamp(min=1e-8)
        return filters - (torch.exp(self.log_step) * alpha).reshape(sequences, 1, 1, 1) * gradient

    def forward(self, filters: torch.Tensor, feat: torch.Tensor, density: torch.Tensor, iterations: int) -> list[torch.Tensor]:
        """The filter after 0, 1, ..., ``iterations`` steps."""
        patches = filter_patches(feat, filters.shape[-1])
        iterates = [filters]
        for _ in range(iterations):
            iterates.append(self.step(iterates[-1], feat, density, patches))
        return iterates


class TargetClassifier(nn.Module):
    """Features -> (initial filter from the train boxes, steepest descent) -> scores on other frames."""

    def __init__(self, dim: int, filter_size: int, stride: int, init_step: float = 1.0, init_reg: float = 0.05):
        super().__init__()
        if filter_size % 2 == 0:
            raise ValueError("the filter size must be odd so that scores keep the map's size")
        self.filter_size = filter_size
        self.stride = stride
        self.norm = InstanceL2Norm(math.sqrt(1.0 / (dim * filter_size * filter_size)))
        self.initializer = FilterInitializer(dim, filter_size, stride)
        self.optimizer = KLSteepestDescent(init_step, init_reg)

    def features(self, neck_output: torch.Tensor) -> torch.Tensor:
        return self.norm(neck_output)

    def train_filter(self, feat: torch.Tensor, boxes: torch.Tensor, density: torch.Tensor, iterations: int) -> list[torch.Tensor]:
        """Filters ``[S, D, k, k]`` after 0..iterations steps, from train features ``[I, S, D, H, W]``."""
        return self.optimizer(self.initializer(feat, boxes), feat, density, iterations)

    def forward(
        self, train_feat: torch.Tensor, test_feat: torch.Tensor, train_boxes: torch.Tensor, train_density: torch.Tensor, iterations: int
    ) -> list[torch.Tensor]:
        """Test scores ``[I_test, S, H, W]`` for each filter iterate."""
        patches = filter_patches(test_feat, self.filter_size)
        filters = self.train_filter(train_feat, train_boxes, train_density, iterations)
        return [correlate(patches, f, test_feat.shape[-2:]) for f in filters]


def iterate_weights(count: int, initial: float = 0.25, intermediate: float = 1.0, final: float = 0.25) -> list[float]:
    """PrDiMP's loss weights over the filter iterates: 0.25 initial, 1 spread over the intermediate ones, 0.25 final."""
    if count == 1:
        return [initial + final]
    if count == 2:
        return [initial, final]
    middle = intermediate / (count - 2)
    return [initial] + [middle] * (count - 2) + [final]


def classifier_loss(test_scores: list[torch.Tensor], test_density: torch.Tensor) -> torch.Tensor:
    """The weighted KL over the filter iterates, averaged over test frames and sequences."""
    weights = iterate_weights(len(test_scores))
    return sum(w * kl_grid_loss(s, test_density).mean() for w, s in zip(weights, test_scores))
