"""The MMDetection loss modules equal mmdet's own losses for the matching ready expressions."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mmdet")

from mmdet.models.losses import CrossEntropyLoss, FocalLoss, GIoULoss, IoULoss
from mmdet.registry import MODELS

import autoloss.detection.mmdet.losses  # noqa: F401  (registers the modules)
from autoloss.errors import ExpressionError

CASES = [  # (reduction, use weight, avg_factor)
    ("mean", False, None), ("sum", False, None), ("none", False, None),
    ("mean", True, None), ("mean", True, 7.5), ("none", True, 7.5), ("sum", True, None),
]


def _build(type_, expression, **kwargs):
    return MODELS.build({"type": type_, "expression": expression, **kwargs})


def _compare(ours, theirs, make_inputs, grad_index=0, atol=1e-6, rtol=1e-5):
    for reduction, use_weight, avg_factor in CASES:
        args_a, weight = make_inputs(use_weight)
        args_b = [a.detach().clone().requires_grad_(a.requires_grad) for a in args_a]
        kw = {"weight": weight, "avg_factor": avg_factor, "reduction_override": reduction}
        a, b = ours(*args_a, **kw), theirs(*args_b, **kw)
        assert a.shape == b.shape, (reduction, use_weight, avg_factor)
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
        a.sum().backward()
        b.sum().backward()
        torch.testing.assert_close(args_a[grad_index].grad, args_b[grad_index].grad, atol=atol, rtol=rtol)


def _cls_inputs(n, c, background, seed):
    def make(use_weight):
        g = torch.Generator().manual_seed(seed)
        x = (torch.randn(n, c, generator=g) * 3).requires_grad_()
        labels = torch.randint(0, background + 1, (n,), generator=g)
        weight = torch.rand(n, generator=g) if use_weight else None
        return [x, labels], weight
    return make


def _boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n, 2, generator=g) * 100
    sizes = torch.rand(n, 2, generator=g) * 40 + 2
    target = torch.cat([centres - sizes / 2, centres + sizes / 2], 1)
    pred = target + torch.randn(n, 4, generator=g) * 5
    pred = torch.cat([torch.minimum(pred[:, :2], pred[:, 2:] - 0.5), pred[:, 2:]], 1)
    pred[0] = target[0] + 300  # disjoint: GIoU's enclosing term matters
    return pred, target


def test_softmax_ce_equals_cross_entropy():
    ours = _build("SearchedSoftmaxClsLoss", "CE", loss_weight=1.5)
    assert ours.expression == "Neg(Dot(Y,Log(Softmax(X))))" and ours.use_sigmoid is False
    _compare(ours, CrossEntropyLoss(use_sigmoid=False, loss_weight=1.5), _cls_inputs(40, 6, 5, 0))


def test_sigmoid_fl_equals_focal_loss():
    ours = _build("SearchedSigmoidClsLoss", "FL", loss_weight=2.0)
    assert ours.use_sigmoid is True
    theirs = FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0)
    _compare(ours, theirs, _cls_inputs(40, 5, 5, 1))


def test_sigmoid_per_class_weight():
    ours, theirs = _build("SearchedSigmoidClsLoss", "FL"), FocalLoss(use_sigmoid=True)
    x, labels = torch.randn(12, 4), torch.randint(0, 5, (12,))
    weight = torch.rand(12, 4)
    torch.testing.assert_close(ours(x, labels, weight=weight), theirs(x, labels, weight=weight))


@pytest.mark.parametrize("name,reference", [("GIoU", GIoULoss), ("IoU", lambda **kw: IoULoss(mode="linear", **kw))])
def test_box_losses_equal_mmdet(name, reference):
    ours, theirs = _build("SearchedIoULoss", name, loss_weight=3.0), reference(loss_weight=3.0)

    def make(use_weight):
        pred, target = _boxes(30, 2)
        weight = torch.rand(30, 4) if use_weight else None  # mmdet's (N, 4) box weights
        return [pred.requires_grad_(), target], weight

    _compare(ours, theirs, make, atol=1e-5, rtol=1e-4)


def test_box_loss_all_zero_weight_returns_connected_zero():
    pred, target = _boxes(5, 3)
    pred.requires_grad_()
    loss = _build("SearchedIoULoss", "GIoU")(pred, target, weight=torch.zeros(5))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_iou_keyword_feeds_cei():
    cei = _build("SearchedSoftmaxClsLoss", "CEI", reduction="none")
    g = torch.Generator().manual_seed(4)
    x, labels = torch.randn(10, 4, generator=g), torch.tensor([0, 1, 2, 3, 3, 0, 1, 2, 3, 0])
    iou = torch.rand(10, generator=g)
    log_p = torch.log_softmax(x, -1).gather(1, labels[:, None]).squeeze(1)
    expected = torch.where(labels < 3, -iou * log_p, -log_p)
    torch.testing.assert_close(cei(x, labels, iou=iou), expected)
    torch.testing.assert_close(cei(x, labels), -log_p)  # no iou: W = 1, plain CE

    fli = _build("SearchedSigmoidClsLoss", "FLI", alpha=None, reduction="none")
    with_iou, without = fli(x, labels, iou=iou), fli(x, labels)
    positives = labels < 4
    assert not torch.allclose(with_iou[positives], without[positives])


@pytest.mark.parametrize("type_,expression,shape", [
    ("SearchedSoftmaxClsLoss", "CEI", (0, 6)), ("SearchedSigmoidClsLoss", "FL", (0, 5)),
    ("SearchedIoULoss", "GIoU", (0, 4)),
])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_empty_batch_is_a_finite_zero(type_, expression, shape, reduction):
    pred = torch.zeros(shape, requires_grad=True)
    target = torch.zeros((0, 4)) if type_ == "SearchedIoULoss" else torch.zeros(0, dtype=torch.long)
    loss = _build(type_, expression, reduction=reduction)(pred, target)
    assert loss.shape == () and torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None and pred.grad.shape == pred.shape


@pytest.mark.parametrize("type_,expression", [
    ("SearchedSoftmaxClsLoss", "Neg(Dot(Y,Log(Softmax(X)))"),
    ("SearchedSoftmaxClsLoss", "Log(Softmax(X))"),  # a matrix, not a per-sample loss
    ("SearchedSigmoidClsLoss", "Dot(X,Y)"),  # Dot is not in the sigmoid space
    ("SearchedIoULoss", "Sub(1,Div(I,Q))"),
])
def test_malformed_expression_raises(type_, expression):
    with pytest.raises(ExpressionError):
        _build(type_, expression)


def test_double_precision_is_kept():
    pred, target = _boxes(6, 5)
    loss = _build("SearchedIoULoss", "GIoU")(pred.double(), target)
    assert loss.dtype == torch.float64
    x = torch.randn(6, 3, dtype=torch.float64)
    assert _build("SearchedSigmoidClsLoss", "FL")(x, torch.tensor([0, 1, 2, 3, 3, 0])).dtype == torch.float64
