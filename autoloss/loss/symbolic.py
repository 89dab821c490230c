"""Loss trees as sympy expressions, in the reductions the convergence property verification uses.

A matrix value is a list of sympy expressions, one per class column; a column value is a list of
one. Element-wise operators act per column, binary ones broadcast, ``Softmax`` and ``Dot`` act over
the columns. Sympy sees the ideal functions (plain log, division and exp, not the protected ones).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import sympy

from autoloss.loss.expression import Node
from autoloss.loss.primitives import OPERATORS

Columns = list[sympy.Expr]


def to_sympy_columns(node: Node, env: Mapping[str, Sequence[sympy.Expr]]) -> Columns:
    """Evaluate the tree over symbolic columns; ``env`` maps each input name to its columns."""
    if node.kind == "input":
        return list(env[node.name])
    if node.kind == "const":
        return [sympy.Integer(int(node.name))]
    args = [to_sympy_columns(child, env) for child in node.children]
    if node.name == "Softmax":
        exps = [sympy.exp(a) for a in args[0]]
        total = sympy.Add(*exps)
        return [e / total for e in exps]
    if node.name == "Dot":
        a, b = _broadcast(*args)
        return [sympy.Add(*(p * q for p, q in zip(a, b)))]
    fn = OPERATORS[node.name].sympy_fn
    if len(args) == 1:
        return [fn(a) for a in args[0]]
    a, b = _broadcast(*args)
    return [fn(p, q) for p, q in zip(a, b)]


def _broadcast(a: Columns, b: Columns) -> tuple[Columns, Columns]:
    if len(a) == len(b):
        return a, b
    if len(a) == 1:
        return a * len(b), b
    if len(b) == 1:
        return a, b * len(a)
    raise ValueError(f"cannot broadcast {len(a)} columns against {len(b)}")


def to_sympy(node: Node, env: Mapping[str, Sequence[sympy.Expr] | sympy.Expr]) -> sympy.Expr:
    """The loss as one sympy expression (the output must reduce to a single column)."""
    columns = {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in env.items()}
    result = to_sympy_columns(node, columns)
    if len(result) != 1:
        raise ValueError("the expression does not reduce to one column in this environment")
    return result[0]
