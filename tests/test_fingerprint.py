"""The loss fingerprint: the gradient in the prediction, on inputs fed as the task feeds them."""

from __future__ import annotations

import pytest

from autoloss.loss.expression import parse
from autoloss.loss.fingerprint import prediction_gradient, training_fingerprint

CEI = "Neg(Dot(Mul(Y,W),Log(Softmax(X))))"
# The four clones of CEI that a seeded noisy-digits search trained again (issue: every proxy evaluation counts)
CEI_CLONES = [
    "Neg(Dot(Y,Dot(Mul(Y,W),Log(Softmax(X)))))",  # Dot of a one-hot Y with a column is the column
    "Neg(Dot(Y,Dot(Mul(Y,W),Add(Log(Softmax(X)),1))))",  # CEI - W: the same gradient
    "Neg(Dot(Abs(Y),Log(Softmax(X))))",  # CE: like CEI when W = 1
    "Add(Neg(Dot(Y,Dot(Abs(Y),Log(Softmax(X))))),W)",  # CE + W
]
CE_SPELLINGS = [
    "Neg(Dot(Y,Log(Softmax(X))))",
    "Dot(Y,Neg(Log(Softmax(X))))",
    "Dot(Neg(Y),Log(Softmax(X)))",
    "Sub(Dot(Y,Log(Softmax(X))),Mul(2,Dot(Y,Log(Softmax(X)))))",
    "Sub(1,Add(1,Dot(Y,Log(Softmax(X)))))",
    "Add(3,Neg(Dot(Y,Log(Softmax(X)))))",  # a constant apart: trains identically
]
DOUBLE_IOU_SPELLINGS = [
    "Mul(2,Sub(1,Div(I,U)))",
    "Add(Sub(1,Div(I,U)),Sub(1,Div(I,U)))",
    "Sub(2,Mul(2,Div(I,U)))",
    "Sub(3,Mul(2,Div(I,U)))",
]


def fp(space, text, iou="iou"):
    return training_fingerprint(space, parse(text, space), iou)


@pytest.mark.parametrize("clone", CEI_CLONES)
def test_clones_of_cei_are_recognised_when_w_is_one(softmax, clone):
    assert fp(softmax, clone, "one") == fp(softmax, CEI, "one") is not None


def test_which_clones_of_cei_stay_clones_when_w_is_an_iou(softmax):
    """With a detector's W in [0, 1], CEI itself and CEI - W still are; CE and CE + W are not."""
    same = [fp(softmax, clone, "iou") == fp(softmax, CEI, "iou") for clone in CEI_CLONES]
    assert same == [True, True, False, False]


def test_confidence_w_is_the_detached_probability(softmax):
    """With W = p.detach(), CEI trains like -p (the MAE-like loss), not like CE."""
    mae = "Neg(Dot(Y,Softmax(X)))"
    assert fp(softmax, CEI, "confidence") == fp(softmax, mae, "confidence")
    assert fp(softmax, CEI, "confidence") != fp(softmax, "CE", "confidence")


def test_ce_spellings_share_a_fingerprint(softmax):
    prints = {fp(softmax, text) for text in CE_SPELLINGS}
    assert len(prints) == 1 and None not in prints


def test_doubled_iou_spellings_share_a_fingerprint(reg):
    """2 (1 - i/u), written four ways (one a constant apart), trains one way: the box gradient agrees."""
    prints = {fp(reg, text) for text in DOUBLE_IOU_SPELLINGS}
    assert len(prints) == 1 and None not in prints


def test_regression_gradient_is_in_the_predicted_box(reg):
    grad = prediction_gradient(reg, parse("GIoU", reg))
    assert grad.shape[1] == 4 and grad.abs().sum() > 0


def test_fl_rewrite_shares_a_fingerprint(sigmoid):
    rewrite = ("Neg(Add(Mul(Y,Mul(Mul(Add(1,Neg(Sig(X))),Sub(1,Sig(X))),Log(Sig(X)))),"
               "Mul(Sub(1,Y),Mul(Mul(Sig(X),Sig(X)),Log(Add(1,Neg(Sig(X))))))))")
    assert fp(sigmoid, rewrite) == fp(sigmoid, "FL")


@pytest.mark.parametrize("space_name, a, b, iou", [
    ("cls_softmax", "CE", "CEI", "iou"),
    ("cls_softmax", "CEI", "CSE-Autoloss-A_cls", "iou"),
    ("cls_softmax", "CE", "Mul(2,Neg(Dot(Y,Log(Softmax(X)))))", "one"),  # twice the gradient trains otherwise
    ("cls_sigmoid", "FL", "FLI", "iou"),
    ("reg", "IoU", "GIoU", "iou"),
    ("reg", "IoU", "Mul(2,Sub(1,Div(I,U)))", "iou"),
])
def test_different_losses_have_different_fingerprints(spaces, space_name, a, b, iou):
    space = spaces[space_name]
    assert fp(space, a, iou) != fp(space, b, iou)


def test_a_loss_without_a_finite_gradient_has_no_fingerprint(softmax):
    assert fp(softmax, "Neg(Dot(Y,Sqrt(Neg(Softmax(X)))))") is None
