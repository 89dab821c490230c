"""The DARTS architect: one update of the architecture parameters alpha per call, first or second order.

The model is any ``nn.Module`` with ``arch_parameters()`` and ``weight_parameters()``; the loss is a
function ``loss_fn(model, batch) -> scalar tensor``. The weights ``w`` are the parameters of the
weight optimiser (exactly what its ``step`` would move).

First order: the gradient of the validation loss at the current weights, ``dL_val(w, a)/da``.

Second order (DARTS, eq. 7-8): the gradient of ``L_val(w'(a), a)`` where ``w'(a)`` is one *virtual*
step of the weight optimiser actually used, computed from its real state without changing it::

    dL_val(w', a)/da = dL_val/da |_(w', a)  +  (dg/da)^T J^T v,     v = dL_val/dw' |_(w', a)

with ``g = dL_train(w, a)/dw`` and ``J = dw'/dg`` (diagonal: every optimiser here updates element by
element). ``(dg/da)^T u`` is the mixed second derivative ``d/da (g . u)``, by the finite difference of
DARTS: ``(dL_train(w + R u, a)/da - dL_train(w - R u, a)/da) / 2R`` with ``R = r / ||u||`` (r = 0.01).

- SGD (momentum mu, dampening d, weight decay wd, Nesterov): ``w' = w - lr (mu buf + (1 - d)(g + wd w))``
  (``w - lr (g + wd w)`` on the first step, as torch does), so ``J = -lr (1 - d)`` (``(1 - d)(1 + mu)``
  with Nesterov): DARTS's ``-xi * d2L_train/dw da . v``, exact up to the finite difference.
- Adam / AdamW: ``w'`` is torch's Adam update from the real ``exp_avg``, ``exp_avg_sq``, ``step``,
  betas, eps, weight decay (L2 or decoupled), amsgrad. Its exact Jacobian in ``g`` also runs through
  the second moment ``v``; by default (``adam_jacobian="frozen"``) the architect differentiates the
  step with ``v`` frozen at its updated value (treated as a constant preconditioner), i.e.
  ``J = -lr (1 - b1) / (1 - b1^t) / (sqrt(v' / (1 - b2^t)) + eps)`` per element: the virtual step is a
  preconditioned gradient step and the vector of the Hessian-vector product is that preconditioner
  times ``v``. Rationale: one unrolled step stands for the response of the trained weights to alpha,
  ``-H_ww^-1 H_wa``; Adam's denominator is its running curvature-scale estimate, while the exact
  derivative through ``v`` cancels most of the response on the first steps (where Adam moves by
  ``lr * sign(g)``, whose derivative is zero almost everywhere). ``adam_jacobian="exact"``
  differentiates through ``v`` too (the true derivative of the virtual step).

The extra forward passes of a step leave the model's buffers (BN running statistics) as they were;
the three passes on the training batch (the virtual step's gradient and the two finite-difference
points) see the same random numbers (the same dropout masks), so the difference measures weights
only. The model's train/eval mode is the caller's business.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from autoloss.differentiable.state import RandomState, cuda_devices, preserved_buffers

LossFn = Callable[[nn.Module, Any], torch.Tensor]

ADAM_JACOBIANS = ("frozen", "exact")


class Architect:
    """Updates ``model.arch_parameters()`` with ``arch_optimizer`` from the validation loss.

    ``order`` 1 or 2; ``r`` the finite-difference scale of DARTS; ``xi`` overrides the virtual step's
    learning rate (default: each group's current ``lr`` of the weight optimiser, as DARTS).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, weight_optimizer: torch.optim.Optimizer,
                 arch_optimizer: torch.optim.Optimizer, *, order: int = 2, r: float = 0.01,
                 adam_jacobian: str = "frozen", xi: float | None = None):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, not {order!r}")
        if adam_jacobian not in ADAM_JACOBIANS:
            raise ValueError(f"adam_jacobian must be one of {ADAM_JACOBIANS}, not {adam_jacobian!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.weight_optimizer = weight_optimizer
        self.arch_optimizer = arch_optimizer
        self.order = order
        self.r = r
        self.adam_jacobian = adam_jacobian
        self.xi = xi
        arch_ids = {id(p) for p in model.arch_parameters()}
        if any(id(p) in arch_ids for group in weight_optimizer.param_groups for p in group["params"]):
            raise ValueError("the weight optimiser holds architecture parameters")
        if order == 2:
            virtual_step_rule(weight_optimizer)  # refuse an unsupported optimiser now, not mid-search

    def step(self, train_batch: Any, valid_batch: Any, train_grads: Sequence[torch.Tensor | None] | None = None,
             random_start: RandomState | None = None, grad_scale: float = 1.0) -> float:
        """One architecture update; returns the validation loss at the point it was evaluated.

        ``train_grads`` (second order): the weight gradient on ``train_batch`` already computed (with
        the random numbers captured in ``random_start`` before its forward pass), as the gradient the
        weight optimiser is about to step with, scaled by ``grad_scale`` from the raw gradient (a clip,
        held constant); see :meth:`shared_step`.
        """
        grads, loss = self.gradient(train_batch, valid_batch, train_grads, random_start, grad_scale)
        for parameter, grad in zip(self.model.arch_parameters(), grads):
            parameter.grad = grad
        self.arch_optimizer.step()
        return loss

    def gradient(self, train_batch: Any, valid_batch: Any, train_grads: Sequence[torch.Tensor | None] | None = None,
                 random_start: RandomState | None = None, grad_scale: float = 1.0) -> tuple[list[torch.Tensor], float]:
        """The architecture gradient (one tensor per arch parameter) and the validation loss; nothing is updated."""
        with preserved_buffers(self.model):
            if self.order == 1:
                return self._first_order(valid_batch)
            return self._second_order(train_batch, valid_batch, train_grads, random_start, grad_scale)

    def shared_step(self, train_batch: Any, valid_batch: Any, grad_clip: float | None = None) -> tuple[float, float]:
        """Second order: one weight step and one architecture update sharing the weight gradient.

        The training batch's weight gradient at ``(w, alpha)`` (clipped to ``grad_clip`` as the weight
        step clips it) is computed once: the virtual step is built from it, so it *is* the real step
        the weight optimiser then takes (``w' = w_next``), and the architecture gradient is DARTS's
        second-order one at ``(w, alpha)``, as :meth:`step` computes it. One forward and backward pass
        fewer than :meth:`step` followed by a separate weight step; the weight step uses the gradient
        at the architecture before its update (the weight step first, then the architecture's, where
        DARTS orders them the other way round). Returns (training loss, validation loss).
        """
        weights = [p for group in self.weight_optimizer.param_groups for p in group["params"]]
        random_start = RandomState.capture(cuda_devices(weights + list(self.model.arch_parameters())))
        loss = self.loss_fn(self.model, train_batch)  # the weight step's pass: buffers update as in a real step
        grads = _grads_or_none(loss, weights)
        for parameter, grad in zip(weights, grads):
            parameter.grad = grad
        scale = 1.0
        if grad_clip is not None:  # clip_grad_norm_'s factor, held constant in the derivative
            norm = float(nn.utils.clip_grad_norm_([p for p in weights if p.grad is not None], grad_clip))
            scale = min(1.0, grad_clip / (norm + 1e-6))
        valid_loss = self.step(train_batch, valid_batch, [p.grad for p in weights], random_start, scale)
        self.weight_optimizer.step()
        return float(loss.detach()), valid_loss

    def _first_order(self, valid_batch: Any) -> tuple[list[torch.Tensor], float]:
        arch = list(self.model.arch_parameters())
        loss = self.loss_fn(self.model, valid_batch)
        return _grads_or_zeros(loss, arch), float(loss.detach())

    def _second_order(self, train_batch: Any, valid_batch: Any, train_grads=None,
                      random_start: RandomState | None = None, grad_scale: float = 1.0,
                      ) -> tuple[list[torch.Tensor], float]:
        model, arch = self.model, list(self.model.arch_parameters())
        weights = [p for group in self.weight_optimizer.param_groups for p in group["params"]]
        if train_grads is None:
            random_start = RandomState.capture(cuda_devices(weights + arch))
            train_grads = _grads_or_none(self.loss_fn(model, train_batch), weights)
        elif random_start is None:
            raise ValueError("given train_grads, give the random state captured before their forward pass")
        virtual = VirtualStep(self.weight_optimizer, train_grads, adam_jacobian=self.adam_jacobian, xi=self.xi)
        original = [w.detach().clone() for w in weights]

        _assign(weights, virtual.weights)
        valid_loss = self.loss_fn(model, valid_batch)
        valid_grads = _grads_or_zeros(valid_loss, weights + arch)
        _assign(weights, original)
        random_end = RandomState.capture(cuda_devices(weights + arch))

        v, arch_grads = valid_grads[: len(weights)], valid_grads[len(weights):]
        u = virtual.vector_jacobian(v)
        if grad_scale != 1.0:  # the step's gradient is grad_scale times the training loss's
            u = [grad_scale * x for x in u]
        norm = math.sqrt(sum(float((x * x).sum()) for x in u))
        if norm > 0.0:
            radius = self.r / norm
            _assign(weights, [w + radius * x for w, x in zip(original, u)])
            with random_start.replay():
                plus = _grads_or_zeros(self.loss_fn(model, train_batch), arch)
            _assign(weights, [w - radius * x for w, x in zip(original, u)])
            with random_start.replay():
                minus = _grads_or_zeros(self.loss_fn(model, train_batch), arch)
            _assign(weights, original)
            arch_grads = [a + (p - m) / (2.0 * radius) for a, p, m in zip(arch_grads, plus, minus)]
        random_end.restore()
        return arch_grads, float(valid_loss.detach())


class VirtualStep:
    """One step of a weight optimiser computed from its real state, without changing it.

    ``weights``: the stepped values, one tensor per parameter of the optimiser (unchanged where the
    gradient is None, as torch skips those); ``vector_jacobian(v)``: ``J^T v`` with ``J = dw'/dg``
    per element (see the module docstring for Adam's ``frozen`` and ``exact`` Jacobians).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, grads: Sequence[torch.Tensor | None], *,
                 adam_jacobian: str = "frozen", xi: float | None = None):
        rule = virtual_step_rule(optimizer)
        self._leaves: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []
        self._index: list[int] = []
        self.weights: list[torch.Tensor] = []
        grads = iter(grads)
        with torch.enable_grad():
            for group in optimizer.param_groups:
                lr = float(group["lr"]) if xi is None else float(xi)
                for parameter in group["params"]:
                    grad = next(grads)
                    if grad is None:
                        self.weights.append(parameter.detach().clone())
                        continue
                    leaf = grad.detach().clone().requires_grad_(True)
                    state = optimizer.state.get(parameter, {})
                    stepped = rule(parameter.detach(), leaf, state, group, lr, adam_jacobian == "exact")
                    self._index.append(len(self.weights))
                    self._leaves.append(leaf)
                    self._outputs.append(stepped)
                    self.weights.append(stepped.detach())

    def vector_jacobian(self, vectors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``J^T v`` for one vector per parameter (zeros where the parameter had no gradient)."""
        result = [torch.zeros_like(v) for v in vectors]
        if not self._outputs:
            return result
        products = torch.autograd.grad(self._outputs, self._leaves, [vectors[i] for i in self._index],
                                       allow_unused=True)
        for i, product in zip(self._index, products):
            if product is not None:
                result[i] = product
        return result


def virtual_step_rule(optimizer: torch.optim.Optimizer):
    """The per-parameter update function that matches ``optimizer`` (SGD, Adam or AdamW)."""
    if type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
        return functools.partial(_adam_step, decoupled=type(optimizer) is torch.optim.AdamW)
    if type(optimizer) is torch.optim.SGD:
        return _sgd_step
    raise ValueError(f"the second-order architect needs an SGD, Adam or AdamW weight optimiser, "
                     f"not {type(optimizer).__name__}")


def _sgd_step(w, g, state, group, lr, exact):
    if group.get("maximize", False):
        g = -g
    weight_decay, momentum = group.get("weight_decay", 0.0), group.get("momentum", 0.0)
    direction = g + weight_decay * w if weight_decay else g
    if momentum:
        buffer = state.get("momentum_buffer")
        if buffer is None:
            new_buffer = direction
        else:
            new_buffer = momentum * buffer + (1.0 - group.get("dampening", 0.0)) * direction
        direction = direction + momentum * new_buffer if group.get("nesterov", False) else new_buffer
    return w - lr * direction


def _adam_step(w, g, state, group, lr, exact, decoupled: bool = False):
    """Adam's update; ``decoupled``: the optimiser is an AdamW. A recent torch says which decay a group
    uses in ``group["decoupled_weight_decay"]`` (and lets Adam decouple it too); an older one
    has no such key, and there AdamW decouples and Adam adds L2 by class."""
    if group.get("maximize", False):
        g = -g
    beta1, beta2 = (float(b) for b in group["betas"])
    weight_decay, eps = group.get("weight_decay", 0.0), group["eps"]
    step = float(state["step"]) + 1.0 if "step" in state else 1.0
    if group.get("decoupled_weight_decay", decoupled):
        w = w * (1.0 - lr * weight_decay)
    elif weight_decay:
        g = g + weight_decay * w
    zeros = torch.zeros_like(w)
    exp_avg = beta1 * state.get("exp_avg", zeros) + (1.0 - beta1) * g
    g_second = g if exact else g.detach()
    exp_avg_sq = beta2 * state.get("exp_avg_sq", zeros) + (1.0 - beta2) * g_second * g_second
    if group.get("amsgrad", False):
        exp_avg_sq = torch.maximum(state.get("max_exp_avg_sq", zeros), exp_avg_sq)
    denominator = _sqrt_zero_safe(exp_avg_sq) / math.sqrt(1.0 - beta2 ** step) + eps
    return w - (lr / (1.0 - beta1 ** step)) * exp_avg / denominator


def _sqrt_zero_safe(x: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 (not inf * 0 = nan) where x is 0."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def _grads_or_none(loss: torch.Tensor, parameters: list[torch.Tensor]) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, parameters, allow_unused=True))


def _grads_or_zeros(loss: torch.Tensor, parameters: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, parameters, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, grads)]


def _assign(parameters: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for parameter, value in zip(parameters, values):
            parameter.copy_(value)
