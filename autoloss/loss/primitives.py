"""The primitive operators of the loss search space: one table, torch and sympy side by side.

Each operator has a canonical name (the CSE-Autoloss authors' DEAP spelling: ``Neg``, ``Log``, ``Sig``,
``Serf``...), an arity, a batched autograd-safe torch implementation, a sympy counterpart (the ideal
mathematical function, used by the convergence property verification) and infix / LaTeX templates.

Protected operators, as the CSE-Autoloss authors' released code defines them (the paper itself only
says that the operators are protected): ``Log`` is ``log(x + LOG_EPS)`` with their ``LOG_EPS =
1e-20``, which keeps ``log(0)`` finite but leaves the log of a negative argument NaN, so that the
validity gate rejects a loss whose log argument can go negative (a clamp would turn that region into
a constant with zero gradient: dead, yet finite, it passed both cheap gates); ``Div`` is
``x1 / (x2 + eps)`` with the denominator kept away from zero; ``Exp`` clamps its argument to
``EXP_MAX``. ``Sqrt`` is deliberately unprotected: a square root of a negative number is the kind of
defect the validity gate exists to catch.

The S-shaped curves gd, alf, erf and erfc enter as the CSE-Autoloss authors' rescaled versions,
whose input and output are both scaled so that, like the sigmoid, each runs from 0 to 1 through 1/2
with slope 1/4 at 0 (printed ``sgdf``, ``salf``, ``serf``, ``serfc`` in infix and LaTeX)::

    Sgdf(x)  = gd(pi x / 4) / pi + 1/2     gd(x)  = 2 atan(tanh(x / 2))
    Salf(x)  = (alf(x / 2) + 1) / 2        alf(x) = x / sqrt(1 + x^2)
    Serf(x)  = (erf(sqrt(pi) x / 4) + 1) / 2
    Serfc(x) = 1 - Serf(x) = erfc(sqrt(pi) x / 4) / 2
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import sympy
import torch
import torch.nn.functional as F

EPS = 1e-7
LOG_EPS = 1e-20  # the authors' protected log; a normal number in float32 too
EXP_MAX = 60.0


def protected_log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x + LOG_EPS)


def protected_exp(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.clamp(x, max=EXP_MAX))


def protected_div(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    den = x2 + EPS
    # keep |den| >= EPS with den's sign, so that x2 = -eps cannot divide by zero
    safe = torch.where(den.abs() < EPS, torch.full_like(den, EPS) * torch.where(den < 0, -1.0, 1.0), den)
    return x1 / safe


def class_dot(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Class-wise dot product of two B x C matrices (either may be a broadcast B x 1): B x 1."""
    return (x1 * x2).sum(dim=-1, keepdim=True)


def softmax_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def scaled_gd(x: torch.Tensor) -> torch.Tensor:
    """Sgdf: the Gudermannian gd(t) = 2 atan(tanh(t / 2)) at t = pi x / 4, divided by pi, plus 1/2."""
    return 2.0 * torch.atan(torch.tanh(x * (math.pi / 8.0))) / math.pi + 0.5


def scaled_alf(x: torch.Tensor) -> torch.Tensor:
    """Salf: (alf(x / 2) + 1) / 2 with the algebraic sigmoid alf(t) = t / sqrt(1 + t^2)."""
    half = x / 2.0
    return (half * torch.rsqrt(1.0 + half * half) + 1.0) / 2.0


def scaled_erf(x: torch.Tensor) -> torch.Tensor:
    """Serf: (erf(sqrt(pi) x / 4) + 1) / 2."""
    return (torch.erf(x * (math.sqrt(math.pi) / 4.0)) + 1.0) / 2.0


def scaled_erfc(x: torch.Tensor) -> torch.Tensor:
    """Serfc: 1 - Serf(x), computed as erfc(sqrt(pi) x / 4) / 2 (precise where Serf is near 1)."""
    return torch.erfc(x * (math.sqrt(math.pi) / 4.0)) / 2.0


def _sym_softmax(*args):  # pragma: no cover - softmax is handled column-wise by symbolic.py
    raise TypeError("softmax has no scalar sympy form; symbolic.py expands it over the class columns")


@dataclass(frozen=True)
class Operator:
    """One primitive: ``torch_fn`` acts on tensors, ``sympy_fn`` on sympy expressions."""

    name: str
    arity: int
    torch_fn: Callable[..., torch.Tensor]
    sympy_fn: Callable[..., sympy.Expr]
    infix: str  # Python-like template, {0} {1} are the arguments
    latex: str  # LaTeX template
    precedence: int = 100  # for parenthesising infix/LaTeX: higher binds tighter
    row_wise: bool = False  # True when the result depends on the whole class row (Softmax, Dot)


def _sym_sigmoid(x):
    return 1 / (1 + sympy.exp(-x))


def _sym_scaled_gd(x):
    return 2 * sympy.atan(sympy.tanh(sympy.pi * x / 8)) / sympy.pi + sympy.Rational(1, 2)


def _sym_scaled_alf(x):
    half = x / 2
    return (half / sympy.sqrt(1 + half**2) + 1) / 2


def _sym_scaled_erf(x):
    return (sympy.erf(sympy.sqrt(sympy.pi) * x / 4) + 1) / 2


def _sym_scaled_erfc(x):
    return sympy.erfc(sympy.sqrt(sympy.pi) * x / 4) / 2


OPERATORS: dict[str, Operator] = {
    op.name: op
    for op in [
        # unary (16)
        Operator("Neg", 1, torch.neg, lambda a: -a, "-{0}", "-{0}", precedence=50),
        Operator("Exp", 1, protected_exp, sympy.exp, "exp({0})", r"e^{{{0}}}"),
        Operator("Log", 1, protected_log, sympy.log, "log({0})", r"\log\left({0}\right)"),
        Operator("Abs", 1, torch.abs, sympy.Abs, "abs({0})", r"\left|{0}\right|"),
        Operator("Sqrt", 1, torch.sqrt, sympy.sqrt, "sqrt({0})", r"\sqrt{{{0}}}"),
        Operator("Softmax", 1, softmax_rows, _sym_softmax, "softmax({0})",
                 r"\operatorname{{softmax}}\left({0}\right)", row_wise=True),
        Operator("Softplus", 1, F.softplus, lambda a: sympy.log(1 + sympy.exp(a)), "softplus({0})",
                 r"\operatorname{{softplus}}\left({0}\right)"),
        Operator("Sig", 1, torch.sigmoid, _sym_sigmoid, "sigmoid({0})", r"\sigma\left({0}\right)"),
        Operator("Sgdf", 1, scaled_gd, _sym_scaled_gd, "sgdf({0})", r"\operatorname{{sgdf}}\left({0}\right)"),
        Operator("Salf", 1, scaled_alf, _sym_scaled_alf, "salf({0})", r"\operatorname{{salf}}\left({0}\right)"),
        Operator("Serf", 1, scaled_erf, _sym_scaled_erf, "serf({0})", r"\operatorname{{serf}}\left({0}\right)"),
        Operator("Serfc", 1, scaled_erfc, _sym_scaled_erfc, "serfc({0})",
                 r"\operatorname{{serfc}}\left({0}\right)"),
        Operator("Tanh", 1, torch.tanh, sympy.tanh, "tanh({0})", r"\tanh\left({0}\right)"),
        Operator("Relu", 1, torch.relu, lambda a: sympy.Max(a, 0), "relu({0})",
                 r"\operatorname{{relu}}\left({0}\right)"),
        Operator("Sin", 1, torch.sin, sympy.sin, "sin({0})", r"\sin\left({0}\right)"),
        Operator("Cos", 1, torch.cos, sympy.cos, "cos({0})", r"\cos\left({0}\right)"),
        # binary (5)
        Operator("Add", 2, torch.add, lambda a, b: a + b, "{0} + {1}", "{0} + {1}", precedence=10),
        Operator("Sub", 2, torch.sub, lambda a, b: a - b, "{0} - {1}", "{0} - {1}", precedence=10),
        Operator("Mul", 2, torch.mul, lambda a, b: a * b, "{0} * {1}", r"{0} \cdot {1}", precedence=20),
        Operator("Div", 2, protected_div, lambda a, b: a / b, "{0} / {1}", r"\frac{{{0}}}{{{1}}}", precedence=20),
        Operator("Dot", 2, class_dot, lambda a, b: a * b, "dot({0}, {1})",
                 r"\operatorname{{dot}}\left({0}, {1}\right)", row_wise=True),
    ]
}

UNARY = [name for name, op in OPERATORS.items() if op.arity == 1]
BINARY = [name for name, op in OPERATORS.items() if op.arity == 2]
