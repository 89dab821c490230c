"""The dominant eigenvalue of a loss's Hessian (R-DARTS's and MS-DARTS's stability measure).

Power iteration on exact Hessian-vector products (double backward): the gradient is built once with
its graph, and each product is ``d/dp (g . v)``. Power iteration converges to the eigenvalue of the
largest magnitude; it is returned with its sign (at a minimum the Hessian is positive semidefinite
and that is the largest eigenvalue, which R-DARTS reports; a negative value says the largest
magnitude belongs to a negative direction).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def dominant_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], *,
                        iterations: int = 100, tol: float = 1e-4,
                        generator: torch.Generator | None = None) -> float:
    """The signed eigenvalue of largest magnitude of the Hessian of ``loss_fn()`` in ``params``.

    Stops after ``iterations`` products or when the Rayleigh quotient changes by less than
    ``tol * |eigenvalue|``. The start vector is drawn from ``generator`` (CPU).
    """
    params = list(params)
    if not params or iterations < 1:
        raise ValueError("dominant_eigenvalue needs parameters and at least one iteration")
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    if not any(g is not None and g.requires_grad for g in grads):
        return 0.0  # the loss is at most linear in params: the Hessian is zero
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    vector = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    vector = _normalised(vector)
    eigenvalue = 0.0
    for i in range(iterations):
        product = _hessian_vector(grads, params, vector)
        estimate = float(sum((v * hv).sum() for v, hv in zip(vector, product)))
        norm = _norm(product)
        if norm == 0.0:
            return 0.0
        vector = [hv / norm for hv in product]
        if i > 0 and abs(estimate - eigenvalue) <= tol * abs(estimate):
            return estimate
        eigenvalue = estimate
    return eigenvalue


def _hessian_vector(grads, params, vector) -> list[torch.Tensor]:
    pairs = [(g, v) for g, v in zip(grads, vector) if g.requires_grad]
    products = torch.autograd.grad([g for g, _ in pairs], params, grad_outputs=[v for _, v in pairs],
                                   retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if hv is None else hv.detach() for p, hv in zip(params, products)]


def _norm(tensors) -> float:
    return float(torch.sqrt(sum((t * t).sum() for t in tensors)))


def _normalised(tensors) -> list[torch.Tensor]:
    norm = _norm(tensors)
    return [t / norm for t in tensors]
