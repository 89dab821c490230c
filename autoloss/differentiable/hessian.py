"""The largest eigenvalue of a loss's Hessian (R-DARTS's and MS-DARTS's stability measure).

R-DARTS and MS-DARTS track the largest (algebraic) eigenvalue of the Hessian of the validation loss
in the architecture parameters. With the cell's 112 alphas the full Hessian is cheap: one
double-backward pass per row (batched with ``is_grads_batched`` where autograd's vmap supports the
model, row by row otherwise), then ``torch.linalg.eigvalsh`` of its symmetric part in float64, exact
up to rounding. :func:`largest_eigenvalue` is what the search logs.

:func:`dominant_eigenvalue` is the power iteration on Hessian-vector products, for parameter sets
too large for a full Hessian: it converges to the eigenvalue of largest *magnitude*, returned with
its sign, which is the largest eigenvalue only where the Hessian is positive semidefinite.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch


def hessian_matrix(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], *,
                   chunk: int = 16) -> torch.Tensor:
    """The full Hessian of ``loss_fn()`` in ``params`` (flattened and concatenated in order): n x n.

    Rows come ``chunk`` at a time from one batched double-backward pass (memory grows with ``chunk``),
    or one at a time where autograd cannot batch the model's operations."""
    params = list(params)
    if not params:
        raise ValueError("hessian_matrix needs parameters")
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    flat = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])
    n = flat.numel()
    if not flat.requires_grad:  # the loss is at most linear in params: the Hessian is zero
        return torch.zeros(n, n, dtype=flat.dtype, device=flat.device)
    basis = torch.eye(n, dtype=flat.dtype, device=flat.device)

    def rows(vectors: torch.Tensor, batched: bool) -> torch.Tensor:
        products = torch.autograd.grad(flat, params, grad_outputs=vectors, retain_graph=True,
                                       allow_unused=True, is_grads_batched=batched)
        count = len(vectors) if batched else 1
        return torch.cat([torch.zeros(count, p.numel(), dtype=p.dtype, device=p.device) if r is None
                          else r.reshape(count, -1) for p, r in zip(params, products)], dim=1)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vmap's "no batching rule, falling back" performance notes
            return torch.cat([rows(basis[i:i + chunk], True) for i in range(0, n, max(1, chunk))])
    except RuntimeError:  # an operation autograd cannot vmap over: one row at a time
        return torch.cat([rows(row, False) for row in basis])


def largest_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]) -> float:
    """The largest (algebraic) eigenvalue of the Hessian of ``loss_fn()`` in ``params``, exact: the
    full Hessian, symmetrised, by ``eigvalsh`` in float64."""
    hessian = hessian_matrix(loss_fn, params).detach().to(torch.float64)
    hessian = (hessian + hessian.T) / 2
    return float(torch.linalg.eigvalsh(hessian).max())


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
