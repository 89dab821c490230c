"""The ready losses compute what their names say, checked against torch, mmdet and closed forms,
and the authors' four CSE-Autoloss strings parse, pass the gates and compute the published formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autoloss.loss.gates.convergence import ConvergenceGate
from autoloss.loss.gates.validity import ValidityGate
from autoloss.loss.compile import compile_loss
from autoloss.loss.expression import parse
from autoloss.loss.primitives import EPS, EXP_MAX, LOG_EPS, protected_div, protected_exp, protected_log
from autoloss.loss.samples import box_areas

f64 = torch.float64


@pytest.fixture(scope="module")
def mmdet_focal():
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss

    return py_sigmoid_focal_loss


@pytest.fixture(scope="module")
def mmdet_overlaps():
    from mmdet.structures.bbox import bbox_overlaps

    return bbox_overlaps


def run(space, text, **inputs):
    return compile_loss(parse(text, space), space.output)(**inputs)


# ------------------------------------------------------------------------------ inputs


def classification_batch(seed: int, rows: int = 64, classes: int = 6):
    """Random float64 logits (some rows with +-80 entries) and integer labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, classes, generator=g, dtype=f64) * 6
    x[0] = 80.0
    x[1] = -80.0
    x[2, :] = torch.tensor([80.0, -80.0] * (classes // 2), dtype=f64)
    x[3, :] = torch.tensor([-80.0, 80.0] * (classes // 2), dtype=f64)
    x[4, 0], x[5, 0] = 80.0, -80.0
    labels = torch.randint(0, classes, (rows,), generator=g)
    labels[2:6] = 0
    return x, labels


def random_boxes(seed: int, n: int = 200):
    """Aligned valid x1y1x2y2 pairs: overlapping, identical, disjoint and nested."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=f64) * 200
    wh = torch.rand(n, 2, generator=g, dtype=f64) * 99 + 1
    target = torch.cat([xy, xy + wh], dim=1)
    jitter = torch.randn(n, 4, generator=g, dtype=f64) * wh.repeat(1, 2) * 0.4
    pred = target + jitter
    pred = torch.cat([torch.minimum(pred[:, :2], pred[:, 2:] - 0.5), pred[:, 2:]], dim=1)  # valid boxes
    pred[0] = target[0]  # identical
    pred[1] = target[1] + 1000.0  # disjoint, far
    pred[2] = torch.cat([target[2, :2] + 0.1 * wh[2], target[2, 2:] - 0.1 * wh[2]])  # nested inside
    pred[3] = torch.cat([target[3, :2] - wh[3], target[3, 2:] + wh[3]])  # enclosing it
    return pred, target


# ------------------------------------------------------------------------------ softmax losses


def test_ce_equals_torch_cross_entropy(softmax):
    """CE(x, one-hot y) == F.cross_entropy(x, labels, reduction='none'), large logits included."""
    x, labels = classification_batch(0)
    y = F.one_hot(labels, x.shape[1]).to(f64)
    got = run(softmax, "CE", X=x, Y=y)
    assert got.shape == (x.shape[0], 1)
    expected = F.cross_entropy(x, labels, reduction="none")
    torch.testing.assert_close(got[:, 0], expected, rtol=1e-12, atol=1e-12)
    assert expected[3] > 150  # a confident mistake (gt at -80, others at +80) is not clamped


def test_ce_gradient_equals_torch(softmax):
    """CE's gradient is softmax(x) - y, as cross_entropy's, alive for confident mistakes."""
    x, labels = classification_batch(1)
    y = F.one_hot(labels, x.shape[1]).to(f64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(run(softmax, "CE", X=xa, Y=y).sum(), [xa])
    (gb,) = torch.autograd.grad(F.cross_entropy(xb, labels, reduction="sum"), [xb])
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)
    assert ga[3, 0] == pytest.approx(-1.0)


def test_cei_is_iou_weighted_cross_entropy(softmax):
    """CEI(x, y, w) == -w * log_softmax(x)[gt] with w a B x 1 column."""
    x, labels = classification_batch(2)
    y = F.one_hot(labels, x.shape[1]).to(f64)
    w = torch.rand(x.shape[0], 1, generator=torch.Generator().manual_seed(3), dtype=f64)
    got = run(softmax, "CEI", X=x, Y=y, W=w)
    expected = -w[:, 0] * torch.log_softmax(x, dim=1).gather(1, labels[:, None])[:, 0]
    torch.testing.assert_close(got[:, 0], expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ sigmoid losses


def sigmoid_batch(seed: int):
    """Logits B x C, one-hot targets with a third of the rows all-negative, W = IoU at the gt only."""
    x, labels = classification_batch(seed, rows=60, classes=6)
    y = F.one_hot(labels, x.shape[1]).to(f64)
    y[::3] = 0.0
    iou = torch.rand(x.shape[0], 1, generator=torch.Generator().manual_seed(seed + 100), dtype=f64)
    return x, y, iou * y


def test_fl_equals_mmdet_focal_loss_without_alpha(sigmoid, mmdet_focal):
    """FL == 2 * mmdet py_sigmoid_focal_loss(gamma=2, alpha=0.5) (alpha=0.5 halves both terms)."""
    x, y, w = sigmoid_batch(0)
    got = run(sigmoid, "FL", X=x, Y=y, W=w)
    assert got.shape == x.shape
    expected = 2 * mmdet_focal(x, y, gamma=2.0, alpha=0.5, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # confident mistakes keep their full log term: negatives at +80, the positive at -80
    assert y[0].sum() == 0 and got[0].tolist() == pytest.approx([80.0] * x.shape[1])
    assert y[1].sum() == 1 and got[1][y[1] == 1].item() == pytest.approx(80.0)


def test_fl_equals_the_focal_formula(sigmoid):
    """FL == -[y (1-s)^2 log s + (1-y) s^2 log(1-s)], s = sigmoid(x), on moderate logits."""
    x, y, w = sigmoid_batch(1)
    x = x.clamp(-12, 12)  # 1 - sigmoid(x) keeps its precision (large logits: the mmdet test)
    s = torch.sigmoid(x)
    expected = -(y * (1 - s) ** 2 * torch.log(s) + (1 - y) * s**2 * torch.log(1 - s))
    torch.testing.assert_close(run(sigmoid, "FL", X=x, Y=y, W=w), expected, rtol=1e-9, atol=1e-12)


def test_fli_equals_the_papers_formula(sigmoid):
    """FLI == -w'[y (1-s) log s + (1-y) s log(1-s)], w' = IoU at y=1 entries and 1 at y=0 entries."""
    x, y, w = sigmoid_batch(2)
    x = x.clamp(-12, 12)  # 1 - sigmoid(x) keeps its precision (large logits: the mmdet test)
    s = torch.sigmoid(x)
    w_prime = torch.where(y == 1, w, torch.ones_like(w))
    expected = -w_prime * (y * (1 - s) * torch.log(s) + (1 - y) * s * torch.log(1 - s))
    got = run(sigmoid, "FLI", X=x, Y=y, W=w)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert (got[::3] > 0).all()  # all-negative rows are still penalised (w' = 1 there)


@pytest.mark.parametrize("text", ["Log(Sub(1,Sig(X)))", "Log(Add(1,Neg(Sig(X))))"])
def test_log_one_minus_sigmoid_is_exact_for_large_logits(sigmoid, text):
    """log(1 - sigmoid(x)) in either spelling is logsigmoid(-x): -80 at x=80, not log(EPS)."""
    x = torch.tensor([[80.0, 0.0, -80.0]], dtype=f64)
    got = run(sigmoid, text, X=x, Y=torch.zeros_like(x), W=torch.zeros_like(x))
    torch.testing.assert_close(got, F.logsigmoid(-x), rtol=1e-12, atol=1e-12)
    assert got[0, 0] == pytest.approx(-80.0)


# ------------------------------------------------------------------------------ regression losses


@pytest.mark.parametrize("name, mode", [("GIoU", "giou"), ("IoU", "iou")])
def test_box_losses_equal_one_minus_mmdet_overlaps(reg, mmdet_overlaps, name, mode):
    """IoU / GIoU from box_areas' (I, U, E) == 1 - mmdet bbox_overlaps(mode, is_aligned=True)."""
    pred, target = random_boxes(0)
    i, u, e = box_areas(pred, target)
    got = run(reg, name, I=i, U=u, E=e)
    assert got.shape == (pred.shape[0],)
    expected = 1 - mmdet_overlaps(pred, target, mode=mode, is_aligned=True)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got[0] == pytest.approx(0.0, abs=1e-6)  # identical boxes
    assert got[1] == pytest.approx(1.0 if mode == "iou" else 2.0, abs=1e-3)  # far apart


def test_box_areas_on_known_boxes():
    """box_areas: intersection, union (+EPS) and enclosing area (+EPS) of two hand-made boxes."""
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=f64)
    target = torch.tensor([[1.0, 1.0, 4.0, 3.0]], dtype=f64)
    i, u, e = box_areas(pred, target)
    assert i.item() == pytest.approx(1.0)
    assert u.item() == pytest.approx(4.0 + 6.0 - 1.0 + EPS, abs=1e-15)
    assert e.item() == pytest.approx(12.0 + EPS, abs=1e-15)


# ------------------------------------------------------------------------------ the authors' strings

AUTHORS = {
    "CSE-Autoloss-A_cls": ("cls_softmax", "Neg(Dot(Mul(Y,Add(1,Sin(Z))),Log(Softmax(X))))"),
    "CSE-Autoloss-A_reg": ("reg", "Add(1,Neg(Add(Div(I,U),Neg(Div(Add(E,Neg(Add(I,2))),E)))))"),
    "CSE-Autoloss-B_cls": ("cls_sigmoid", "Neg(Add(Mul(Q,Mul(Add(1,Serf(Sig(NY))),Log(Sig(X)))),Mul(Add(Sgdf(X),"
                                          "Neg(Q)),Mul(Add(Add(1,Neg(Q)),Neg(Add(1,Neg(Sig(X))))),Log(Add(1,Neg("
                                          "Sig(X))))))))"),
    "CSE-Autoloss-B_reg": ("reg", "Neg(Div(Add(Div(Neg(Add(Neg(E),Add(1,I))),Neg(Add(3,Add(2,U)))),Add(Div(E,E),"
                                  "Div(Neg(E),Neg(1)))),Neg(Add(Div(Neg(Add(U,Div(I,1))),Neg(3)),Neg(E)))))"),
}


@pytest.mark.parametrize("name", AUTHORS)
def test_authors_string_parses_and_round_trips(spaces, name):
    """Each authors' string parses in its space, is the bundled ready loss, and its canonical form
    reparses to itself."""
    space_name, text = AUTHORS[name]
    space = spaces[space_name]
    node = parse(text, space)
    assert node.shape == space.output
    assert node == parse(space.losses[name], space)
    canonical = str(node)
    assert str(parse(canonical, space)) == canonical
    assert parse(canonical, space) == node


@pytest.mark.parametrize("name", AUTHORS)
def test_authors_string_passes_the_gates(spaces, name):
    """Each authors' loss passes the validity gate and the convergence gate."""
    space_name, text = AUTHORS[name]
    space = spaces[space_name]
    node = parse(text, space)
    validity = ValidityGate(space).check(node)
    assert validity.passed, validity.reason
    gate = ConvergenceGate(space, symbolic="ambiguous", timeout=5, workers=1)
    try:
        (verdict,) = gate.evaluate([node])
    finally:
        gate.close()
    assert verdict.passed, verdict.reason


def test_a_cls_formula(softmax):
    """A_cls == -(1 + sin(w)) * log_softmax(x)[gt]."""
    x, labels = classification_batch(4)
    y = F.one_hot(labels, x.shape[1]).to(f64)
    w = torch.rand(x.shape[0], 1, generator=torch.Generator().manual_seed(5), dtype=f64)
    got = run(softmax, AUTHORS["CSE-Autoloss-A_cls"][1], X=x, Y=y, W=w)
    expected = -(1 + torch.sin(w[:, 0])) * torch.log_softmax(x, dim=1).gather(1, labels[:, None])[:, 0]
    torch.testing.assert_close(got[:, 0], expected, rtol=1e-12, atol=1e-12)


def test_a_reg_formula(reg):
    """A_reg == (1 - i/u) + (1 - (i + 2)/e)."""
    i, u, e = box_areas(*random_boxes(1))
    got = run(reg, AUTHORS["CSE-Autoloss-A_reg"][1], I=i, U=u, E=e)
    torch.testing.assert_close(got, (1 - i / u) + (1 - (i + 2) / e), rtol=1e-6, atol=1e-9)


def test_b_reg_formula(reg):
    """B_reg simplifies to ((1 + i - e)/(5 + u) + 1 + e) / ((u + i)/3 - e)."""
    i, u, e = box_areas(*random_boxes(2))
    got = run(reg, AUTHORS["CSE-Autoloss-B_reg"][1], I=i, U=u, E=e)
    expected = ((1 + i - e) / (5 + u) + 1 + e) / ((u + i) / 3 - e)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


def _paper_b_cls(x, y, w):
    """CSE-Autoloss-B_cls as section 4.1 of the paper writes it, with the authors' rescaled curves:
    -[wy (1 + Serf(sigmoid(1 - y))) log sigmoid(x) + (Sgdf(x) - wy)(sigmoid(x) - wy) log(1 - sigmoid(x))],
    Serf(t) = (erf(sqrt(pi) t / 4) + 1) / 2, Sgdf(t) = gd(pi t / 4) / pi + 1/2, gd(t) = 2 atan(tanh(t / 2))."""
    s = torch.sigmoid(x)
    serf = (torch.erf(math.sqrt(math.pi) * torch.sigmoid(1 - y) / 4) + 1) / 2
    sgdf = 2 * torch.atan(torch.tanh(math.pi * x / 4 / 2)) / math.pi + 0.5
    wy = w * y
    return -(wy * (1 + serf) * torch.log(s) + (sgdf - wy) * (s - wy) * torch.log(1 - s))


def _b_cls_batch():
    """A small fixed batch: 4 rows x 3 classes, two positives (IoU 0.9 and 0.35), one all-negative row."""
    x = torch.tensor([[2.0, -1.0, 0.0], [-5.0, 0.5, 3.0], [1.5, -2.5, -0.2], [0.0, 4.0, -3.0]], dtype=f64)
    labels = torch.tensor([0, 2, 3, 1])  # 3 = background
    iou = torch.tensor([0.9, 0.35, 0.0, 0.6], dtype=f64)
    y = F.one_hot(labels, 4)[:, :3].to(f64)
    return x, labels, y, iou


def test_b_cls_formula(sigmoid):
    """The compiled authors' string equals the paper's formula written out by hand, on a fixed batch and
    on a random one (the arguments of B_cls: W = IoU * y, as the space feeds it)."""
    x, _, y, iou = _b_cls_batch()
    w = iou[:, None] * y
    got = run(sigmoid, AUTHORS["CSE-Autoloss-B_cls"][1], X=x, Y=y, W=w)
    torch.testing.assert_close(got, _paper_b_cls(x, y, iou[:, None]), rtol=1e-12, atol=1e-14)
    x, y, q = sigmoid_batch(3)
    x = x.clamp(-12, 12)  # 1 - sigmoid(x) keeps its precision (large logits: the mmdet test)
    got = run(sigmoid, AUTHORS["CSE-Autoloss-B_cls"][1], X=x, Y=y, W=q)
    torch.testing.assert_close(got, _paper_b_cls(x, y, q), rtol=1e-9, atol=1e-12)


def test_zoo_b_cls_is_the_papers_formula():
    """The committed zoo's B_cls function, and its loss module (alpha off, no reduction, IoU given), compute
    the paper's formula on the fixed batch."""
    pytest.importorskip("mmdet")
    from autoloss.zoo.cse_autoloss import CSEAutolossBClsLoss, cse_autoloss_b_cls_loss

    x, labels, y, iou = _b_cls_batch()
    expected = _paper_b_cls(x, y, iou[:, None])
    got = cse_autoloss_b_cls_loss(x, y, iou[:, None] * y)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    module = CSEAutolossBClsLoss(alpha=None, reduction="none")
    torch.testing.assert_close(module(x, labels, iou=iou), expected, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------ protected operators


def test_protected_operators_stay_finite():
    """Log adds LOG_EPS (the authors' log(x + 1e-20): finite at 0, NaN below it), Exp clamps at EXP_MAX,
    Div never divides by zero (also at x2 = -EPS)."""
    for dtype in (f64, torch.float32):
        zero, negative = protected_log(torch.tensor([0.0, -3.0], dtype=dtype)).tolist()
        assert zero == pytest.approx(math.log(LOG_EPS), rel=1e-6) and math.isnan(negative)
    assert protected_exp(torch.tensor(1000.0, dtype=f64)).item() == pytest.approx(math.exp(EXP_MAX))
    for den in (0.0, -EPS, -2 * EPS):
        out = protected_div(torch.tensor(1.0, dtype=f64), torch.tensor(den, dtype=f64))
        assert torch.isfinite(out)
    assert protected_div(torch.tensor(6.0, dtype=f64), torch.tensor(3.0, dtype=f64)).item() == pytest.approx(2.0)


@pytest.mark.parametrize("text, expected", [
    ("Log(Exp(1))", lambda i, u: torch.ones_like(i)),
    ("Add(Sub(1,Div(I,U)),Log(Sqrt(1)))", lambda i, u: 1 - i / u),
])
def test_log_of_a_unary_op_on_the_constant_1_compiles(reg, text, expected):
    """Log(<unary>(1)) compiles (it once crashed the Log(1 - sigmoid) fusion) and has its value."""
    i = torch.tensor([1.0, 2.0], dtype=f64)
    out = run(reg, text, I=i, U=i + 1, E=i + 2)
    torch.testing.assert_close(out, expected(i, i + 1), rtol=1e-6, atol=1e-9)
