"""Search spaces as data: loading and validating a search-space YAML file.

A search space names its mode (softmax / sigmoid / regression: the meaning of its inputs), its
inputs with their role and shape, the constants, the allowed operators, the root shape, the size
limits, named ready losses and the initial loss L_I. The bundled spaces live in ``search_spaces/``
at the top of the repository and ship inside the wheel as ``autoloss/search_spaces``; a user can
pass the path of their own file wherever a bundled name is accepted.
"""

from __future__ import annotations

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
    """Load a bundled space by name (``cls_softmax``, ``cls_sigmoid``, ``reg``) or a YAML file."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        path = bundled_dir() / f"{text}.yaml"
        if not path.is_file():
            raise UserError(f"unknown search space '{text}': expected one of {', '.join(bundled_names())} "
                            "or the path of a search-space YAML file")
    if not path.is_file():
        raise UserError(f"search space file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"search space file {path} is not valid YAML: {exc}") from None
    return parse_space(data, source=str(path))


def parse_space(data: object, source: str = "<dict>") -> SearchSpace:
    """Validate the decoded YAML of a search space; every problem is one clear UserError."""
    try:
        return _parse_space(data, source)
    except (TypeError, ValueError, AttributeError) as exc:  # a value of the wrong type somewhere
        raise UserError(f"search space {source}: a value has the wrong type ({exc})") from None


def _parse_space(data: object, source: str) -> SearchSpace:
    def fail(message: str) -> UserError:
        return UserError(f"search space {source}: {message}")

    if not isinstance(data, dict):
        raise fail("expected a mapping at the top level")
    for key in ("name", "mode", "inputs", "operators", "output", "initial", "losses"):
        if key not in data:
            raise fail(f"missing key '{key}'")
    mode = data["mode"]
    if mode not in MODES:
        raise fail(f"mode '{mode}' is not one of {', '.join(MODES)}")

    inputs = []
    if not isinstance(data["inputs"], dict) or not data["inputs"]:
        raise fail("'inputs' must map input names to {role, shape}")
    for name, spec in data["inputs"].items():
        if not str(name).isidentifier():
            raise fail(f"input name '{name}' is not an identifier")
        if not isinstance(spec, dict) or "role" not in spec or "shape" not in spec:
            raise fail(f"input '{name}' needs a role and a shape")
        if spec["shape"] not in SHAPES:
            raise fail(f"input '{name}': shape must be one of {', '.join(SHAPES)}")
        inputs.append(Input(str(name), str(spec["role"]), str(spec["shape"]), str(spec.get("doc", ""))))
    roles = {i.role for i in inputs}
    if roles != MODES[mode]:
        raise fail(f"mode '{mode}' needs exactly one input of each role {sorted(MODES[mode])}, got {sorted(roles)}")

    if not isinstance(data["operators"], list) or not data["operators"]:
        raise fail("'operators' must be a non-empty list of operator names")
    operators = tuple(str(op) for op in data["operators"])
    unknown = [op for op in operators if op not in OPERATORS]
    if unknown:
        raise fail(f"unknown operator(s) {', '.join(unknown)}; known: {', '.join(OPERATORS)}")
    if not any(OPERATORS[op].arity == 1 for op in operators) or not any(OPERATORS[op].arity == 2 for op in operators):
        raise fail("needs at least one unary and one binary operator")
    if mode != "softmax" and ({"Softmax", "Dot"} & set(operators)):
        raise fail("Softmax and Dot couple the classes and are only allowed in softmax mode")

    constants = tuple(data.get("constants", [1, 2, 3]))
    if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in constants):
        raise fail("constants must be positive integers")
    if data["output"] not in SHAPES:
        raise fail(f"output must be one of {', '.join(SHAPES)}")
    limits = data.get("limits", {}) or {}
    max_height, max_size = int(limits.get("max_height", 8)), int(limits.get("max_size", 32))
    if not (2 <= max_height <= 17 and 3 <= max_size <= 200):
        raise fail("limits: max_height must be in 2..17 and max_size in 3..200 (deeper trees break Python's parser)")

    if not isinstance(data["losses"], dict) or not data["losses"]:
        raise fail("'losses' must map loss names to expressions")
    losses = {str(k): str(v) for k, v in data["losses"].items()}
    if data["initial"] not in losses:
        raise fail(f"initial loss '{data['initial']}' is not one of the named losses ({', '.join(losses)})")
    aliases = {str(k): str(v) for k, v in (data.get("aliases") or {}).items()}
    clash = set(aliases) & ({i.name for i in inputs} | set(OPERATORS))
    if clash:
        raise fail(f"aliases shadow inputs or operators: {', '.join(sorted(clash))}")

    return SearchSpace(
        name=str(data["name"]), branch=str(data.get("branch", "reg" if mode == "regression" else "cls")),
        mode=mode, inputs=tuple(inputs), constants=constants, operators=operators, output=str(data["output"]),
        max_height=max_height, max_size=max_size, initial=str(data["initial"]), losses=losses,
        aliases=aliases, description=str(data.get("description", "")).strip(), source=source,
    )
