"""The math core of differentiable cell search: architect, derivation, mean shift, Hessian, schedules."""

from __future__ import annotations

import copy
import math
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

from autoloss.cell.genotype import Genotype
from autoloss.cell.operations import PRIMITIVES
from autoloss.cell.supernet import CellSupernet, architecture_parameters, set_skip_dropout, weight_parameters
from autoloss.differentiable.architect import Architect, VirtualStep
from autoloss.differentiable.derive import count_skips, derive_genotype, edge_inputs, genotype_weights
from autoloss.differentiable.hessian import dominant_eigenvalue, hessian_matrix, largest_eigenvalue
from autoloss.differentiable.mean_shift import eps_schedule, mean_shift, project_to_simplex
from autoloss.differentiable.schedule import EarlyStopping, arch_warmup, skip_dropout_rate, warmup_epochs
from autoloss.differentiable.search import DifferentiableSearch, SearchOptions

DTYPE = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny tensors, one torch thread


# ------------------------------------------------------------------------------ a quadratic bilevel problem


class Quadratic(nn.Module):
    """L_train = 1/2 w'Aw - w'Ba + 1/2 a'Ea ;  L_val = 1/2 |w - c|^2 + 1/2 a'Da + w'Fa."""

    def __init__(self, n: int = 5, m: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(n, n, generator=g, dtype=DTYPE)
        self.A = q @ q.T + n * torch.eye(n, dtype=DTYPE)
        self.B = torch.randn(n, m, generator=g, dtype=DTYPE)
        e = torch.randn(m, m, generator=g, dtype=DTYPE)
        self.E = e @ e.T
        d = torch.randn(m, m, generator=g, dtype=DTYPE)
        self.D = d @ d.T + torch.eye(m, dtype=DTYPE)
        self.F = 0.3 * torch.randn(n, m, generator=g, dtype=DTYPE)
        self.c = torch.randn(n, generator=g, dtype=DTYPE)
        self.w = nn.Parameter(torch.randn(n, generator=g, dtype=DTYPE))
        self.a = nn.Parameter(torch.randn(m, generator=g, dtype=DTYPE))

    def arch_parameters(self):
        return [self.a]

    def weight_parameters(self):
        return [self.w]

    def train_loss(self, w, a):
        return 0.5 * w @ self.A @ w - w @ self.B @ a + 0.5 * a @ self.E @ a

    def valid_loss(self, w, a):
        return 0.5 * ((w - self.c) ** 2).sum() + 0.5 * a @ self.D @ a + w @ self.F @ a

    def train_grad(self, w, a):
        return self.A @ w - self.B @ a


def quadratic_loss(model: Quadratic, batch: str) -> torch.Tensor:
    return model.train_loss(model.w, model.a) if batch == "train" else model.valid_loss(model.w, model.a)


def hypergradient(model: Quadratic, w_prime: torch.Tensor, dw_da: torch.Tensor) -> torch.Tensor:
    """d L_val(w'(a), a) / da for a virtual step with Jacobian dw'/da = dw_da (n x m)."""
    a = model.a.detach()
    return dw_da.T @ (w_prime - model.c + model.F @ a) + model.D @ a + model.F.T @ w_prime


def real_weight_steps(model: Quadratic, optimizer, steps: int) -> None:
    """Take real optimiser steps on L_train so that the optimiser has a non-trivial state."""
    for _ in range(steps):
        optimizer.zero_grad()
        quadratic_loss(model, "train").backward()
        optimizer.step()


def test_first_order_is_the_validation_gradient_at_the_current_weights():
    model = Quadratic()
    opt_w = torch.optim.SGD([model.w], lr=0.1)
    architect = Architect(model, quadratic_loss, opt_w, torch.optim.SGD([model.a], lr=0.1), order=1)
    grads, loss = architect.gradient("train", "valid")
    w, a = model.w.detach(), model.a.detach()
    assert torch.allclose(grads[0], model.D @ a + model.F.T @ w, atol=1e-12)
    assert loss == pytest.approx(float(model.valid_loss(w, a)))


@pytest.mark.parametrize("momentum,weight_decay,nesterov,warm", [
    (0.0, 0.0, False, 0), (0.9, 3e-3, False, 0), (0.9, 3e-3, False, 3), (0.9, 1e-2, True, 2),
])
def test_second_order_sgd_matches_the_exact_hypergradient(momentum, weight_decay, nesterov, warm):
    model = Quadratic()
    lr = 0.05
    opt_w = torch.optim.SGD([model.w], lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    real_weight_steps(model, opt_w, warm)
    w, a = model.w.detach().clone(), model.a.detach().clone()
    buffer = opt_w.state.get(model.w, {}).get("momentum_buffer")
    # By hand: d = g + wd w; buf' = mu buf + d (buf' = d on the first step); w' = w - lr (d + mu buf' | buf').
    d = model.train_grad(w, a) + weight_decay * w
    new_buffer = d if buffer is None or momentum == 0 else momentum * buffer + d
    step = d + momentum * new_buffer if nesterov else (new_buffer if momentum else d)
    w_prime = w - lr * step
    scale = lr * ((1 + momentum) if nesterov else 1.0)  # dw'/dg = -scale, dg/da = -B
    expected = hypergradient(model, w_prime, scale * model.B)

    state_before = copy.deepcopy(opt_w.state_dict())
    architect = Architect(model, quadratic_loss, opt_w, torch.optim.SGD([model.a], lr=0.1), order=2)
    grads, _ = architect.gradient("train", "valid")
    assert torch.allclose(grads[0], expected, rtol=1e-6, atol=1e-8), (grads[0], expected)
    # The first-order gradient differs here: the test can tell the second-order term apart.
    assert not torch.allclose(grads[0], model.D @ a + model.F.T @ w, atol=1e-3)
    # The weights and the optimiser's state are exactly as they were.
    assert torch.equal(model.w.detach(), w)
    state_after = opt_w.state_dict()
    for key, value in state_before["state"].get(0, {}).items():
        assert torch.equal(torch.as_tensor(state_after["state"][0][key]), torch.as_tensor(value))


def adam_step_by_hand(model, opt, w, a, frozen: bool):
    """Adam's update from its state as a differentiable function of a (second moment frozen or not)."""
    group, state = opt.param_groups[0], opt.state.get(model.w, {})
    b1, b2 = group["betas"]
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    t = float(state["step"]) + 1 if state else 1.0
    g = model.train_grad(w, a)
    if group["decoupled_weight_decay"]:
        w_base = w * (1 - lr * wd)
    else:
        g = g + wd * w
        w_base = w
    m = b1 * state.get("exp_avg", torch.zeros_like(w)) + (1 - b1) * g
    g2 = g.detach() if frozen else g
    v = b2 * state.get("exp_avg_sq", torch.zeros_like(w)) + (1 - b2) * g2 * g2
    if group["amsgrad"]:
        v = torch.maximum(state.get("max_exp_avg_sq", torch.zeros_like(w)), v)
    return w_base - lr / (1 - b1 ** t) * m / (v.sqrt() / math.sqrt(1 - b2 ** t) + eps)


@pytest.mark.parametrize("cls,weight_decay,amsgrad,warm", [
    (torch.optim.Adam, 0.0, False, 0), (torch.optim.Adam, 1e-2, False, 4),
    (torch.optim.AdamW, 1e-2, False, 3), (torch.optim.Adam, 1e-3, True, 3),
])
def test_second_order_adam_matches_the_derivative_of_the_frozen_preconditioned_step(cls, weight_decay, amsgrad, warm):
    model = Quadratic(seed=1)
    opt_w = cls([model.w], lr=0.01, betas=(0.5, 0.999), weight_decay=weight_decay, amsgrad=amsgrad)
    real_weight_steps(model, opt_w, warm)
    w, a = model.w.detach().clone(), model.a.detach().clone()
    # Closed form with v frozen: dw'/da = diag(lr (1 - b1) / (1 - b1^t) / denominator) B.
    group, state = opt_w.param_groups[0], opt_w.state.get(model.w, {})
    b1, b2 = group["betas"]
    t = float(state["step"]) + 1 if state else 1.0
    g = model.train_grad(w, a) + (0.0 if group["decoupled_weight_decay"] else weight_decay * w)
    v = b2 * state.get("exp_avg_sq", torch.zeros_like(w)) + (1 - b2) * g * g
    if amsgrad:
        v = torch.maximum(state["max_exp_avg_sq"], v)
    precondition = group["lr"] * (1 - b1) / (1 - b1 ** t) / (v.sqrt() / math.sqrt(1 - b2 ** t) + group["eps"])
    w_prime = adam_step_by_hand(model, opt_w, w, a, frozen=True).detach()
    expected = hypergradient(model, w_prime, precondition[:, None] * model.B)
    # The same by autograd through the unrolled step with v frozen.
    a_var = a.clone().requires_grad_(True)
    unrolled = adam_step_by_hand(model, opt_w, w, a_var, frozen=True)
    (by_autograd,) = torch.autograd.grad(model.valid_loss(unrolled, a_var), a_var)
    assert torch.allclose(by_autograd, expected, rtol=1e-9, atol=1e-12)

    architect = Architect(model, quadratic_loss, opt_w, torch.optim.Adam([model.a], lr=0.1), order=2)
    grads, _ = architect.gradient("train", "valid")
    assert torch.allclose(grads[0], expected, rtol=1e-6, atol=1e-8), (grads[0], expected)
    # An SGD virtual step against this Adam (the released CHASE code) gives a different gradient.
    sgd_like = hypergradient(model, w - group["lr"] * model.train_grad(w, a), group["lr"] * model.B)
    assert not torch.allclose(grads[0], sgd_like, atol=1e-3)
    assert torch.equal(model.w.detach(), w)


def test_second_order_adam_exact_jacobian_matches_autograd_through_the_full_step():
    model = Quadratic(seed=2)
    opt_w = torch.optim.Adam([model.w], lr=0.01, weight_decay=1e-3)
    real_weight_steps(model, opt_w, 5)
    a_var = model.a.detach().clone().requires_grad_(True)
    unrolled = adam_step_by_hand(model, opt_w, model.w.detach(), a_var, frozen=False)
    (expected,) = torch.autograd.grad(model.valid_loss(unrolled, a_var), a_var)
    architect = Architect(model, quadratic_loss, opt_w, torch.optim.Adam([model.a]), order=2,
                          adam_jacobian="exact")
    grads, _ = architect.gradient("train", "valid")
    assert torch.allclose(grads[0], expected, rtol=1e-6, atol=1e-8)
    frozen, _ = Architect(model, quadratic_loss, opt_w, torch.optim.Adam([model.a]), order=2).gradient("train", "valid")
    assert not torch.allclose(frozen[0], expected, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=1e-2, amsgrad=True),
    lambda p: torch.optim.AdamW(p, lr=0.05, betas=(0.5, 0.999), weight_decay=1e-1),
])
def test_the_virtual_step_is_the_real_step_without_changing_the_optimiser(make):
    model = Quadratic(seed=3)
    optimizer = make([model.w])
    real_weight_steps(model, optimizer, 3)
    grad = torch.autograd.grad(quadratic_loss(model, "train"), [model.w])
    virtual = VirtualStep(optimizer, grad)
    before = copy.deepcopy(optimizer.state_dict())
    twin = copy.deepcopy(model)
    twin_optimizer = make([twin.w])
    twin_optimizer.load_state_dict(copy.deepcopy(before))
    twin.w.grad = grad[0].clone()
    twin_optimizer.step()
    assert torch.allclose(virtual.weights[0], twin.w.detach(), rtol=1e-12, atol=1e-14)
    assert str(optimizer.state_dict()) == str(before)


@pytest.mark.parametrize("clip", [None, 0.05])
def test_shared_step_is_the_second_order_update_and_its_virtual_step_is_the_real_one(clip):
    """One weight gradient for both: alpha moves by DARTS's second-order gradient of the (clipped) step
    the weight optimiser really takes, and the weights land where the virtual step put them."""
    model = Quadratic(seed=1)
    lr = 0.05
    opt_w = torch.optim.SGD([model.w], lr=lr)
    w, a = model.w.detach().clone(), model.a.detach().clone()
    g = model.train_grad(w, a)
    scale = 1.0 if clip is None else min(1.0, clip / (float(g.norm()) + 1e-6))  # clip_grad_norm_'s factor
    w_prime = w - lr * scale * g
    expected = hypergradient(model, w_prime, lr * scale * model.B)  # the clip factor held constant
    architect = Architect(model, quadratic_loss, opt_w, torch.optim.SGD([model.a], lr=0.1), order=2)
    train_loss, valid_loss = architect.shared_step("train", "valid", grad_clip=clip)
    assert train_loss == pytest.approx(float(model.train_loss(w, a)))
    assert valid_loss == pytest.approx(float(model.valid_loss(w_prime, a)))
    assert torch.allclose(model.w.detach(), w_prime, rtol=1e-12, atol=1e-14)  # the real step is the virtual one
    assert torch.allclose(model.a.detach(), a - 0.1 * expected, rtol=1e-6, atol=1e-8)
    if clip is not None:
        assert scale < 0.5  # the clip acted: the test tells a clipped virtual step from an unclipped one


def test_shared_step_with_adam_matches_the_separate_steps_at_the_same_point():
    """With Adam, shared_step's alpha update is step()'s at the same (w, alpha), and its weight step is
    the one Adam takes from that gradient."""
    model = Quadratic(seed=2)
    opt_w = torch.optim.Adam([model.w], lr=0.05)
    real_weight_steps(model, opt_w, 3)
    twin = copy.deepcopy(model)
    twin_w = torch.optim.Adam([twin.w], lr=0.05)
    twin_w.load_state_dict(copy.deepcopy(opt_w.state_dict()))
    expected, _ = Architect(twin, quadratic_loss, twin_w, torch.optim.SGD([twin.a], lr=0.1), order=2).gradient(
        "train", "valid")
    twin.w.grad = torch.autograd.grad(quadratic_loss(twin, "train"), [twin.w])[0]
    twin_w.step()
    a = model.a.detach().clone()
    Architect(model, quadratic_loss, opt_w, torch.optim.SGD([model.a], lr=0.1), order=2).shared_step("train", "valid")
    assert torch.allclose(model.a.detach(), a - 0.1 * expected[0], rtol=1e-10, atol=1e-12)
    assert torch.allclose(model.w.detach(), twin.w.detach(), rtol=1e-12, atol=1e-14)


def test_adamw_without_the_decoupled_key_still_decouples():
    """torch before the ``decoupled_weight_decay`` group key (pyproject allows torch>=2.1): AdamW decouples
    its weight decay by class, Adam adds L2. With the key removed from the groups, as an old torch builds
    them, the virtual step is still the real step of the current torch."""
    for make in (lambda p: torch.optim.AdamW(p, lr=0.05, betas=(0.5, 0.999), weight_decay=0.5),
                 lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.5, 0.999), weight_decay=0.5)):
        model = Quadratic(seed=3)
        optimizer = make([model.w])
        real_weight_steps(model, optimizer, 2)
        grad = torch.autograd.grad(quadratic_loss(model, "train"), [model.w])
        twin = copy.deepcopy(model)
        twin_optimizer = make([twin.w])
        twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
        twin.w.grad = grad[0].clone()
        twin_optimizer.step()
        for group in optimizer.param_groups:
            group.pop("decoupled_weight_decay", None)
        virtual = VirtualStep(optimizer, grad)
        assert torch.allclose(virtual.weights[0], twin.w.detach(), rtol=1e-12, atol=1e-14), type(optimizer)


def test_second_order_refuses_an_optimiser_it_cannot_unroll():
    model = Quadratic()
    with pytest.raises(ValueError, match="SGD, Adam or AdamW"):
        Architect(model, quadratic_loss, torch.optim.RMSprop([model.w]), torch.optim.Adam([model.a]), order=2)
    with pytest.raises(ValueError, match="architecture parameters"):
        Architect(model, quadratic_loss, torch.optim.SGD([model.w, model.a], lr=0.1), torch.optim.Adam([model.a]))


def test_architect_step_updates_alpha_and_leaves_buffers_and_weights():
    class WithBuffer(Quadratic):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros(()))

    def counting_loss(model, batch):
        model.count += 1  # stands for BN running statistics
        return quadratic_loss(model, batch)

    model = WithBuffer()
    opt_w = torch.optim.SGD([model.w], lr=0.05, momentum=0.9)
    opt_a = torch.optim.SGD([model.a], lr=0.1)
    architect = Architect(model, counting_loss, opt_w, opt_a, order=2)
    expected, _ = architect.gradient("train", "valid")
    a, w = model.a.detach().clone(), model.w.detach().clone()
    architect.step("train", "valid")
    assert torch.allclose(model.a.detach(), a - 0.1 * expected[0])
    assert torch.equal(model.w.detach(), w) and float(model.count) == 0.0


def test_finite_difference_passes_see_the_same_dropout_masks():
    """With dropout in the training loss the finite difference still matches the masked problem's HVP."""

    class Dropped(nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(4)
            self.w = nn.Parameter(torch.randn(6, generator=g, dtype=DTYPE))
            self.a = nn.Parameter(torch.randn(6, generator=g, dtype=DTYPE))

        def arch_parameters(self):
            return [self.a]

        def weight_parameters(self):
            return [self.w]

    def loss(model, batch):
        if batch == "train":
            mask = torch.nn.functional.dropout(torch.ones(6, dtype=DTYPE), 0.5)
            return 0.5 * ((mask * model.w) ** 2).sum() - (mask * model.w * model.a).sum()
        return 0.5 * ((model.w - 1.0) ** 2).sum() + 0.5 * (model.a ** 2).sum()

    model = Dropped()
    lr = 0.1
    architect = Architect(model, loss, torch.optim.SGD([model.w], lr=lr), torch.optim.SGD([model.a], lr=0.1), order=2)
    torch.manual_seed(7)
    mask = torch.nn.functional.dropout(torch.ones(6, dtype=DTYPE), 0.5)  # the mask the training pass draws
    torch.manual_seed(7)
    grads, _ = architect.gradient("train", "valid")
    w, a = model.w.detach(), model.a.detach()
    w_prime = w - lr * (mask ** 2 * w - mask * a)
    expected = lr * mask * (w_prime - 1.0) + a  # dw'/da = lr * diag(mask)
    assert torch.allclose(grads[0], expected, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------ derivation


def alpha_rows(**edges) -> torch.Tensor:
    """Weights [14, 8]: uniform small values, with given (node, source) rows overridden by {op: weight}."""
    weights = torch.full((14, 8), 0.01)
    rows = {edge: row for row, edge in enumerate(edge_inputs())}
    for key, ops in edges.items():
        node, source = (int(x) for x in key[1:].split("_"))
        for op, value in ops.items():
            weights[rows[(node, source)], PRIMITIVES.index(op)] = value
    return weights


def test_derivation_keeps_two_strongest_edges_per_node_and_never_none():
    weights = alpha_rows(
        n0_0={"sep_conv_3x3": 0.5}, n0_1={"none": 0.9, "skip_connect": 0.3},  # none strongest: skip chosen
        n1_0={"dil_conv_5x5": 0.2}, n1_1={"none": 0.95}, n1_2={"max_pool_3x3": 0.4},  # (1,1) only none: dropped
        n2_3={"sep_conv_5x5": 0.6}, n2_0={"avg_pool_3x3": 0.3}, n2_1={"skip_connect": 0.1},
        n3_4={"dil_conv_3x3": 0.7}, n3_2={"skip_connect": 0.65},
    )
    genotype = derive_genotype(weights, softmax=False)
    assert genotype.normal == (
        ("sep_conv_3x3", 0), ("skip_connect", 1),
        ("max_pool_3x3", 2), ("dil_conv_5x5", 0),
        ("sep_conv_5x5", 3), ("avg_pool_3x3", 0),
        ("dil_conv_3x3", 4), ("skip_connect", 2),
    )
    assert all(op != "none" for op, _ in genotype.normal)
    assert count_skips(genotype) == 2


def test_derivation_from_alpha_compares_softmax_weights_across_edges():
    alpha = torch.zeros(14, 8)
    # Node 0: edge 0 has the larger raw max, but its row is flat elsewhere only in part.
    alpha[0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 3.0, 2.9, 2.9, 2.9])  # softmax max ~0.27
    alpha[1] = torch.tensor([0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0])  # softmax max ~0.51
    with_softmax = derive_genotype(alpha, softmax=True)
    as_weights = derive_genotype(alpha, softmax=False)
    assert with_softmax.normal[:2] == (("skip_connect", 1), ("sep_conv_3x3", 0))
    assert as_weights.normal[:2] == (("sep_conv_3x3", 0), ("skip_connect", 1))
    with pytest.raises(ValueError, match="14 x 8"):
        derive_genotype(torch.zeros(14, 7), softmax=True)


def test_genotype_weights_are_one_hot_on_the_genotype_edges():
    genotype = Genotype(normal=(("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 2), ("dil_conv_5x5", 0),
                                ("sep_conv_5x5", 3), ("avg_pool_3x3", 0), ("dil_conv_3x3", 4), ("skip_connect", 2)))
    weights = genotype_weights(genotype)
    assert weights.sum() == 8 and weights.max() == 1
    derived = derive_genotype(weights, softmax=False)
    assert [set(derived.node(k)) for k in range(4)] == [set(genotype.node(k)) for k in range(4)]


# ------------------------------------------------------------------------------ mean shift


def on_simplex(x: torch.Tensor) -> bool:
    return bool((x >= 0).all()) and torch.allclose(x.sum(-1), torch.ones(x.shape[:-1], dtype=x.dtype), atol=1e-6)


def test_projection_is_the_euclidean_projection_onto_the_simplex():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g, dtype=DTYPE) * 0.7 + 0.1
    p = project_to_simplex(x)
    assert on_simplex(p)
    # Optimality (KKT): p = max(x - theta, 0) with one theta per row; no other simplex point is closer.
    theta = (x - p)[p > 0].view(-1)
    for row in range(50):
        support = p[row] > 0
        t = (x[row] - p[row])[support]
        assert torch.allclose(t, t[0].expand_as(t), atol=1e-12)
        assert ((x[row] - t[0])[~support] <= 1e-12).all()
        others = project_to_simplex(p[row] + 0.05 * torch.randn(200, 8, generator=g, dtype=DTYPE))
        assert (((others - x[row]) ** 2).sum(1) >= ((p[row] - x[row]) ** 2).sum() - 1e-12).all()
    assert theta.numel() > 0
    assert torch.allclose(project_to_simplex(p), p, atol=1e-12)  # a simplex point is its own projection


def test_one_mean_shift_iteration_is_the_kernel_and_loss_weighted_mean():
    center = torch.softmax(torch.randn(14, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    target = torch.zeros(14, 8)
    target[:, 4] = 1.0

    def loss(weights):
        return float(((weights - target) ** 2).sum())

    eps, h, n, temperature = 0.25, 0.5, 3, 0.7
    shifted, samples, weights = mean_shift(center, loss, eps=eps, h=h, n_samples=n, iterations=1,
                                           temperature=temperature, generator=torch.Generator().manual_seed(5))
    # By hand, with the same random numbers.
    noise = torch.rand((n, 14, 8), generator=torch.Generator().manual_seed(5), dtype=DTYPE) * 2 * eps - eps
    points = project_to_simplex(center.double() + noise)
    assert torch.allclose(samples[0].double(), points, atol=1e-6)
    losses = torch.tensor([loss(p.float()) for p in points], dtype=DTYPE)
    kernel = torch.exp(-((points - center.double()) ** 2).sum((1, 2)) / (2 * h * h))
    raw = torch.exp(losses / temperature) / torch.exp(losses / temperature).sum() * kernel
    expected_weights = raw / raw.sum()
    assert torch.allclose(weights[0].double(), expected_weights, atol=1e-6)
    expected = (expected_weights[:, None, None] * points).sum(0)
    assert torch.allclose(shifted.double(), expected, atol=1e-6)
    # The worst sample (largest loss) weighs more than it would by the kernel alone.
    worst = int(losses.argmax())
    assert expected_weights[worst] > (kernel / kernel.sum())[worst]
    assert on_simplex(shifted) and on_simplex(samples)


def test_mean_shift_iterations_stay_on_the_simplex_and_are_reproducible():
    center = torch.softmax(torch.zeros(14, 8), dim=-1)

    def run(seed):
        return mean_shift(center, lambda w: float(w[:, 0].sum()), iterations=2,
                          generator=torch.Generator().manual_seed(seed))

    shifted, samples, weights = run(3)
    assert samples.shape == (2, 3, 14, 8) and weights.shape == (2, 3)
    assert on_simplex(shifted) and on_simplex(samples)
    assert torch.allclose(weights.sum(1), torch.ones(2))
    assert torch.equal(run(3)[0], shifted) and not torch.equal(run(4)[0], shifted)
    assert not torch.allclose(shifted, center)


def test_eps_schedule_ramps_from_a_tenth_to_eps():
    assert eps_schedule(0.25, 0, 40) == pytest.approx(0.025)
    assert eps_schedule(0.25, 20, 40) == pytest.approx(0.025 + 0.9 * 0.25 * 0.5)
    assert eps_schedule(0.25, 40, 40) == pytest.approx(0.25)


# ------------------------------------------------------------------------------ Hessian


@pytest.mark.parametrize("dominant", [7.0, -7.0])
def test_power_iteration_finds_the_eigenvalue_of_largest_magnitude(dominant):
    g = torch.Generator().manual_seed(11)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=DTYPE))
    spectrum = torch.tensor([dominant, 4.0, -3.0, 1.5, 0.5, 0.1], dtype=DTYPE)
    hessian = q @ torch.diag(spectrum) @ q.T
    hessian = (hessian + hessian.T) / 2
    x = nn.Parameter(torch.randn(6, generator=g, dtype=DTYPE))
    value = dominant_eigenvalue(lambda: 0.5 * x @ hessian @ x, [x], iterations=500, tol=1e-12,
                                generator=torch.Generator().manual_seed(0))
    eigenvalues = torch.linalg.eigvalsh(hessian)
    assert value == pytest.approx(float(eigenvalues[eigenvalues.abs().argmax()]), rel=1e-6)


def test_power_iteration_on_a_random_symmetric_hessian_over_two_tensors():
    g = torch.Generator().manual_seed(12)
    m = torch.randn(7, 7, generator=g, dtype=DTYPE)
    hessian = m @ m.T  # positive semidefinite: the dominant eigenvalue is the largest
    x = nn.Parameter(torch.randn(3, generator=g, dtype=DTYPE))
    y = nn.Parameter(torch.randn(4, generator=g, dtype=DTYPE))

    def loss():
        z = torch.cat([x, y])
        return 0.5 * z @ hessian @ z

    value = dominant_eigenvalue(loss, [x, y], iterations=2000, tol=1e-13, generator=torch.Generator().manual_seed(1))
    assert value == pytest.approx(float(torch.linalg.eigvalsh(hessian).max()), rel=1e-6)


@pytest.mark.parametrize("dominant", [7.0, -7.0])
def test_the_logged_eigenvalue_is_the_largest_not_the_largest_in_magnitude(dominant):
    """R-DARTS's measure is the largest (algebraic) eigenvalue: 4 when the spectrum is {-7, 4, ...},
    where power iteration returns -7. Exact (full Hessian, eigvalsh), over two parameter tensors."""
    g = torch.Generator().manual_seed(11)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=DTYPE))
    spectrum = torch.tensor([dominant, 4.0, -3.0, 1.5, 0.5, 0.1], dtype=DTYPE)
    hessian = q @ torch.diag(spectrum) @ q.T
    hessian = (hessian + hessian.T) / 2
    x = nn.Parameter(torch.randn(2, generator=g, dtype=DTYPE))
    y = nn.Parameter(torch.randn(2, 2, generator=g, dtype=DTYPE))

    def loss():
        z = torch.cat([x, y.reshape(-1)])
        return 0.5 * z @ hessian @ z + torch.sin(z).sum() * 0  # the zero term keeps a constant out of it

    assert torch.allclose(hessian_matrix(loss, [x, y]), hessian, atol=1e-12)
    assert largest_eigenvalue(loss, [x, y]) == pytest.approx(float(spectrum.max()), rel=1e-10)
    linear = nn.Parameter(torch.ones(3, dtype=DTYPE))
    assert largest_eigenvalue(lambda: (2 * linear).sum(), [linear]) == 0.0


def test_the_eigenvalue_is_measured_in_eval_mode_and_the_mode_is_restored():
    """Skip dropout must not enter the stability measure: the loss is evaluated in eval mode (so the
    value is the same whatever the random state), and the model is back in train mode afterwards."""
    search = toy_search("darts2", epochs=4)
    seen = []

    def loss_fn(model, batch):
        seen.append(model.training)
        return toy_loss(model, batch)

    search.loss_fn = loss_fn
    set_skip_dropout(search.model, 0.5)
    batch = search.arch_batches[0]
    torch.manual_seed(1)
    first = search._eigenvalue(0, batch)
    torch.manual_seed(2)
    second = search._eigenvalue(0, batch)
    assert seen and not any(seen)
    assert search.model.training and all(m.training for m in search.model.modules())
    assert first == second
    search.model.eval()
    expected = largest_eigenvalue(lambda: toy_loss(search.model, batch), list(search.model.arch_parameters()))
    assert first == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert sum(p.numel() for p in search.model.arch_parameters()) == 112


# ------------------------------------------------------------------------------ schedules


def test_skip_dropout_decays_linearly_from_start_to_zero():
    assert skip_dropout_rate(0, 70) == pytest.approx(0.6)
    assert skip_dropout_rate(69, 70) == pytest.approx(0.0)
    assert skip_dropout_rate(23, 70) == pytest.approx(0.6 * (1 - 23 / 69))
    rates = [skip_dropout_rate(e, 10, start=0.4) for e in range(10)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


def test_architecture_warmup_scales_chase_schedule():
    assert warmup_epochs(70) == 10 and warmup_epochs(14) == 2 and warmup_epochs(10, fraction=0.3) == 3
    assert arch_warmup(9, 10) and not arch_warmup(10, 10)


def test_early_stopping_picks_the_epoch_of_the_hold_out_minimum():
    genotypes = [Genotype(normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1)) * 3
                          + (("skip_connect", 0), (PRIMITIVES[1 + e % 7], 4))) for e in range(10)]
    cell = [2.0, 1.6, 1.3, 1.1, 1.15, 0.95, 1.0, 1.02, 0.99, 0.97]  # minimum at epoch 5
    supernet = [2.0, 1.5, 1.2, 1.0, 0.9, 0.85, 0.8, 0.78, 0.75, 0.7]  # keeps falling
    stopping = EarlyStopping(patience=3)
    stopped_at = None
    for epoch in range(10):
        if stopping.update(epoch, supernet[epoch], cell[epoch], genotypes[epoch]):
            stopped_at = epoch
            break
    assert stopping.best_epoch == 5 and stopping.best_genotype == genotypes[5] and stopped_at == 8
    by_supernet = EarlyStopping(patience=3, criterion="supernet")
    for epoch in range(10):
        by_supernet.update(epoch, supernet[epoch], cell[epoch], genotypes[epoch])
    assert by_supernet.best_epoch == 9


def test_early_stopping_state_round_trips_through_torch_save(tmp_path):
    genotype = Genotype(normal=(("sep_conv_3x3", 0), ("skip_connect", 1)) * 4)
    stopping = EarlyStopping(patience=2)
    stopping.update(0, 1.0, 0.9, genotype)
    stopping.update(1, 0.8, float("nan"), genotype)
    torch.save(stopping.state_dict(), tmp_path / "s.pt")
    resumed = EarlyStopping(patience=5)
    resumed.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert resumed.best_epoch == 0 and resumed.best_genotype == genotype and resumed.patience == 2
    assert resumed.update(2, 0.7, 0.95, genotype)  # two epochs past the best: the restored patience
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2]


# ------------------------------------------------------------------------------ the search loop


class ToySupernetModel(nn.Module):
    """A 2-channel cell supernet and a 1 x 1 conv head: the search loop's model interface."""

    def __init__(self):
        super().__init__()
        self.supernet = CellSupernet(2)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, s0, s1):
        return self.head(self.supernet(s0, s1))

    def arch_parameters(self):
        return architecture_parameters(self)

    def weight_parameters(self):
        return weight_parameters(self)

    def mixing_weights(self):
        return self.supernet.mixing_weights()

    def fixed_mixing_weights(self, weights):
        return self.supernet.fixed_mixing_weights(weights)


def toy_loss(model, batch):
    s0, s1, target = batch
    return ((model(s0, s1) - target) ** 2).mean()


def toy_search(method: str, epochs: int = 4, train_batches: int = 1, **options) -> DifferentiableSearch:
    torch.manual_seed(0)
    model = ToySupernetModel()
    batches = [tuple(torch.randn(2, *shape) for shape in ((2, 4, 4), (2, 4, 4), (1, 4, 4))) for _ in range(3)]
    train = batches[:1] + [tuple(torch.randn(2, *shape) for shape in ((2, 4, 4), (2, 4, 4), (1, 4, 4)))
                           for _ in range(train_batches - 1)]
    weight_optimizer = torch.optim.Adam(model.weight_parameters(), lr=1e-2)
    arch_optimizer = torch.optim.Adam(model.arch_parameters(), lr=3e-2, betas=(0.5, 0.999), weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(weight_optimizer, 1, 0.5)
    options = SearchOptions(method=method, epochs=epochs, **{"warmup_epochs": 1, "patience": 5, "eigenvalue": True,
                                                             "eigenvalue_iterations": 3, "ms_samples": 2,
                                                             "ms_iterations": 1, **options})
    return DifferentiableSearch(model, toy_loss, train, batches[1:2], weight_optimizer, arch_optimizer,
                                options, holdout_batches=batches[2:], weight_scheduler=scheduler)


@pytest.fixture(scope="module")
def straight_runs():
    """Per method: 3 uninterrupted epochs (of 4, so skip dropout is still random in epoch 2)."""
    runs = {}
    for method in ("darts2", "ms-darts"):
        search = toy_search(method)
        initial = search.model.supernet.architecture.alpha.detach().clone()
        records = [search.run_epoch(epoch) for epoch in range(3)]
        runs[method] = (initial, records, search.model.supernet.architecture.alpha.detach().clone(),
                        search.early_stopping.best_epoch)
    return runs


@pytest.mark.parametrize("method", ["darts2", "ms-darts"])
def test_a_search_resumed_from_its_state_reaches_the_same_alphas(method, straight_runs, tmp_path):
    initial, records, final, best_epoch = straight_runs[method]
    assert records[0]["arch_steps"] == 0 and records[1]["arch_steps"] == 1
    assert all(r["eigenvalue"] is not None and r["cell_holdout"] is not None for r in records)
    assert [r["skip_dropout"] for r in records] == [skip_dropout_rate(e, 4) for e in range(3)]
    assert records[2]["skip_dropout"] > 0
    assert not torch.allclose(final, initial)

    interrupted = toy_search(method)
    interrupted.run_epoch(0)
    # The warm-up epoch trained weights only: alpha untouched (MS-DARTS shifts a copy, never alpha).
    assert torch.equal(interrupted.model.supernet.architecture.alpha.detach(), initial)
    interrupted.run_epoch(1)
    interrupted.save(tmp_path / "search.pt")
    del interrupted
    torch.rand(1000)  # whatever ran in between

    resumed = toy_search(method)
    resumed.load(tmp_path / "search.pt")
    assert resumed.epoch == 2
    resumed.run_epoch(2)
    assert torch.equal(resumed.model.supernet.architecture.alpha.detach(), final)
    assert [r["genotype"] for r in resumed.history] == [r["genotype"] for r in records]
    assert resumed.early_stopping.best_epoch == best_epoch


KILLED_CHILD = """
import sys, time, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_differentiable import toy_search
search = toy_search("darts2")
for epoch in range(2):
    search.run_epoch(epoch)
    search.save({path!r})
def stall(model, batch):
    print("mid-epoch", flush=True)
    time.sleep(300)
search.loss_fn = search.architect.loss_fn = stall
search.run_epoch(2)
"""


def test_a_sigkilled_search_resumes_to_the_same_alphas(straight_runs, tmp_path):
    path = tmp_path / "search.pt"
    code = KILLED_CHILD.format(tests=str(Path(__file__).resolve().parent), path=str(path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        assert child.stdout.readline().strip() == "mid-epoch"  # killed inside epoch 2, after its checkpoint
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    resumed = toy_search("darts2")
    resumed.load(path)
    assert resumed.epoch == 2
    resumed.run_epoch(2)
    assert torch.equal(resumed.model.supernet.architecture.alpha.detach(), straight_runs["darts2"][2])


# ------------------------------------------------------------------------------ issue 24: warm-up, samples, BN, lr


def test_warmup_epochs_never_become_the_best_nor_count_toward_patience():
    """The warm-up's cells are argmaxes of alpha's initial noise: a low hold-out loss there must not be
    chosen, and the patience counts from the first epoch after the warm-up."""
    genotype = Genotype(normal=(("sep_conv_3x3", 0), ("skip_connect", 1)) * 4)
    cell = [0.1, 0.2, 1.0, 1.1, 1.2, 1.3]  # the warm-up (epochs 0 and 1) holds the lowest losses
    stopping = EarlyStopping(patience=2, start=2)
    stops = [stopping.update(epoch, loss, loss, genotype) for epoch, loss in enumerate(cell)]
    assert stopping.best_epoch == 2 and stopping.best_loss == 1.0
    assert stops == [False, False, False, False, True, True]  # 2 epochs past epoch 2, not past epoch 0
    # A state saved before warm-up epochs were excluded (best epoch 0, stopped) is decided again on load.
    legacy = EarlyStopping(patience=2)
    for epoch, loss in enumerate(cell[:3]):
        legacy.update(epoch, loss, loss, genotype)
    assert legacy.best_epoch == 0 and legacy.stopped
    resumed = EarlyStopping(patience=2, start=2)
    resumed.load_state_dict(legacy.state_dict())
    assert resumed.best_epoch == 2 and not resumed.stopped
    # Nothing eligible yet: no best, no stop.
    early = EarlyStopping(patience=1, start=5)
    assert not any(early.update(epoch, 0.1, 0.1, genotype) for epoch in range(5)) and early.best_epoch is None


def test_the_search_neither_stops_nor_chooses_inside_the_warmup():
    search = toy_search("darts", epochs=5, warmup_epochs=2, patience=1, eigenvalue=False)
    losses = iter([0.1, 0.1, 0.2, 0.2, 1.0, 1.0, 0.9, 0.9, 0.95, 0.95])  # (supernet, cell) per epoch

    def holdout(epoch, weights):
        return next(losses)

    search._holdout_loss = holdout
    records = search.run()
    assert [r["warmup"] for r in records] == [True, True, False, False, False]
    assert search.early_stopping.best_epoch == 3 and len(records) == 5 and records[-1]["stop"]
    assert records[0]["arch_steps"] == 0 and records[2]["arch_steps"] == 1


def test_a_warmup_that_covers_every_epoch_is_refused_in_one_line():
    from autoloss.differentiable.options import DartsOptions
    from autoloss.errors import UserError

    with pytest.raises(UserError, match=r"^--warmup 0\.6 of --epochs 1 is 1 warm-up epoch\(s\), all of them") as error:
        DartsOptions(epochs=1, warmup=0.6).validate()
    assert "\n" not in str(error.value)
    DartsOptions(epochs=2, warmup=0.6).validate()  # 1 of 2: epoch 1 is eligible
    with pytest.raises(ValueError, match="covers all 3 epochs"):
        SearchOptions(epochs=3, warmup_epochs=3)


def test_the_scheduler_chooses_among_the_epochs_after_the_warmup():
    from types import SimpleNamespace

    from autoloss.differentiable.scheduler import best_epoch

    epochs = [(SimpleNamespace(generation=e, id=e), SimpleNamespace(metrics={"cell_holdout": loss}))
              for e, loss in enumerate([0.1, 0.5, 0.7, 0.4, 0.6])]
    assert best_epoch(epochs, "cell")[0].generation == 0
    assert best_epoch(epochs, "cell", start=2)[0].generation == 3
    assert best_epoch(epochs, "cell", start=5) is None


def test_mean_shift_samples_are_measured_under_one_mask(monkeypatch):
    """MS-DARTS weighs its samples by their losses: identical samples (eps 0) must get identical losses,
    whatever the skip-dropout masks (the rate is high here), and the model is back in train mode."""
    import autoloss.differentiable.search as search_module

    measured = []
    original = search_module.mean_shift

    def recording(center, loss_fn, **kwargs):
        def measure(weights):
            value = loss_fn(weights)
            measured.append(value)
            return value

        return original(center, measure, **kwargs)

    monkeypatch.setattr(search_module, "mean_shift", recording)
    search = toy_search("ms-darts", epochs=3, warmup_epochs=0, skip_dropout=0.9, ms_eps=0.0, ms_samples=4,
                        eigenvalue=False)
    search.run_epoch(0)
    assert len(measured) == 4 and search.model.training and all(m.training for m in search.model.modules())
    assert measured == [measured[0]] * 4, measured


def _norms(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_the_derived_cells_holdout_loss_uses_batchnorm_recalibrated_for_the_cell():
    """BN's running statistics of the supernet are the mixed network's; the derived cell's hold-out
    loss is measured with statistics re-estimated on the discrete cell (cumulative averages over the
    epoch's weight batches), and the supernet's own statistics are untouched afterwards."""
    search = toy_search("darts", epochs=4, train_batches=3, warmup_epochs=0, eigenvalue=False)
    for epoch in range(2):
        search.run_epoch(epoch)
    model = search.model
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    means = [m.running_mean.clone() for m in _norms(model)]
    genotype = derive_genotype(model.mixing_weights().detach(), softmax=False)
    weights = genotype_weights(genotype)
    batches = search.train_batches

    # By hand on a copy: the inputs each BN sees in train mode, skip dropout off, mixing by the cell.
    twin = copy.deepcopy(model)
    set_skip_dropout(twin, 0.0)
    twin.train()
    inputs = {id(m): [] for m in _norms(twin)}
    hooks = [m.register_forward_pre_hook(lambda m, args: inputs[id(m)].append(args[0].detach()))
             for m in _norms(twin)]
    with torch.no_grad(), twin.fixed_mixing_weights(weights):
        for batch in batches:
            toy_loss(twin, batch)
    for hook in hooks:
        hook.remove()
    expected_mean = [torch.stack([x.mean((0, 2, 3)) for x in inputs[id(m)]]).mean(0) for m in _norms(twin)]
    expected_var = [torch.stack([x.transpose(0, 1).flatten(1).var(1) for x in inputs[id(m)]]).mean(0)
                    for m in _norms(twin)]

    with search.recalibrated(weights, 2):
        inside = [(m.running_mean.clone(), m.running_var.clone()) for m in _norms(model)]
        assert model.training  # the mode outside is kept
        twin.eval()
        for m_twin, (mean, var) in zip(_norms(twin), inside):
            m_twin.running_mean.copy_(mean)
            m_twin.running_var.copy_(var)
        with torch.no_grad(), twin.fixed_mixing_weights(weights):
            expected_loss = float(toy_loss(twin, search.holdout_batches[0]))
    for (mean, var), e_mean, e_var in zip(inside, expected_mean, expected_var):
        assert torch.allclose(mean, e_mean, atol=1e-6) and torch.allclose(var, e_var, rtol=1e-5, atol=1e-6)
    # The recalibration changed statistics the cell uses (else the test could not tell).
    assert any(not torch.allclose(mean, supernet_mean, atol=1e-3) for (mean, _), supernet_mean in zip(inside, means))
    after = dict(model.named_buffers())
    assert all(torch.equal(after[name], value) for name, value in before.items())
    assert all(m.momentum == 0.1 for m in _norms(model))
    # The search's cell hold-out loss is the one with the recalibrated statistics, and the buffers stay.
    assert search._holdout_loss(2, weights) == pytest.approx(expected_loss, rel=1e-6)
    assert all(torch.equal(dict(model.named_buffers())[name], value) for name, value in before.items())
    assert model.training and all(m.training for m in model.modules())


@contextmanager
def toy_supernet(task, seed, **sizes):
    """A supernet hook (``Problem.supernet.search``) on the toy model, for :func:`run_epoch_job`."""
    from autoloss.differentiable.worker import SupernetSetup

    torch.manual_seed(0)
    batches = [tuple(torch.randn(2, *shape) for shape in ((2, 4, 4), (2, 4, 4), (1, 4, 4))) for _ in range(3)]
    torch.manual_seed(seed)
    model = ToySupernetModel()
    yield SupernetSetup(model, toy_loss, lambda epoch: batches[:1], lambda epoch: batches[1:2],
                        lambda epoch: batches[2:], weight_lr=1e-2)


def test_the_weights_learning_rate_anneals_by_cosine_and_resumes_exactly(tmp_path):
    """Every epoch job is a resume (fresh objects, the checkpoint loaded): with --weight-schedule cosine
    the weights' lr anneals over the epochs and the alphas are those of one uninterrupted search."""
    from dataclasses import asdict

    from autoloss.differentiable.options import Darts2Options
    from autoloss.differentiable.worker import EpochJob, run_epoch_job, search_options
    from autoloss.engine.study import stored_options

    options = asdict(Darts2Options(epochs=3, warmup=0.0, patience=None, eigenvalue=False, weight_lr=1e-2))
    assert options["weight_schedule"] == "cosine"  # the default
    records = [run_epoch_job(EpochJob({}, "darts2", options, 0, 7, epoch, str(tmp_path / "seed-0.pt"), toy_supernet))
               for epoch in range(3)]

    with toy_supernet({}, 7) as setup:  # the reference: one search object, never saved
        model = setup.model
        weight_optimizer = torch.optim.Adam(model.weight_parameters(), lr=1e-2)
        arch_optimizer = torch.optim.Adam(model.arch_parameters(), lr=options["arch_lr"], betas=(0.5, 0.999),
                                          weight_decay=options["arch_weight_decay"])
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(weight_optimizer, T_max=3)
        straight = DifferentiableSearch(model, toy_loss, setup.train_batches, setup.arch_batches, weight_optimizer,
                                        arch_optimizer, search_options("darts2", options, 7),
                                        holdout_batches=setup.holdout_batches, weight_scheduler=cosine)
        lrs = []
        for epoch in range(3):
            straight.run_epoch(epoch)
            lrs.append(weight_optimizer.param_groups[0]["lr"])
    assert [r["weights"] for r in records] == [r["weights"] for r in straight.history]
    assert lrs == pytest.approx([1e-2 * (1 + math.cos(math.pi * e / 3)) / 2 for e in (1, 2, 3)])
    state = torch.load(tmp_path / "seed-0.pt", weights_only=True)
    assert state["weight_optimizer"]["param_groups"][0]["lr"] == pytest.approx(lrs[-1])
    assert state["weight_scheduler"]["last_epoch"] == 3
    # Runs stored before the option existed kept the lr constant: they leave it out and resume so.
    assert "weight_schedule" not in stored_options(Darts2Options(weight_schedule="constant", share_gradient=False))
    legacy = {k: v for k, v in options.items() if k != "weight_schedule"}
    run_epoch_job(EpochJob({}, "darts2", legacy, 0, 7, 0, str(tmp_path / "legacy.pt"), toy_supernet))
    legacy_state = torch.load(tmp_path / "legacy.pt", weights_only=True)
    assert legacy_state["weight_scheduler"] is None
    assert legacy_state["weight_optimizer"]["param_groups"][0]["lr"] == 1e-2


# ------------------------------------------------------------------------------ the choice's spread sentence


class _EpochStore:
    """The two calls DifferentiableScheduler.spread makes of a study: candidates() and verdict(id, gate)."""

    def __init__(self, losses: dict[int, list[float]]):  # seed -> the derived cell's hold-out loss per epoch
        from types import SimpleNamespace

        self.rows, self.verdicts = [], {}
        for seed, per_epoch in losses.items():
            for epoch, loss in enumerate(per_epoch):
                row = SimpleNamespace(id=len(self.rows) + 1, generation=epoch, index=seed)
                self.rows.append(row)
                self.verdicts[row.id] = SimpleNamespace(metrics={"cell_holdout": loss})

    def candidates(self):
        return list(self.rows)

    def verdict(self, row_id, gate):
        return self.verdicts.get(row_id) if gate == "derived" else None


def _spread(losses: dict[int, list[float]], warmup: int = 1) -> str:
    from types import SimpleNamespace

    from autoloss.differentiable.scheduler import DifferentiableScheduler, best_epoch, seed_epochs

    study = _EpochStore(losses)
    strategy = SimpleNamespace(options=SimpleNamespace(criterion="cell", warmup_epochs=warmup))
    chosen = {seed: best_epoch(seed_epochs(study, seed), "cell", warmup)[0] for seed in losses}
    return DifferentiableScheduler.spread(None, study, strategy, chosen)


def test_the_choice_says_how_far_apart_the_seeds_and_epochs_were():
    # warm-up epoch 0 has the lowest loss of all but is never counted; seed 1 wins by 0.10, against the
    # spread (sd) of the three chosen losses 0.40, 0.50, 0.90: within it, so the sentence says so
    text = _spread({0: [0.01, 0.60, 0.50], 1: [0.02, 0.40, 0.45], 2: [0.03, 0.90, 0.95]})
    assert text.startswith("choice: the winner (seed 1) beat the runner-up's cell hold-out loss by 0.1000, "
                           "against a spread of ± 0.2646 sd across the 3 seeds' choices (within the spread")
    assert "each chosen epoch's margin over its seed's next-best epoch: seed 0 0.1000, seed 1 0.0500, " \
           "seed 2 0.0500" in text
    # a clear winner: no "within the spread"
    clear = _spread({0: [0.0, 0.10, 0.2], 1: [0.0, 0.80, 0.81], 2: [0.0, 0.82, 0.83]})
    assert "by 0.7000" in clear and "within the spread" not in clear
    assert _spread({0: [0.0, 0.3]}) == "choice: one candidate, no spread to state."
