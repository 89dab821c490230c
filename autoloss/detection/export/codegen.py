"""A loss tree as readable torch code: one Python function, and the primitives it calls.

The function computes exactly what :func:`autoloss.loss.compile.compile_loss` computes: the same
torch operations in the same places, the protected primitives of :mod:`autoloss.loss.primitives`
(their source is copied, so EPS, LOG_EPS and EXP_MAX are the same), and the same three fusions
(``Log(Softmax(a))`` -> ``log_softmax(a)``, ``Log(Sig(a))`` -> ``logsigmoid(a)``,
``Log(Sub(1, Sig(a)))`` / ``Log(Add(1, Neg(Sig(a))))`` -> ``logsigmoid(-a)``). For readability,
``Add``, ``Sub``, ``Mul`` and ``Neg`` are written as Python operators (a constant beside a tensor as
a plain number), a call repeated in the tree is computed once into a named temporary, and long
expressions are split into temporaries ``t1``, ``t2``... The tree is walked as data; nothing is
evaluated.
"""

from __future__ import annotations

import inspect
import keyword
import textwrap
from collections import Counter
from dataclasses import dataclass

from autoloss.loss import primitives
from autoloss.loss.compile import _one_minus_sigmoid_arg
from autoloss.loss.expression import Node, to_infix
from autoloss.loss.primitives import OPERATORS
from autoloss.loss.space import SearchSpace

MAX_PIECE = 72  # characters of one expression before it is split into temporaries

# operator -> call template; Add, Sub, Mul and Neg are Python operators (see _INFIX)
CALLS = {
    "Exp": "protected_exp({0})",
    "Log": "protected_log({0})",
    "Abs": "torch.abs({0})",
    "Sqrt": "torch.sqrt({0})",
    "Softmax": "torch.softmax({0}, dim=-1)",
    "Softplus": "F.softplus({0})",
    "Sig": "torch.sigmoid({0})",
    "Sgdf": "scaled_gd({0})",
    "Salf": "scaled_alf({0})",
    "Serf": "scaled_erf({0})",
    "Serfc": "scaled_erfc({0})",
    "Tanh": "torch.tanh({0})",
    "Relu": "torch.relu({0})",
    "Sin": "torch.sin({0})",
    "Cos": "torch.cos({0})",
    "Div": "protected_div({0}, {1})",
    "Dot": "class_dot({0}, {1})",
}
_INFIX = {"Add": ("+", 10), "Sub": ("-", 10), "Mul": ("*", 20)}
_NEG = 30  # unary minus binds tighter than * in Python
_ATOM = 100

# the primitives whose source is copied into an exported module, by the operator that calls them
HELPERS = {
    "Exp": primitives.protected_exp,
    "Log": primitives.protected_log,
    "Div": primitives.protected_div,
    "Dot": primitives.class_dot,
    "Sgdf": primitives.scaled_gd,
    "Salf": primitives.scaled_alf,
    "Serf": primitives.scaled_erf,
    "Serfc": primitives.scaled_erfc,
}
# names of temporaries for a call over one named value: sigmoid_x, exp_w, ...
_CALL_WORDS = {"Exp": "exp", "Log": "log", "Abs": "abs", "Sqrt": "sqrt", "Softmax": "softmax",
               "Softplus": "softplus", "Sig": "sigmoid", "Sgdf": "sgdf", "Salf": "salf", "Serf": "serf",
               "Serfc": "serfc", "Tanh": "tanh", "Relu": "relu", "Sin": "sin", "Cos": "cos",
               "Div": "over", "Dot": "dot"}
_CONST_WORDS = {"1": "one", "2": "two", "3": "three"}
# names an exported module defines at the top level: parameters and temporaries must not shadow them
RESERVED = {"torch", "F", "math", "nn", "Tensor", "MODELS", "EPS", "LOG_EPS", "EXP_MAX", "weight_reduce_loss",
            "per_sample", "per_element", "box_areas"} | {h.__name__ for h in HELPERS.values()}

assert set(CALLS) | set(_INFIX) | {"Neg"} == set(OPERATORS), "every primitive needs a code form"


def parameter_names(space: SearchSpace) -> list[str]:
    """The generated function's parameters: the space's input names in role order
    (logits, target, iou; or intersection, union, enclosing), made safe as Python names."""
    roles = ("intersection", "union", "enclosing") if space.mode == "regression" else ("logits", "target", "iou")
    names = []
    for role in roles:
        name = space.input_for(role).name
        while keyword.iskeyword(name) or name in RESERVED or name in names:
            name += "_"
        names.append(name)
    return names


@dataclass(frozen=True)
class LossCode:
    """The generated function of one loss: its source, and the copied primitives it needs."""

    name: str
    source: str
    helpers: tuple[str, ...]  # names of functions of HELPERS it calls
    broadcasts: str | None  # "per_sample" / "per_element" when the tree reads no input, else None


def helper_source(name: str) -> str:
    """The source of one copied primitive (as autoloss.loss.primitives defines it)."""
    function = {h.__name__: h for h in HELPERS.values()}[name]
    return inspect.getsource(function).rstrip() + "\n"


def _fused_arg(node: Node) -> tuple[str, Node] | None:
    """For a fused ``Log(...)``: (the torch form, the argument it is applied to); else None."""
    if node.kind != "op" or node.name != "Log":
        return None
    (child,) = node.children
    if child.kind == "op" and child.name == "Softmax":
        return "torch.log_softmax({0}, dim=-1)", child.children[0]
    if child.kind == "op" and child.name == "Sig":
        return "F.logsigmoid({0})", child.children[0]
    arg = _one_minus_sigmoid_arg(child)
    if arg is not None:
        return "F.logsigmoid(-{0})", arg
    return None


def _evaluated_children(node: Node) -> tuple[Node, ...]:
    fused = _fused_arg(node)
    return (fused[1],) if fused else node.children


def _is_call(node: Node) -> bool:
    return node.kind == "op" and node.name not in _INFIX and node.name != "Neg"


def _reads_no_input(node: Node) -> bool:
    return all(n.kind != "input" for n in node.walk())


def _shared_calls(root: Node) -> set[str]:
    """Calls computed more than once in the tree (outside the ones already shared), largest first."""
    shared: set[str] = set()
    while True:
        counts: Counter = Counter()
        seen: set[str] = set()

        def visit(node: Node) -> None:
            key = str(node)
            if node.kind != "op":
                return
            counts[key] += 1
            if key in shared and key in seen:
                return  # computed once: its inside is not repeated
            seen.add(key)
            for child in _evaluated_children(node):
                visit(child)

        visit(root)
        sizes = {str(n): n.size for n in root.walk()}
        repeated = [key for key, count in counts.items()
                    if count > 1 and key not in shared and _is_call(_node_of(root, key))]
        if not repeated:
            return shared
        shared.add(max(repeated, key=lambda k: (sizes[k], k)))


def _node_of(root: Node, key: str) -> Node:
    return next(n for n in root.walk() if str(n) == key)


class _Writer:
    """Renders one tree bottom-up into statements and a final expression."""

    def __init__(self, root: Node, space: SearchSpace):
        self.root = root
        self.params = dict(zip((space.input_for(r).name for r in _roles(space)), parameter_names(space)))
        self.reference = parameter_names(space)[0]  # constants take its dtype and device
        self.shared = _shared_calls(root)
        self.statements: list[str] = []
        self.constants: dict[str, str] = {}  # digits -> tensor name
        self.done: dict[str, str] = {}  # shared call -> its temporary
        self.used = set(self.params.values()) | RESERVED
        self.helpers: set[str] = set()
        self.temp_count = 0

    # -- names --------------------------------------------------------------------------------

    def fresh(self, base: str | None) -> str:
        if base is None or len(base) > 24:
            while True:
                self.temp_count += 1
                name = f"t{self.temp_count}"
                if name not in self.used:
                    break
        else:
            name, suffix = base, 1
            while name in self.used or keyword.iskeyword(name):
                suffix += 1
                name = f"{base}_{suffix}"
        self.used.add(name)
        return name

    def word(self, node: Node) -> str | None:
        """A short lower-case word for a leaf or an already named value, for temporary names."""
        if node.kind == "input":
            return node.name.lower() if node.name.isidentifier() else None
        if node.kind == "const":
            return _CONST_WORDS.get(node.name, f"c{node.name}")
        return self.done.get(str(node))

    def shared_name(self, node: Node) -> str | None:
        fused = _fused_arg(node)
        if fused:
            inner = self.word(fused[1])
            prefix = {"torch.log_softmax({0}, dim=-1)": "log_softmax", "F.logsigmoid({0})": "logsigmoid",
                      "F.logsigmoid(-{0})": "logsigmoid_neg"}[fused[0]]
            return f"{prefix}_{inner}" if inner else None
        words = [self.word(c) for c in node.children]
        if any(w is None for w in words):
            return None
        if len(words) == 1:
            return f"{_CALL_WORDS[node.name]}_{words[0]}"
        return f"{words[0]}_{_CALL_WORDS[node.name]}_{words[1]}"

    def constant(self, digits: str) -> str:
        if digits not in self.constants:
            name = self.fresh(_CONST_WORDS.get(digits, f"c{digits}"))
            self.constants[digits] = name
        return self.constants[digits]

    # -- rendering ----------------------------------------------------------------------------

    def hoist(self, text: str, base: str | None = None) -> str:
        name = self.fresh(base)
        self.statements.append(f"{name} = {text}")
        return name

    def render(self, node: Node, literal_ok: bool = False) -> tuple[str, int]:
        """(text, precedence) of ``node``; a constant is a plain number when ``literal_ok``."""
        if node.kind == "input":
            return self.params[node.name], _ATOM
        if node.kind == "const":
            return (node.name, _ATOM) if literal_ok else (self.constant(node.name), _ATOM)
        key = str(node)
        if key in self.done:
            return self.done[key], _ATOM
        text, precedence = self.render_op(node)
        if key in self.shared:
            name = self.hoist(text, self.shared_name(node))
            self.done[key] = name
            return name, _ATOM
        return text, precedence

    def render_op(self, node: Node) -> tuple[str, int]:
        fused = _fused_arg(node)
        if fused:
            template, arg = fused
            text, prec = self.render(arg)
            if template.endswith("(-{0})"):
                text = self.operand(arg, text, prec, _NEG, strict=True)
            return self.fit(template.format(text), [(arg, text)], template.format), _ATOM
        if node.name == "Neg":
            (child,) = node.children
            text, prec = self.render(child)
            text = self.operand(child, text, prec, _NEG, strict=True)
            return self.fit(f"-{text}", [(child, text)], lambda a: f"-{a}"), _NEG
        if node.name in _INFIX:
            left, right = node.children
            name = node.name
            if name == "Add" and right.kind == "op" and right.name == "Neg":
                name, right = "Sub", right.children[0]  # the authors' a + (-b): the same bits as a - b
            symbol, own = _INFIX[name]
            # a constant beside a tensor is written as a number (the same value in torch's arithmetic)
            numbers = (not _reads_no_input(right), not _reads_no_input(left))
            (lt, lp), (rt, rp) = self.render(left, numbers[0]), self.render(right, numbers[1])
            lt = self.operand(left, lt, lp, own, strict=False)
            rt = self.operand(right, rt, rp, own, strict=True)
            parts = [(left, lt), (right, rt)]
            return self.fit(f"{lt} {symbol} {rt}", parts, lambda a, b: f"{a} {symbol} {b}"), own
        self.helpers.update(h.__name__ for op, h in HELPERS.items() if op == node.name)
        rendered = [self.render(c)[0] for c in node.children]
        template = CALLS[node.name]
        parts = list(zip(node.children, rendered))
        return self.fit(template.format(*rendered), parts, lambda *a: template.format(*a)), _ATOM

    @staticmethod
    def operand(node: Node, text: str, prec: int, own: int, strict: bool) -> str:
        """``text`` in parentheses where Python would otherwise group it differently."""
        if node.kind == "op" and node.name == "Neg" and strict:
            return f"({text})"  # a - (-b), a * (-b), -(-a): easier to read than a - -b
        if prec < own or (strict and prec == own):
            return f"({text})"
        return text

    def fit(self, text: str, parts: list[tuple[Node, str]], rebuild) -> str:
        """A long expression with its long operands, left to right, put into temporaries t1, t2..."""
        if len(text) <= MAX_PIECE:
            return text
        texts = [t for _, t in parts]
        for index, (node, current) in enumerate(parts):  # left to right, as the formula reads
            if node.kind == "op" and len(current) > MAX_PIECE // 4 and not current.isidentifier():
                texts[index] = self.hoist(_unwrapped(current))
        return rebuild(*texts)

    def write(self, name: str, space: SearchSpace, doc: str) -> LossCode:
        expression, _ = self.render(self.root)
        broadcasts = None
        params = parameter_names(space)
        if _reads_no_input(self.root):
            broadcasts = "per_sample" if space.output == "column" else "per_element"
            expression = f"{broadcasts}({expression}, {', '.join(params)})"
        lines = [f"def {name}({', '.join(params)}):", *_docstring_lines(doc)]
        lines += [f"    {c} = {self.reference}.new_tensor({float(d)!r})" for d, c in self.constants.items()]
        lines += [f"    {s}" for s in self.statements]
        lines.append(f"    return {expression}")
        return LossCode(name, "\n".join(lines) + "\n", tuple(sorted(self.helpers)), broadcasts)


def _roles(space: SearchSpace) -> tuple[str, ...]:
    return ("intersection", "union", "enclosing") if space.mode == "regression" else ("logits", "target", "iou")


def _unwrapped(text: str) -> str:
    """``text`` without the parentheses that enclose all of it."""
    if text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        return text[1:-1]
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _docstring_lines(text: str) -> list[str]:
    wrapped = textwrap.wrap(text, width=88, break_long_words=False, break_on_hyphens=False)
    if len(wrapped) <= 1 and len(text) <= 88:
        return [f'    """{text}"""']
    return ['    """', *(f"    {line}" for line in wrapped), '    """']


def loss_function(node: Node, space: SearchSpace, name: str) -> LossCode:
    """The source of ``def name(<inputs>): return <the tree in torch>``, documented by its infix form.

    Parameters are the space's inputs in role order (see :func:`parameter_names`); constants that
    are not written as plain numbers are 0-d tensors of the first parameter's dtype and device, as
    in :class:`autoloss.loss.compile.CompiledLoss`. A tree that reads no input is broadcast to the
    output shape by ``per_sample`` / ``per_element``, as CompiledLoss does.
    """
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"not a valid function name: {name!r}")
    return _Writer(node, space).write(name, space, to_infix(node))
