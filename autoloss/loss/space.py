"""Search spaces as data: loading and validating a search-space YAML file.

A search space names its mode (softmax / sigmoid / regression: the meaning of its inputs), its
inputs with their role and shape, the constants, the allowed operators, the root shape, the size
limits, named ready losses and the initial loss L_I. The bundled spaces live in ``search_spaces/``
at the top of the repository and ship inside the wheel as ``autoloss/search_spaces``; a user can
pass the path of their own file wherever a bundled name is accepted.

A user's file is untrusted input: it is read with a size cap, by a YAML loader that builds plain
data only and refuses deep nesting, alias bombs and duplicate keys (:class:`SpaceLoader`), and every
problem is one :class:`UserError` line.
"""

from __future__ import annotations

import keyword
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from autoloss.errors import UserError
from autoloss.loss.primitives import OPERATORS

MODES = {
    "softmax": {"logits", "target", "iou"},
    "sigmoid": {"logits", "target", "iou"},
    "regression": {"intersection", "union", "enclosing"},
}
SHAPES = ("matrix", "column")  # B x C and B x 1
BRANCH_OF_MODE = {"softmax": "cls", "sigmoid": "cls", "regression": "reg"}

# Limits on a user's file: a search space is a few KB of YAML, a few hundred nodes, 4 levels deep.
MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 32  # nested collections
MAX_NODES = 20_000  # YAML nodes once every alias is expanded (a "billion laughs" file needs billions)
MAX_CONSTANT = 999_999  # the expression parser reads constants of at most 6 digits
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")  # an input or alias name: what the expression parser reads


@dataclass(frozen=True)
class Input:
    name: str
    role: str
    shape: str
    doc: str = ""


@dataclass(frozen=True)
class SearchSpace:
    name: str
    branch: str  # "cls" or "reg"
    mode: str  # a key of MODES
    inputs: tuple[Input, ...]
    constants: tuple[int, ...]
    operators: tuple[str, ...]
    output: str
    max_height: int
    max_size: int
    initial: str
    losses: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    description: str = ""
    source: str = ""

    def input_for(self, role: str) -> Input:
        return next(i for i in self.inputs if i.role == role)

    @property
    def initial_expression(self) -> str:
        return self.losses[self.initial]


def bundled_dir() -> Path:
    """The folder of the bundled search spaces, in an installed wheel or in a source checkout."""
    installed = Path(str(resources.files("autoloss"))) / "search_spaces"
    if any(installed.glob("*.yaml")):
        return installed
    return Path(__file__).resolve().parents[2] / "search_spaces"


def bundled_names() -> list[str]:
    return sorted(p.stem for p in bundled_dir().glob("*.yaml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a bundled space by name (``cls_softmax``, ``cls_sigmoid``, ``reg``) or a YAML file.

    A user's file is read with the limits above (size, nesting, expanded aliases) by a YAML loader
    that builds plain data only and refuses duplicate keys; every problem is one line.
    """
    text = str(name_or_path)
    path = Path(text)
    names = bundled_names()
    as_path = text.endswith((".yaml", ".yml")) or os.sep in text or os.path.lexists(text)
    if text in names and not path.is_file():
        as_path, path = False, bundled_dir() / f"{text}.yaml"
    if not as_path and text not in names:
        raise UserError(f"unknown search space {shown(text)}: expected one of {', '.join(names)} "
                        "or the path of a search-space YAML file")
    content = read_space_text(path)
    try:
        data = yaml.load(content, Loader=SpaceLoader)  # noqa: S506  (SpaceLoader is a SafeLoader)
    except yaml.YAMLError as exc:
        raise UserError(f"search space file {printable(path)} is not valid YAML: {yaml_problem(exc)}") from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH stops nesting long before
        raise UserError(f"search space file {printable(path)}: nested too deeply") from None
    return parse_space(data, source=str(path))


def read_space_text(path: Path) -> str:
    """The text of a search-space file: a regular file of at most MAX_FILE_BYTES of UTF-8, or a UserError."""
    where = f"search space file {printable(path)}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"{where} not found") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{where} cannot be read ({_reason(exc)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{where} is a directory, not a YAML file")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{where} is not a regular file (a device, pipe or socket)")
    if info.st_size > MAX_FILE_BYTES:
        raise UserError(f"{where} is {info.st_size:,} bytes; a search space may be at most {MAX_FILE_BYTES:,}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # a file that grows, or lies about its size (/proc)
    except OSError as exc:
        raise UserError(f"{where} cannot be read ({_reason(exc)})") from None
    if len(data) > MAX_FILE_BYTES:
        raise UserError(f"{where} is larger than {MAX_FILE_BYTES:,} bytes, the most a search space may be")
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                        "is it a binary file?") from None
    if "\x00" in content:
        raise UserError(f"{where} contains NUL bytes: a binary file, not YAML text")
    return content


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def printable(value: object) -> str:
    """``value`` as text for a one-line message: as is when printable, else quoted with escapes."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def shown(value: object, limit: int = 120) -> str:
    """``value`` quoted for a one-line message: non-printable characters escaped, long text cut."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A PyYAML error on one line: what is wrong and where (PyYAML's own text spans several lines)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    elif isinstance(exc, yaml.reader.ReaderError):
        problem = f"unacceptable character #x{exc.character:04x}" if isinstance(exc.character, int) \
            else "undecodable byte"
        where = f" at offset {exc.position}"
    else:
        problem, where = str(exc), ""
    problem = " ".join(problem.split())
    if len(problem) > 160:
        problem = problem[:160] + "..."
    return f"{problem}{where}"


class SpaceLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (plain data, no object tags) with limits for files from users.

    Refuses nesting deeper than MAX_DEPTH, documents of more than MAX_NODES nodes once aliases are
    expanded (an alias counts as the whole node it repeats, so alias bombs stop at once), aliases of
    a node inside itself, and a key repeated in one mapping.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._expanded: dict[int, int] = {}  # id(node) -> nodes it stands for, once composed

    def _count(self, n: int, mark) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_NODES:,} values once aliases are expanded", mark)

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                if id(node) not in self._expanded:
                    raise yaml.composer.ComposerError(
                        None, None, f"alias *{event.anchor} repeats a node that contains it", event.start_mark)
                self._count(self._expanded[id(node)], event.start_mark)
            return super().compose_node(parent, index)
        mark = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
        before = self._nodes
        self._count(1, mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._expanded[id(node)] = self._nodes - before
        return node

    def fetch_flow_collection_start(self, TokenClass):
        # the scanner's cost grows with the flow depth: stop a "[[[[..." file at its first tokens
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested more than {MAX_DEPTH} levels deep", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def construct_long_int(self, node):
        if len(str(node.value)) > 30:
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of {len(str(node.value)):,} characters", node.start_mark)
        return self.construct_yaml_int(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, "a mapping key must be a plain value", key_node.start_mark) from None
                if repeated:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {shown(key, 40)}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


SpaceLoader.add_constructor("tag:yaml.org,2002:int", SpaceLoader.construct_long_int)


def parse_space(data: object, source: str = "<dict>") -> SearchSpace:
    """Validate the decoded YAML of a search space; every problem is one clear UserError."""
    try:
        return _parse_space(data, source)
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:  # a value of the wrong type somewhere
        raise UserError(f"search space {printable(source)}: a value has the wrong type "
                        f"({' '.join(str(exc).split())[:160]})") from None


def _check_name(name: object, what: str, fail) -> str:
    """An input or alias name: a short plain ASCII identifier, not a dunder, keyword or operator."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise fail(f"{what} name {shown(name, 40)} is not an identifier of at most 32 ASCII letters, "
                   "digits and underscores")
    if name.startswith("__") or keyword.iskeyword(name):
        raise fail(f"{what} name {shown(name)} is reserved (a Python keyword or dunder)")
    return name


def _string(value: object, what: str, fail, limit: int = 20_000) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{what} must be a non-empty string, found {shown(value, 40)}")
    if len(value) > limit:
        raise fail(f"{what} is {len(value):,} characters long, at most {limit:,}")
    return value


def _parse_space(data: object, source: str) -> SearchSpace:
    def fail(message: str) -> UserError:
        return UserError(f"search space {printable(source)}: {message}")

    if not isinstance(data, dict):
        raise fail("expected a mapping at the top level")
    for key in ("name", "mode", "inputs", "operators", "output", "initial", "losses"):
        if key not in data:
            raise fail(f"missing key '{key}'")
    mode = data["mode"]
    if not isinstance(mode, str) or mode not in MODES:
        raise fail(f"mode {shown(mode, 40)} is not one of {', '.join(MODES)}")
    name = _string(data["name"], "'name'", fail, limit=200)
    branch = data.get("branch", BRANCH_OF_MODE[mode])
    if branch != BRANCH_OF_MODE[mode]:
        raise fail(f"branch {shown(branch, 40)} does not fit mode '{mode}' (a {mode} space searches the "
                   f"{BRANCH_OF_MODE[mode]} branch)")

    inputs = []
    if not isinstance(data["inputs"], dict) or not data["inputs"]:
        raise fail("'inputs' must map input names to {role, shape}")
    for input_name, spec in data["inputs"].items():
        if not isinstance(input_name, str) or not input_name.isidentifier():
            raise fail(f"input name {shown(input_name, 40)} is not an identifier")
        _check_name(input_name, "input", fail)
        if input_name in OPERATORS:
            raise fail(f"input name '{input_name}' is the name of an operator")
        if not isinstance(spec, dict) or "role" not in spec or "shape" not in spec:
            raise fail(f"input '{input_name}' needs a role and a shape")
        if spec["shape"] not in SHAPES:
            raise fail(f"input '{input_name}': shape must be one of {', '.join(SHAPES)}")
        doc = spec.get("doc", "")
        inputs.append(Input(input_name, spec["role"], spec["shape"],
                            _string(doc, f"input '{input_name}': doc", fail, limit=1000) if doc else ""))
    repeated = sorted(role for role, n in Counter(i.role for i in inputs).items() if n > 1)
    if repeated:
        raise fail(f"two inputs have the role {repeated[0]}: "
                   f"{' and '.join(i.name for i in inputs if i.role == repeated[0])}; each role needs one input")
    roles = {i.role for i in inputs}
    if roles != MODES[mode]:
        raise fail(f"mode '{mode}' needs exactly one input of each role {sorted(MODES[mode])}, got {sorted(roles)}")

    if not isinstance(data["operators"], list) or not data["operators"]:
        raise fail("'operators' must be a non-empty list of operator names")
    unknown = [shown(op, 40) for op in data["operators"] if not isinstance(op, str) or op not in OPERATORS]
    if unknown:
        raise fail(f"unknown operator(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; "
                   f"known: {', '.join(OPERATORS)}")
    operators = tuple(data["operators"])
    if len(set(operators)) != len(operators):
        raise fail("'operators' names an operator twice")
    if not any(OPERATORS[op].arity == 1 for op in operators) or not any(OPERATORS[op].arity == 2 for op in operators):
        raise fail("needs at least one unary and one binary operator")
    if mode != "softmax" and ({"Softmax", "Dot"} & set(operators)):
        raise fail("Softmax and Dot couple the classes and are only allowed in softmax mode")

    constants = data.get("constants", [1, 2, 3])
    if not isinstance(constants, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 < c <= MAX_CONSTANT for c in constants):
        raise fail(f"constants must be positive integers (a list of them, each at most {MAX_CONSTANT:,})")
    if len(set(constants)) != len(constants):
        raise fail("'constants' repeats a constant")
    constants = tuple(constants)
    if data["output"] not in SHAPES:
        raise fail(f"output must be one of {', '.join(SHAPES)}")
    limits = data.get("limits", {}) or {}
    if not isinstance(limits, dict):
        raise fail("'limits' must map max_height and max_size to integers")
    max_height, max_size = limits.get("max_height", 8), limits.get("max_size", 32)
    if isinstance(max_height, bool) or isinstance(max_size, bool):
        raise fail("limits: max_height and max_size must be integers")
    max_height, max_size = int(max_height), int(max_size)
    if not (2 <= max_height <= 17 and 3 <= max_size <= 200):
        raise fail("limits: max_height must be in 2..17 and max_size in 3..200 (deeper trees break Python's parser)")

    if not isinstance(data["losses"], dict) or not data["losses"]:
        raise fail("'losses' must map loss names to expressions")
    losses = {}
    for loss_name, text in data["losses"].items():
        loss_name = _string(loss_name, "a loss name", fail, limit=100)
        losses[loss_name] = _string(text, f"loss {shown(loss_name)}", fail)
    if not isinstance(data["initial"], str) or data["initial"] not in losses:
        raise fail(f"initial loss {shown(data['initial'], 40)} is not one of the named losses "
                   f"({', '.join(losses)})")
    aliases = data.get("aliases") or {}
    if not isinstance(aliases, dict):
        raise fail("'aliases' must map names to expressions")
    aliases = {_check_name(k, "alias", fail): _string(v, f"alias '{k}'", fail) for k, v in aliases.items()}
    clash = set(aliases) & ({i.name for i in inputs} | set(OPERATORS))
    if clash:
        raise fail(f"aliases shadow inputs or operators: {', '.join(sorted(clash))}")
    clash = sorted(({i.name for i in inputs} | set(aliases)) & set(losses))
    if clash:
        raise fail(f"{clash[0]} names both a loss and an input or alias")
    description = data.get("description", "")
    description = _string(description, "'description'", fail, limit=10_000).strip() if description else ""

    return SearchSpace(
        name=name, branch=branch, mode=mode, inputs=tuple(inputs), constants=constants, operators=operators,
        output=data["output"], max_height=max_height, max_size=max_size, initial=data["initial"],
        losses=losses, aliases=aliases, description=description, source=source,
    )
