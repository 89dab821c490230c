"""MS-DARTS's mean shift of the architecture weights on the probability simplex.

Each row of a ``[edges, operations]`` tensor is a point of the simplex (a softmax of alpha). One
iteration draws ``N`` samples uniformly in the box ``c + U(-eps, eps)``, projects them onto the
simplex, weighs each by ``softmax(loss / temperature)`` (worse samples weigh more) times the Gaussian
kernel ``exp(-||c - x||^2 / 2h^2)`` (the norm over the whole tensor), and moves ``c`` to the weighted
mean. A convex combination of simplex points stays on the simplex; it is projected once more against
rounding. The released code clips samples to [0, 1] and renormalises each row, and stores the samples
before that; here the projection is the exact Euclidean one and the samples returned are the
projected points the losses were measured at.
"""

from __future__ import annotations

from typing import Callable

import torch


def project_to_simplex(x: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of every row (last dimension) onto the probability simplex.

    ``argmin_p ||p - x||`` over ``p >= 0, sum(p) = 1``: ``p = max(x - theta, 0)`` with the threshold
    ``theta`` found from the sorted row (Held, Wolfe and Crowder 1974; Duchi et al. 2008).
    """
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError("project_to_simplex needs at least one entry per row")
    ordered, _ = torch.sort(x, dim=-1, descending=True)
    excess = ordered.cumsum(dim=-1) - 1.0
    counts = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
    support = (ordered - excess / counts) > 0
    # The support is a prefix of the sorted row; its size rho is at least 1.
    rho = support.to(torch.int64).sum(dim=-1, keepdim=True).clamp(min=1)
    theta = excess.gather(-1, rho - 1) / rho.to(x.dtype)
    return torch.clamp(x - theta, min=0.0)


def mean_shift(center: torch.Tensor, loss_fn: Callable[[torch.Tensor], float], *, eps: float = 0.25,
               h: float = 1.0, n_samples: int = 3, iterations: int = 2, temperature: float = 1.0,
               generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shift ``center`` (rows on the simplex) towards the loss-weighted kernel mean of nearby samples.

    ``loss_fn(weights) -> float`` measures one sample (the search: the loss on an architecture-split
    batch with the supernet mixing by ``weights``). Returns ``(shifted, samples, weights)``: the final
    centre, the projected samples ``[iterations, n_samples, *center.shape]`` and their normalised
    weights ``[iterations, n_samples]``. Random numbers come from ``generator`` (on the CPU).
    """
    if eps < 0 or h <= 0 or temperature <= 0 or n_samples < 1 or iterations < 0:
        raise ValueError("mean_shift needs eps >= 0, h > 0, temperature > 0, n_samples >= 1, iterations >= 0")
    c = project_to_simplex(center.detach().to(torch.float64))
    all_samples, all_weights = [], []
    for _ in range(iterations):
        noise = torch.rand((n_samples, *c.shape), generator=generator, dtype=torch.float64) * (2 * eps) - eps
        samples = project_to_simplex(c.unsqueeze(0) + noise.to(c.device))
        losses = torch.tensor([float(loss_fn(s.to(center.dtype))) for s in samples], dtype=torch.float64,
                              device=c.device)
        squared = ((samples - c.unsqueeze(0)) ** 2).flatten(1).sum(dim=1)
        # softmax(loss / T) * kernel, normalised: one softmax over the summed logits (stable).
        weights = torch.softmax(losses / temperature - squared / (2.0 * h * h), dim=0)
        c = project_to_simplex((weights.view(-1, *[1] * c.dim()) * samples).sum(dim=0))
        all_samples.append(samples)
        all_weights.append(weights)
    samples_out = (torch.stack(all_samples) if all_samples
                   else torch.empty((0, n_samples, *c.shape), dtype=torch.float64, device=c.device))
    weights_out = (torch.stack(all_weights) if all_weights
                   else torch.empty((0, n_samples), dtype=torch.float64, device=c.device))
    return c.to(center.dtype), samples_out.to(center.dtype), weights_out.to(center.dtype)


def eps_schedule(eps: float, epoch: int, epochs: int) -> float:
    """The sampling radius at ``epoch`` (0-based) of ``epochs``: ``eps/10 + 0.9 eps epoch/epochs`` (released code)."""
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    fraction = min(max(epoch, 0), epochs) / epochs
    return eps / 10.0 + 0.9 * eps * fraction
