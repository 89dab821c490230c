"""Loss expressions: parsing (typed, whitelisted, never evaluated), canonical strings and printers."""

from __future__ import annotations

import builtins
import random
import re
from fractions import Fraction

import pytest

from autoloss.errors import ExpressionError
from autoloss.loss.expression import MAX_NESTING, Node, parse, to_infix, to_latex
from autoloss.loss.genotype import LossGenotype
from autoloss.loss.space import parse_space

# ------------------------------------------------------------------------------ parsing


def test_parse_builds_a_typed_tree(softmax):
    """Nodes carry kind, name and shape; Softmax keeps a matrix, Dot reduces it to a column."""
    node = parse("Neg(Dot(Y,Log(Softmax(X))))", softmax)
    assert (node.kind, node.name, node.shape) == ("op", "Neg", "column")
    dot = node.children[0]
    assert (dot.name, dot.shape) == ("Dot", "column")
    y, log = dot.children
    assert (y.kind, y.name, y.shape) == ("input", "Y", "matrix")
    assert (log.name, log.shape) == ("Log", "matrix")
    assert log.children[0].name == "Softmax" and log.children[0].shape == "matrix"
    assert node.size == 6 and node.height == 4
    assert node.uses("X") and node.uses("Y") and not node.uses("W")


def test_constants_are_columns_and_broadcast(softmax, sigmoid):
    """A constant is a column; a matrix op a column stays a matrix; a column-only tree is a column."""
    node = parse("Dot(Y,Add(X,2))", softmax)
    const = node.children[1].children[1]
    assert (const.kind, const.name, const.shape) == ("const", "2", "column")
    assert node.children[1].shape == "matrix"
    assert parse("Add(W,1)", softmax).shape == "column"
    assert parse("Mul(X,3)", sigmoid).shape == "matrix"


def test_whitespace_is_ignored(softmax):
    """Whitespace between tokens does not change the tree."""
    assert parse("  Neg ( Dot ( Y , Log(Softmax( X )) ) )\n", softmax) == parse("Neg(Dot(Y,Log(Softmax(X))))", softmax)


def test_ready_loss_names_are_accepted(softmax, reg):
    """A ready loss name of the space (surrounding spaces allowed) parses to its expression."""
    assert str(parse("CE", softmax)) == "Neg(Dot(Y,Log(Softmax(X))))"
    assert str(parse(" CEI ", softmax)) == "Neg(Dot(Mul(Y,W),Log(Softmax(X))))"
    assert str(parse("IoU", reg)) == "Sub(1,Div(I,U))"


@pytest.mark.parametrize("space_name, authors, canonical", [
    ("cls_softmax", "Dot(Y,Mul(Y,Z))", "Dot(Y,Mul(Y,W))"),
    ("cls_sigmoid", "Mul(Q,PY)", "Mul(W,Y)"),
    ("cls_sigmoid", "Mul(NY,X)", "Mul(Sub(1,Y),X)"),
])
def test_aliases_expand_to_canonical_names(spaces, space_name, authors, canonical):
    """The authors' input names (Z, Q, PY, NY) are read as the canonical inputs."""
    assert str(parse(authors, spaces[space_name])) == canonical


def test_leading_zeros_read_as_the_constant(softmax):
    """'01' is the constant 1 and prints canonically as '1'."""
    assert str(parse("Dot(Y,Add(X,01))", softmax)) == "Dot(Y,Add(X,1))"


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("space_name", ["cls_softmax", "cls_sigmoid", "reg"])
def test_ready_losses_round_trip(spaces, space_name):
    """For every ready loss: parse -> str -> parse gives the same tree and the same string."""
    space = spaces[space_name]
    for text in space.losses.values():
        node = parse(text, space)
        canonical = str(node)
        again = parse(canonical, space)
        assert again == node
        assert str(again) == canonical
        if not any(alias in text for alias in space.aliases):
            assert canonical == text  # the bundled strings without aliases are already canonical


# ------------------------------------------------------------------------------ hostile input


def test_python_code_is_not_executed(softmax, tmp_path):
    """A Python payload is refused before anything runs: the file it would create never appears."""
    target = tmp_path / "pwned"
    with pytest.raises(ExpressionError, match="unexpected character"):
        parse(f"__import__('os').system('touch {target}')", softmax)
    assert not target.exists()


HOSTILE = {
    "attribute access": "X.__class__",
    "statement": "Neg(X);import os",
    "eval call": "eval('1')",
    "lambda": "lambda: 0",
    "dunder name": "__import__(X)",
    "two expressions": "Neg(Dot(Y,X)) Neg(Dot(Y,X))",
    "unknown operator": "Frobnicate(X)",
    "unknown input": "Neg(Dot(Y,Q))",
    "wrong arity, too few": "Neg(Dot(Y))",
    "wrong arity, too many": "Neg(Dot(Y,X),X)",
    "empty call": "Neg()",
    "input called": "X(Y)",
    "operator without call": "Neg",
    "unclosed": "Neg(Dot(Y,X)",
    "stray parenthesis": ")",
    "constant not in space": "Neg(Dot(Y,Add(X,7)))",
    "constant zero": "Neg(Dot(Y,Add(X,0)))",
    "float constant": "Neg(Dot(Y,Add(X,1.5)))",
    "matrix root": "X",
    "Softmax of a column": "Neg(Softmax(W))",
    "NUL byte": "Neg(Dot(Y,X))\x00",
    "empty": "",
    "blank": "   \t\n",
    "very deep nesting": "Neg(" * 5000 + "X" + ")" * 5000,
    "nesting past the limit": "Dot(Y," + "Neg(" * (MAX_NESTING + 5) + "X" + ")" * (MAX_NESTING + 6),
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_string_is_refused(softmax, text, monkeypatch):
    """Malformed or hostile text raises ExpressionError (never RecursionError), without eval/exec."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the parser must not evaluate anything")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    with pytest.raises(ExpressionError):
        parse(text, softmax)


def test_deep_nesting_within_the_length_limit_is_refused_not_recursed(softmax):
    """1000 nested calls (short enough to tokenize) stop at the nesting limit with an ExpressionError."""
    text = "Neg(" * 1000 + "X" + ")" * 1000
    with pytest.raises(ExpressionError, match=f"nesting deeper than {MAX_NESTING}"):
        parse(text, softmax)


def test_huge_integer_literal_is_refused(softmax):
    """A 5000-digit constant is an ExpressionError like any constant not in the space."""
    with pytest.raises(ExpressionError, match="is not in this space"):
        parse("Neg(Dot(Y,Add(X," + "9" * 5000 + ")))", softmax)


def test_huge_integer_is_echoed_cut_short(softmax):
    """A 19,000-digit constant is named by its first digits and its length, not echoed in full."""
    with pytest.raises(ExpressionError) as info:
        parse("Neg(Dot(Y,Mul(" + "7" * 19_000 + ",X)))", softmax)
    message = str(info.value)
    assert "7" * 40 + "... (19,000 digits) is not in this space" in message
    assert len(message) < 400


@pytest.mark.parametrize("text, message", [
    ("Neg(Dot(Y,Mul(０２,X)))", "unexpected character '０' at position 14"),  # fullwidth digits
    ("Neg(Dot(Y,Mul(٢,X)))", "unexpected character '٢' at position 14"),  # Arabic-Indic two
    ("Neg(Dot(Y,Mul(2,Ｘ)))", "unexpected character 'Ｘ' at position 16"),
    ("Neg(Dot(Y,Mul(2,\u00a0X)))", "unexpected character '\\xa0' at position 16"),  # no-break space
    ("Neg(Dot(Y,Mul(0x2,X)))", "malformed number '0x2' at position 14"),
    ("Neg(Dot(Y,Mul(1.5,X)))", "malformed number '1.5' at position 14"),
    ("Neg(Dot(Y,Mul(2e3,X)))", "malformed number '2e3' at position 14"),
    ("Neg(Dot(Y,Mul(2Y,X)))", "malformed number '2Y' at position 14"),
    ("Neg(Dot(Y,Mul(1_0,X)))", "malformed number '1_0' at position 14"),
])
def test_only_ascii_decimal_integers_are_constants(softmax, text, message):
    """Unicode digits, letters and spaces, hex, decimals and exponents are refused, each named at its position."""
    with pytest.raises(ExpressionError, match=re.escape(message)):
        parse(text, softmax)


def test_long_unknown_name_is_echoed_cut_short(softmax):
    """An unknown 10,000-letter name is cut to 40 characters in the message."""
    with pytest.raises(ExpressionError) as info:
        parse("Neg(" + "Q" * 10_000 + ")", softmax)
    assert "unknown name '" + "Q" * 40 + "...'" in str(info.value)
    assert len(str(info.value)) < 400


def test_non_string_is_refused(softmax):
    """Only str is parsed; bytes and None are refused."""
    for value in (None, b"CE", 3):
        with pytest.raises(ExpressionError, match="must be a string"):
            parse(value, softmax)


@pytest.mark.parametrize("space_name, text, message", [
    ("cls_softmax", "Neg(Dot(Y,Add(X,7)))", "constant 7 is not in this space"),
    ("cls_sigmoid", "Neg(Log(Softmax(X)))", "operator 'Softmax' is not in this search space"),
    ("cls_softmax", "X", "must be a column .* is a matrix .*Dot"),
    ("cls_softmax", "Add(X)", "expected ','"),
    ("cls_softmax", "Neg(X,Y)", "'Neg' takes 1 argument"),
    ("cls_softmax", "Neg(Softmax(W))", "'Softmax' does not apply to column"),
    ("reg", "Neg(X)", "unknown name 'X'"),
    ("reg", "Sub(1,Div(I,U)) GIoU", "unexpected 'GIoU'"),
    ("cls_softmax", "", "empty expression"),
])
def test_error_messages_name_the_problem(spaces, space_name, text, message):
    """Each refusal says what is wrong (and in which space)."""
    with pytest.raises(ExpressionError, match=message):
        parse(text, spaces[space_name])


def test_alias_loop_is_refused():
    """A self-referencing alias in a user space is an ExpressionError, not infinite recursion."""
    space = parse_space({
        "name": "loopy", "mode": "regression", "output": "column", "operators": ["Neg", "Add"],
        "inputs": {"I": {"role": "intersection", "shape": "column"}, "U": {"role": "union", "shape": "column"},
                   "E": {"role": "enclosing", "shape": "column"}},
        "aliases": {"A": "Neg(B)", "B": "Add(A,I)"}, "initial": "L", "losses": {"L": "Neg(I)"},
    })
    with pytest.raises(ExpressionError, match="refers to itself"):
        parse("Neg(A)", space)


# ------------------------------------------------------------------------------ printers


@pytest.mark.parametrize("space_name, text, infix, latex", [
    ("cls_softmax", "CE", "-dot(y, log(softmax(x)))",
     r"-\operatorname{dot}\left(y, \log\left(\operatorname{softmax}\left(x\right)\right)\right)"),
    ("cls_softmax", "CSE-Autoloss-A_cls", "-dot(y * (1 + sin(w)), log(softmax(x)))", None),
    ("reg", "GIoU", "1 - (i / u - (e - u) / e)", r"1 - \left(\frac{i}{u} - \frac{e - u}{e}\right)"),
    ("reg", "Add(1,Neg(Div(I,U)))", "1 - i / u", r"1 - \frac{i}{u}"),
    ("reg", "Neg(Add(I,U))", "-(i + u)", r"-\left(i + u\right)"),
    ("reg", "Sub(I,Sub(U,E))", "i - (u - e)", None),
    ("reg", "Sub(Sub(I,U),E)", "i - u - e", None),
    ("reg", "Div(I,Mul(U,E))", "i / (u * e)", r"\frac{i}{u \cdot e}"),
    ("reg", "Mul(Add(I,U),E)", "(i + u) * e", r"\left(i + u\right) \cdot e"),
    ("reg", "Neg(Neg(I))", "-(-i)", None),
    ("reg", "Exp(Sqrt(Log(I)))", "exp(sqrt(log(i)))", r"e^{\sqrt{\log\left(i\right)}}"),
    ("cls_sigmoid", "Mul(Sgdf(X),Serfc(Y))", "sgdf(x) * serfc(y)", None),
])
def test_infix_and_latex(spaces, space_name, text, infix, latex):
    """Infix and LaTeX print Add(a,Neg(b)) as a - b and parenthesise only where the meaning needs it."""
    node = parse(text, spaces[space_name])
    assert to_infix(node) == infix
    if latex is not None:
        assert to_latex(node) == latex


ARITH = parse_space({
    "name": "arith", "mode": "regression", "output": "column", "constants": [1, 2, 3],
    "operators": ["Neg", "Add", "Sub", "Mul", "Div"], "limits": {"max_height": 6, "max_size": 40},
    "inputs": {"I": {"role": "intersection", "shape": "column"}, "U": {"role": "union", "shape": "column"},
               "E": {"role": "enclosing", "shape": "column"}},
    "initial": "L", "losses": {"L": "Sub(1,Div(I,U))"},
}, source="test-arith")

_VALUES = {"I": Fraction(3, 7), "U": Fraction(11, 5), "E": Fraction(-13, 3)}


def _exact(node: Node) -> Fraction:
    """The tree's value in exact rational arithmetic."""
    if node.kind == "input":
        return _VALUES[node.name]
    if node.kind == "const":
        return Fraction(int(node.name))
    args = [_exact(c) for c in node.children]
    return {"Neg": lambda a: -a, "Add": lambda a, b: a + b, "Sub": lambda a, b: a - b,
            "Mul": lambda a, b: a * b, "Div": lambda a, b: a / b}[node.name](*args)


def test_infix_means_the_same_as_the_tree():
    """On 300 random arithmetic trees the infix text, read as Python, has exactly the tree's value.

    Exact rational arithmetic makes re-association harmless, so any difference is a wrong or
    missing parenthesis in the printer.
    """
    genotype = LossGenotype(ARITH)
    rng = random.Random(7)
    names = {"i": _VALUES["I"], "u": _VALUES["U"], "e": _VALUES["E"], "F": Fraction}
    checked = 0
    for _ in range(300):
        node = genotype.random(rng, min_height=2, max_height=6)
        text = to_infix(node)
        text = re.sub(r"\b(\d+)\b", r"F(\1)", text)  # integer literals as exact fractions
        try:
            expected = _exact(node)
        except ZeroDivisionError:
            with pytest.raises(ZeroDivisionError):
                eval(text, {"__builtins__": {}}, names)  # noqa: S307 - our own printer's output
            continue
        assert eval(text, {"__builtins__": {}}, names) == expected, (str(node), text)  # noqa: S307
        checked += 1
    assert checked > 250
