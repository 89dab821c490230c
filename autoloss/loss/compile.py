"""Compiling a loss tree to a torch function, by walking it once (no eval, no per-call parsing).

The result is a tree of closures over the primitive table. Three patterns are fused into their
numerically exact torch forms, so that a log-probability that underflows to 0 is never floored at
the protected log's ``log(LOG_EPS)``: ``Log(Softmax(a))`` -> ``log_softmax(a)``, ``Log(Sig(a))`` ->
``logsigmoid(a)`` and ``Log(Sub(1, Sig(a)))`` / ``Log(Add(1, Neg(Sig(a))))`` -> ``logsigmoid(-a)``.
Values are the same wherever the probability does not underflow; gradients stay alive for confident
mistakes.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from autoloss.loss.expression import Node
from autoloss.loss.primitives import OPERATORS

Fn = Callable[[dict], torch.Tensor]


def _is_const(node: Node, value: str) -> bool:
    return node.kind == "const" and node.name == value


def _one_minus_sigmoid_arg(node: Node) -> Node | None:
    """``a`` when node is ``Sub(1, Sig(a))`` or ``Add(1, Neg(Sig(a)))``, else None."""
    if node.kind != "op" or len(node.children) != 2 or not _is_const(node.children[0], "1"):
        return None
    second = node.children[1]
    if node.name == "Sub" and second.name == "Sig" and second.kind == "op":
        return second.children[0]
    if node.name == "Add" and second.kind == "op" and second.name == "Neg":
        inner = second.children[0]
        if inner.kind == "op" and inner.name == "Sig":
            return inner.children[0]
    return None


def _build(node: Node) -> Fn:
    if node.kind == "input":
        name = node.name
        return lambda env: env[name]
    if node.kind == "const":
        value = node.name
        return lambda env: env["__const__"][value]
    if node.name == "Log":
        (child,) = node.children
        if child.kind == "op" and child.name == "Softmax":
            inner = _build(child.children[0])
            return lambda env: torch.log_softmax(inner(env), dim=-1)
        if child.kind == "op" and child.name == "Sig":
            inner = _build(child.children[0])
            return lambda env: F.logsigmoid(inner(env))
        arg = _one_minus_sigmoid_arg(child)
        if arg is not None:
            inner = _build(arg)
            return lambda env: F.logsigmoid(-inner(env))
    fn = OPERATORS[node.name].torch_fn
    if len(node.children) == 1:
        a = _build(node.children[0])
        return lambda env: fn(a(env))
    a, b = (_build(c) for c in node.children)
    return lambda env: fn(a(env), b(env))


class CompiledLoss:
    """A loss tree as a callable: ``loss(**inputs)`` -> element-wise loss of the space's output shape.

    Inputs are tensors keyed by the space's input names (``X``, ``Y``, ``W`` or ``I``, ``U``, ``E``);
    matrices are B x C, columns B x 1 (or B). The result has shape B x C (matrix output) or B x 1.
    """

    def __init__(self, node: Node, output_shape: str):
        self.node = node
        self.expression = str(node)
        self.output_shape = output_shape
        self._fn = _build(node)
        self._constants = sorted({n.name for n in node.walk() if n.kind == "const"})

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        reference = next(iter(inputs.values()))
        env = dict(inputs)
        env["__const__"] = {c: torch.tensor(float(c), dtype=reference.dtype, device=reference.device)
                            for c in self._constants}
        out = self._fn(env)
        return torch.broadcast_to(out, self._target_shape(inputs, out))

    def _target_shape(self, inputs: Mapping[str, torch.Tensor], out: torch.Tensor) -> torch.Size:
        shape = torch.broadcast_shapes(*(t.shape for t in inputs.values()), out.shape)
        if self.output_shape == "column" and len(shape) == 2:
            return torch.Size((shape[0], 1))
        return shape

    def __repr__(self) -> str:
        return f"CompiledLoss({self.expression})"


def compile_loss(node: Node, output_shape: str) -> CompiledLoss:
    return CompiledLoss(node, output_shape)
