"""The rescaled S-curves Sgdf, Salf, Serf, Serfc are the CSE-Autoloss authors' ones: input and output
scaled so that, like the sigmoid, they run from 0 to 1 through 1/2 with slope 1/4 at 0 (Serfc is
1 - Serf: from 1 to 0, slope -1/4). Pinned in torch (autograd) and in sympy (diff, limit), at a
value computed by hand, and in the printed forms."""

from __future__ import annotations

import math

import pytest
import sympy
import torch

from autoloss.loss.expression import parse, to_infix, to_latex
from autoloss.loss.primitives import OPERATORS

f64 = torch.float64
t = sympy.Symbol("t", real=True)

# operator -> (sign of the slope at 0, its value at x = 2 written out by hand with math)
CURVES = {
    "Serf": (1, (math.erf(math.sqrt(math.pi) / 2) + 1) / 2),  # erf(sqrt(pi) * 2 / 4)
    "Serfc": (-1, 1 - (math.erf(math.sqrt(math.pi) / 2) + 1) / 2),
    "Sgdf": (1, 2 * math.atan(math.tanh(math.pi / 4)) / math.pi + 0.5),  # gd(pi * 2 / 4) = gd(pi / 2)
    "Salf": (1, (1 / math.sqrt(2) + 1) / 2),  # alf(2 / 2) = 1 / sqrt(2)
}


@pytest.mark.parametrize("name", CURVES)
def test_torch_half_and_quarter_slope_at_zero(name):
    sign, _ = CURVES[name]
    x = torch.zeros(1, dtype=f64, requires_grad=True)
    value = OPERATORS[name].torch_fn(x)
    (slope,) = torch.autograd.grad(value.sum(), [x])
    assert value.item() == pytest.approx(0.5, abs=1e-15)
    assert slope.item() == pytest.approx(sign * 0.25, abs=1e-15)


@pytest.mark.parametrize("name", CURVES)
def test_sympy_half_and_quarter_slope_at_zero(name):
    sign, _ = CURVES[name]
    expr = OPERATORS[name].sympy_fn(t)
    assert sympy.simplify(expr.subs(t, 0) - sympy.Rational(1, 2)) == 0
    assert sympy.simplify(sympy.diff(expr, t).subs(t, 0) - sympy.Rational(sign, 4)) == 0


@pytest.mark.parametrize("name", CURVES)
def test_limits_are_zero_and_one(name):
    sign, _ = CURVES[name]
    low, high = (0, 1) if sign > 0 else (1, 0)
    expr = OPERATORS[name].sympy_fn(t)
    assert sympy.limit(expr, t, -sympy.oo) == low
    assert sympy.limit(expr, t, sympy.oo) == high
    ends = OPERATORS[name].torch_fn(torch.tensor([-1e6, 1e6], dtype=f64))
    torch.testing.assert_close(ends, torch.tensor([low, high], dtype=f64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", CURVES)
def test_value_at_two_by_hand(name):
    _, expected = CURVES[name]
    assert OPERATORS[name].torch_fn(torch.tensor(2.0, dtype=f64)).item() == pytest.approx(expected, rel=1e-14)
    assert float(OPERATORS[name].sympy_fn(sympy.Integer(2)).evalf(30)) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("name", CURVES)
def test_torch_and_sympy_forms_agree(name):
    points = [-7.5, -3.0, -0.4, 0.1, 1.0, 2.5, 9.0]
    torch_values = OPERATORS[name].torch_fn(torch.tensor(points, dtype=f64)).tolist()
    sympy_values = [float(OPERATORS[name].sympy_fn(sympy.Float(p, 30)).evalf(30)) for p in points]
    assert torch_values == pytest.approx(sympy_values, rel=1e-12, abs=1e-15)


def test_issue_figures():
    """The two figures the issue quotes: 1 + Serf(sigmoid(0)) is 1.62 (not 1.76), and the Sgdf weight
    of an easy negative at x = -5 is gd(-5 pi / 4) / pi + 1/2 = 0.0126 (not 0.0043)."""
    serf, sgdf = OPERATORS["Serf"].torch_fn, OPERATORS["Sgdf"].torch_fn
    assert 1 + serf(torch.sigmoid(torch.tensor(0.0, dtype=f64))).item() == pytest.approx(1.6230, abs=1e-4)
    assert sgdf(torch.tensor(-5.0, dtype=f64)).item() == pytest.approx(0.0126, abs=1e-4)


def test_printed_forms_name_the_rescaled_curves(sigmoid):
    node = parse("Add(Mul(Sgdf(X),Serfc(Y)),Mul(Salf(X),Serf(W)))", sigmoid)
    assert to_infix(node) == "sgdf(x) * serfc(y) + salf(x) * serf(w)"
    assert to_latex(node) == (r"\operatorname{sgdf}\left(x\right) \cdot \operatorname{serfc}\left(y\right)"
                              r" + \operatorname{salf}\left(x\right) \cdot \operatorname{serf}\left(w\right)")
