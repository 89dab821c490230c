"""The cell genotype as plain immutable data, parsed from and printed in the DARTS style.

A genotype lists, for each of the 4 intermediate nodes, two (operation, input) pairs: node k uses
pairs 2k and 2k+1 and reads states 0..k+1 (0 and 1 are the cell's inputs, 2..5 the nodes). The
output concatenates nodes 2, 3, 4, 5, so ``normal_concat`` is always ``(2, 3, 4, 5)``.

Text form (what ``str(genotype)`` prints and :func:`parse_genotype` reads)::

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5])

The parser also reads the full DARTS form with ``reduce=[...], reduce_concat=...`` (published cells,
such as DARTS_V2, paste in), ``range(2, 6)`` for a concat, lists or tuples for pairs, keyword or
positional arguments and an optional ``NAME =`` in front. A reduce part does not change the tracking
cell (CHASE stacks no cells) but is kept and printed back, so a pasted DARTS genotype prints back
as written; the canonical form (:mod:`autoloss.cell.canonical`) drops it. A concat is always
printed as a list: ``range(2, 6)`` prints back as ``[2, 3, 4, 5]``.

The parser is a tokenizer and a recursive descent over a whitelist of names: it never evaluates.
This module (like canonical, breeding, cost, gates and representation) does not import torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from autoloss.errors import UserError

# The operation names, in the order of a supernet's alpha columns (the modules: autoloss.cell.operations).
PRIMITIVES = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]

NODES = 4
EDGES = 2 * NODES
CONCAT = tuple(range(2, 2 + NODES))
MAX_TEXT = 5000  # characters: a genotype prints in about 400
MAX_CONCAT = 64  # entries a range(start, stop) in a concat may expand to

Pair = tuple[str, int]


class GenotypeError(UserError):
    """A genotype string or value outside the cell's space."""


@dataclass(frozen=True)
class Genotype:
    """Four nodes of two (operation, input) pairs each; ``reduce`` only for DARTS-compatible printing."""

    normal: tuple[Pair, ...]
    normal_concat: tuple[int, ...] = CONCAT
    reduce: tuple[Pair, ...] = ()
    reduce_concat: tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("normal", "reduce"):
            object.__setattr__(self, name, tuple((str(op), int(i)) for op, i in getattr(self, name)))
        for name in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, name, tuple(int(i) for i in getattr(self, name)))

    def node(self, k: int) -> tuple[Pair, Pair]:
        """Node k's two pairs (k = 0..3; the node is state k + 2)."""
        return self.normal[2 * k], self.normal[2 * k + 1]

    def __str__(self) -> str:
        return format_genotype(self)


def from_nodes(nodes: Iterable[Iterable[Pair]]) -> Genotype:
    """A genotype from per-node pairs: ``[[(op, i), (op, i)], ...]``."""
    return Genotype(normal=tuple(pair for node in nodes for pair in node))


# ----------------------------------------------------------------------------------- validity


def problems(genotype: Genotype) -> list[str]:
    """What is wrong with a genotype, one line each (empty when it is a valid cell)."""
    found = _edge_problems("normal", genotype.normal)
    if genotype.normal_concat != CONCAT:
        found.append(f"normal_concat must be {list(CONCAT)} (the cell concatenates all four nodes), "
                     f"got {list(genotype.normal_concat)}")
    if genotype.reduce or genotype.reduce_concat:
        found += _edge_problems("reduce", genotype.reduce)
        if genotype.reduce_concat != CONCAT:
            found.append(f"reduce_concat must be {list(CONCAT)}, got {list(genotype.reduce_concat)}")
    return found


def _edge_problems(part: str, pairs: tuple[Pair, ...]) -> list[str]:
    if len(pairs) != EDGES:
        return [f"{part} needs {EDGES} (operation, input) pairs, two per node for {NODES} nodes; got {len(pairs)}"]
    found = []
    for index, (op, source) in enumerate(pairs):
        node = index // 2
        if op not in PRIMITIVES:
            found.append(f"{part}: unknown operation {op!r} (known: {', '.join(PRIMITIVES)})")
        if not 0 <= source <= node + 1:
            found.append(f"{part}: node {node} (pair {index}) reads input {source}, but node {node} "
                         f"may read only 0..{node + 1}")
    return found


def check(genotype: Genotype) -> Genotype:
    """The genotype itself, or a :class:`GenotypeError` naming its first problem."""
    found = problems(genotype)
    if found:
        raise GenotypeError(f"genotype: {found[0]}")
    return genotype


# ----------------------------------------------------------------------------------- printing


def _pairs(pairs: tuple[Pair, ...]) -> str:
    return "[" + ", ".join(f"({op!r}, {i})" for op, i in pairs) + "]"


def format_genotype(genotype: Genotype) -> str:
    """The DARTS text form; the reduce part only when the genotype has one."""
    text = f"Genotype(normal={_pairs(genotype.normal)}, normal_concat={list(genotype.normal_concat)}"
    if genotype.reduce or genotype.reduce_concat:
        text += f", reduce={_pairs(genotype.reduce)}, reduce_concat={list(genotype.reduce_concat)}"
    return text + ")"


# ----------------------------------------------------------------------------------- parsing

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*)
  | (?P<int>\d+)
  | (?P<string>'[^'\\\n]*'|"[^"\\\n]*")
  | (?P<punct>[()\[\],=])
""", re.VERBOSE | re.ASCII)  # ASCII only: an Arabic-Indic one (U+0661) is not the input 1, as in expressions

_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


class _Parser:
    """Recursive descent over: [NAME '='] Genotype '(' args ')' with lists of pairs and int lists."""

    def __init__(self, text: str):
        self.tokens: list[tuple[str, str, int]] = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None:
                raise GenotypeError(f"genotype: unexpected character {text[position]!r} at position {position}")
            if match.lastgroup != "space":
                self.tokens.append((match.lastgroup, match.group(), position))
            position = match.end()
        self.tokens.append(("end", "", len(text)))
        self.at = 0

    # -- token helpers
    def peek(self, value: str | None = None, kind: str | None = None) -> bool:
        token_kind, token_value, _ = self.tokens[self.at]
        return (kind is None or token_kind == kind) and (value is None or token_value == value)

    def take(self, value: str | None = None, kind: str | None = None, what: str | None = None) -> str:
        if not self.peek(value, kind):
            token_kind, token_value, position = self.tokens[self.at]
            found = "the end of the text" if token_kind == "end" else repr(token_value)
            expected = what or (repr(value) if value else kind)
            raise GenotypeError(f"genotype: expected {expected} at position {position}, found {found}")
        value_taken = self.tokens[self.at][1]
        self.at += 1
        return value_taken

    # -- grammar
    def genotype(self) -> Genotype:
        if self.peek(kind="name") and self.tokens[self.at + 1][1] == "=":
            self.at += 2  # NAME = Genotype(...)
        head = self.take(kind="name", what="'Genotype('")
        if head.rsplit(".", 1)[-1] != "Genotype":
            raise GenotypeError(f"genotype: expected 'Genotype(', found {head!r}")
        self.take("(")
        fields: dict[str, object] = {}
        positional = 0
        while not self.peek(")"):
            if self.peek(kind="name") and self.tokens[self.at + 1][1] == "=":
                name = self.take(kind="name")
                if name not in _FIELDS:
                    raise GenotypeError(f"genotype: unknown field {name!r} (fields: {', '.join(_FIELDS)})")
                self.take("=")
            else:
                if fields.keys() - set(_FIELDS[:positional]):
                    raise GenotypeError("genotype: a positional argument after a keyword argument")
                if positional >= len(_FIELDS):
                    raise GenotypeError(f"genotype: too many arguments (fields: {', '.join(_FIELDS)})")
                name = _FIELDS[positional]
                positional += 1
            if name in fields:
                raise GenotypeError(f"genotype: field {name!r} given twice")
            fields[name] = self.pairs() if name in ("normal", "reduce") else self.concat()
            if not self.peek(")"):
                self.take(",", what="',' or ')'")
        self.take(")")
        self.take(kind="end", what="the end of the text")
        if "normal" not in fields:
            raise GenotypeError("genotype: the 'normal' list of (operation, input) pairs is missing")
        if ("reduce" in fields) != ("reduce_concat" in fields):
            raise GenotypeError("genotype: give both 'reduce' and 'reduce_concat', or neither")
        return Genotype(**fields)  # type: ignore[arg-type]

    def sequence(self, item) -> list:
        """'[' or '(' then items separated by commas (a trailing comma allowed), then the matching bracket."""
        if not (self.peek("[") or self.peek("(")):
            self.take("[", what="'[' or '('")
        close = "]" if self.take(kind="punct") == "[" else ")"
        items = []
        while not self.peek(close):
            items.append(item())
            if not self.peek(close):
                self.take(",", what=f"',' or {close!r}")
        self.take(close)
        return items

    def pairs(self) -> tuple[Pair, ...]:
        return tuple(self.sequence(self.pair))

    def pair(self) -> Pair:
        items = self.sequence(self.atom)
        if len(items) != 2 or not isinstance(items[0], str) or not isinstance(items[1], int):
            raise GenotypeError(f"genotype: a pair is ('operation', input index), got {tuple(items)!r}")
        return items[0], items[1]

    def atom(self) -> str | int:
        if self.peek(kind="string"):
            return self.take(kind="string")[1:-1]
        return self.integer()

    def integer(self) -> int:
        digits = self.take(kind="int", what="an integer")
        if len(digits) > 6:
            raise GenotypeError(f"genotype: integer {digits[:12]}... is far too large")
        return int(digits)

    def concat(self) -> tuple[int, ...]:
        if self.peek("range"):
            self.take("range")
            self.take("(")
            start = self.integer()
            self.take(",", what="',' (range(start, stop))")
            stop = self.integer()
            self.take(")", what="')' (range(start, stop))")
            if stop - start > MAX_CONCAT:
                raise GenotypeError(f"genotype: range({start}, {stop}) has {stop - start} entries; a concat lists the "
                                    f"{NODES} nodes, {list(CONCAT)}")
            return tuple(range(start, stop))
        return tuple(self.sequence(self.integer))


def parse_genotype(text: str) -> Genotype:
    """A valid genotype from its DARTS text form, or a :class:`GenotypeError` (a UserError) with one line."""
    if not isinstance(text, str):
        raise GenotypeError(f"genotype: expected text, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise GenotypeError(f"genotype: text of {len(text)} characters is too long (at most {MAX_TEXT})")
    if not text.strip():
        raise GenotypeError("genotype: empty text")
    return check(_Parser(text).genotype())
