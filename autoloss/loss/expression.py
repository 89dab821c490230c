"""Loss expressions: the typed expression tree, its parser (no eval) and its printers.

The textual form is the CSE-Autoloss authors' DEAP prefix notation, e.g.
``Neg(Dot(Mul(Y,W),Log(Softmax(X))))``. The parser is a small recursive-descent parser over a
whitelist of tokens (identifiers, integers, parentheses, commas); it looks names up in the search
space and never evaluates anything. Aliases of the space (the authors' ``Z``, ``Q``, ``NY``...) are
expanded on reading, so every expression has one canonical spelling.

Shapes: every node is a ``matrix`` (B x C) or a ``column`` (B x 1); binary operators broadcast,
``Dot`` reduces two rows to a column, ``Softmax`` needs a matrix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from autoloss.errors import ExpressionError
from autoloss.loss.primitives import OPERATORS
from autoloss.loss.space import SearchSpace

MAX_TEXT = 20_000
MAX_NESTING = 120


@dataclass(frozen=True)
class Node:
    """One node: an operator with children, an input name, or an integer constant."""

    kind: str  # "op" | "input" | "const"
    name: str  # operator name, input name, or the constant's digits
    shape: str  # "matrix" | "column"
    children: tuple["Node", ...] = ()

    def __str__(self) -> str:
        if self.kind != "op":
            return self.name
        return f"{self.name}({','.join(str(c) for c in self.children)})"

    @cached_property
    def size(self) -> int:
        return 1 + sum(c.size for c in self.children)

    @cached_property
    def height(self) -> int:
        return 0 if not self.children else 1 + max(c.height for c in self.children)

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def uses(self, name: str) -> bool:
        return any(n.kind == "input" and n.name == name for n in self.walk())


def result_shape(op: str, arg_shapes: tuple[str, ...]) -> str | None:
    """The shape an operator returns for these argument shapes; None when it does not apply."""
    if op == "Softmax":
        return "matrix" if arg_shapes == ("matrix",) else None
    if op == "Dot":
        return "column" if "matrix" in arg_shapes else None
    return "matrix" if "matrix" in arg_shapes else "column"


# ASCII only: Python's \d and \s would also read Unicode digits (Mul(０２,X)) and spaces. A number is
# read to its end (0x2, 1.5, 2e3, 3Mul) so a malformed one is named as a whole.
_TOKEN = re.compile(r"[ \t\r\n]*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<int>[0-9][0-9A-Za-z_.]*)|(?P<punct>[(),]))")
_DIGITS = re.compile(r"[0-9]+")
SHOWN_TOKEN = 40  # longer tokens are cut in messages


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    if len(text) > MAX_TEXT:
        raise ExpressionError(f"expression too long ({len(text)} characters, at most {MAX_TEXT})")
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            at = pos + len(text[pos:]) - len(text[pos:].lstrip(" \t\r\n"))
            raise ExpressionError(f"unexpected character {text[at]!r} at position {at} in {_excerpt(text)} "
                                  "(expressions are ASCII names, integers, parentheses and commas)")
        kind = match.lastgroup
        if kind == "int" and not _DIGITS.fullmatch(match.group(kind)):
            raise ExpressionError(f"malformed number {_token(match.group(kind))} at position {match.start(kind)} "
                                  f"in {_excerpt(text)} (constants are plain decimal integers)")
        tokens.append((kind, match.group(kind), match.start(kind)))
        pos = match.end()
    if not tokens:
        raise ExpressionError("empty expression")
    return tokens


def _excerpt(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _token(token: str) -> str:
    """A token quoted for a message, cut to SHOWN_TOKEN characters."""
    return repr(token if len(token) <= SHOWN_TOKEN else token[:SHOWN_TOKEN] + "...")


class _Parser:
    def __init__(self, text: str, space: SearchSpace, expanding: tuple[str, ...]):
        self.text, self.space, self.expanding = text, space, expanding
        self.tokens = _tokenize(text)
        self.pos = 0
        self.inputs = {i.name: i for i in space.inputs}

    def error(self, message: str) -> ExpressionError:
        return ExpressionError(f"{message} in {_excerpt(self.text)} (space '{self.space.name}')")

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None, len(self.text))

    def expect(self, value: str) -> None:
        kind, got, at = self.peek()
        if got != value:
            raise self.error(f"expected '{value}' at position {at}, found {_token(got) if got else 'the end'}")
        self.pos += 1

    def parse(self) -> Node:
        node = self.expression(0)
        if self.pos != len(self.tokens):
            raise self.error(f"unexpected {_token(self.tokens[self.pos][1])} at position {self.tokens[self.pos][2]}")
        return node

    def expression(self, depth: int) -> Node:
        if depth > MAX_NESTING:
            raise self.error(f"nesting deeper than {MAX_NESTING}")
        kind, value, at = self.peek()
        if kind is None:
            raise self.error("unexpected end of expression")
        self.pos += 1
        if kind == "int":
            if len(value) > 6 or int(value) not in self.space.constants:
                shown = value if len(value) <= SHOWN_TOKEN else f"{value[:SHOWN_TOKEN]}... ({len(value):,} digits)"
                raise self.error(f"constant {shown} is not in this space (constants: "
                                 f"{', '.join(map(str, self.space.constants))})")
            return Node("const", str(int(value)), "column")
        if kind != "name":
            raise self.error(f"unexpected {_token(value)} at position {at}")
        if value in self.inputs:
            return Node("input", value, self.inputs[value].shape)
        if value in self.space.aliases:
            return self.alias(value)
        if value not in OPERATORS:
            raise self.error(f"unknown name {_token(value)} at position {at}")
        if value not in self.space.operators:
            raise self.error(f"operator '{value}' is not in this search space")
        op = OPERATORS[value]
        self.expect("(")
        children = [self.expression(depth + 1)]
        for _ in range(op.arity - 1):
            self.expect(",")
            children.append(self.expression(depth + 1))
        if self.peek()[1] == ",":
            raise self.error(f"'{value}' takes {op.arity} argument(s), got more")
        self.expect(")")
        shapes = tuple(c.shape for c in children)
        shape = result_shape(value, shapes)
        if shape is None:
            raise self.error(f"'{value}' does not apply to {' and '.join(shapes)} argument(s)")
        return Node("op", value, shape, tuple(children))

    def alias(self, name: str) -> Node:
        if name in self.expanding:
            raise self.error(f"alias '{name}' refers to itself")
        return _Parser(self.space.aliases[name], self.space, self.expanding + (name,)).parse()


def parse(text: str, space: SearchSpace) -> Node:
    """Parse a prefix expression (canonical or the authors' spelling) into a typed tree.

    Raises ExpressionError for anything malformed, unknown, out of the space or of the wrong shape.
    A named ready loss of the space (``CEI``, ``GIoU``...) is accepted too.
    """
    if not isinstance(text, str):
        raise ExpressionError("expression must be a string")
    text = space.losses.get(text.strip(), text)
    root = _Parser(text, space, ()).parse()
    if root.shape != space.output:
        hint = " (reduce the classes with Dot)" if space.output == "column" else ""
        raise ExpressionError(f"the loss must be a {space.output} (per-sample loss) but {_excerpt(text)} "
                              f"is a {root.shape}{hint}")
    return root


# --------------------------------------------------------------------------------------- printers

_PLAIN_NAMES = {"X": "x", "Y": "y", "W": "w", "I": "i", "U": "u", "E": "e"}


def _leaf(node: Node) -> str:
    return node.name if node.kind == "const" else _PLAIN_NAMES.get(node.name, node.name)


def _format(node: Node, parent_precedence: int, latex: bool) -> str:
    if node.kind != "op":
        return _leaf(node)
    if node.name == "Add" and node.children[1].kind == "op" and node.children[1].name == "Neg":
        # the authors write a - b as Add(a,Neg(b)); print it as a - b
        node = Node("op", "Sub", node.shape, (node.children[0], node.children[1].children[0]))
    op = OPERATORS[node.name]
    binary_infix = op.arity == 2 and op.precedence < 100
    args = []
    for index, child in enumerate(node.children):
        # the right operand of - and / (and anything under unary minus) needs tighter binding
        need = op.precedence + (1 if (index == 1 and node.name in ("Sub", "Div")) or op.name == "Neg" else 0)
        if latex and node.name == "Div":
            need = 0  # \frac groups its arguments
        args.append(_format(child, need if (binary_infix or op.name == "Neg") else 0, latex))
    text = (op.latex if latex else op.infix).format(*args)
    if op.precedence < parent_precedence:
        text = rf"\left({text}\right)" if latex else f"({text})"
    return text


def to_infix(node: Node) -> str:
    """Readable infix: ``-dot(y * w, log(softmax(x)))``."""
    return _format(node, 0, latex=False)


def to_latex(node: Node) -> str:
    return _format(node, 0, latex=True)
