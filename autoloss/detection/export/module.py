"""The source text of an exported module: generated loss functions as registered MMDetection losses.

One module holds one or several losses. It carries everything it runs: the primitives its
functions call (copied from :mod:`autoloss.loss.primitives`), the loss module base classes of
:mod:`autoloss.detection.mmdet.loss_modules` it needs, and, with a classification loss, the
IoU-aware heads of :mod:`autoloss.detection.mmdet.heads`. It imports only torch, mmdet and mmengine.

Registration: every loss class goes into mmdet's MODELS with ``force=True`` (importing two exported
modules, or one twice, never raises). The heads go into mmengine's root MODELS registry, the parent
of mmdet's, where a config of any downstream scope finds them by name; ``autoloss.detection.mmdet.heads``
registers the same classes in mmdet's own registry, where they take precedence, so importing it
before or after an exported module does not clash either.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass
from importlib import resources

from autoloss.detection.export.codegen import HELPERS, RESERVED, LossCode, helper_source, loss_function
from autoloss.loss import samples
from autoloss.loss.expression import Node
from autoloss.loss.genotype import LossGenotype
from autoloss.loss.primitives import EPS, EXP_MAX, LOG_EPS
from autoloss.loss.space import SearchSpace
from autoloss.source_text import data_lines

BASES = {"softmax": "SoftmaxClsLossBase", "sigmoid": "SigmoidClsLossBase",
         "regression": "IoULossBase"}
HEADS = {"softmax": "IoUAwareShared2FCBBoxHead", "sigmoid": "IoUAwareFCOSHead"}
HEAD_REGISTRY = "MMENGINE_MODELS"
STDLIB = {"__future__", "inspect", "math", "typing"}
RULE = "# " + "-" * 98


@dataclass(frozen=True)
class ExportedLoss:
    """One loss to export: the tree, its space, the names it gets and where it comes from."""

    node: Node
    space: SearchSpace
    class_name: str  # registered in mmdet's MODELS under this name
    function_name: str  # the generated torch function
    title: str  # one line: what it is ("Rank 1 of run r1: proxy mAP 0.312 ...")
    details: tuple[str, ...] = ()  # further provenance lines

    @property
    def uses_iou(self) -> bool:
        """Whether a classification loss reads the space's IoU input."""
        return self.space.mode in HEADS and self.node.uses(self.space.input_for("iou").name)

    @property
    def needs_iou_head(self) -> bool:
        """Whether the loss belongs in an IoU-aware head: every classification loss, since the search
        trains them there (FCOS's IoU-aware head also learns the IoU as its centerness target)."""
        return self.space.mode in HEADS

    @property
    def loss_key(self) -> str:
        return "loss_bbox" if self.space.mode == "regression" else "loss_cls"


def module_source(losses: list[ExportedLoss], docstring: str, run: dict | None = None) -> str:
    """The text of a module defining ``losses`` (see the module docstring), with ``docstring`` on top and,
    with ``run``, where they come from as the data ``RUN`` (:func:`autoloss.source_text.data_lines`)."""
    if not losses:
        raise ValueError("nothing to export")
    bases = _definitions(_read("autoloss.detection.mmdet", "loss_modules.py"))
    heads_source = _read("autoloss.detection.mmdet", "heads.py")
    heads = _definitions(heads_source)
    _check_names(losses, set(bases) | set(heads))
    codes = [loss_function(loss.node, loss.space, loss.function_name) for loss in losses]
    helpers = sorted({h for code in codes for h in code.helpers}, key=_helper_order)
    modes = [m for m in BASES if any(loss.space.mode == m for loss in losses)]
    with_heads = any(loss.needs_iou_head for loss in losses)

    wanted = ["REDUCTIONS"] + sorted({c.broadcasts for c in codes if c.broadcasts})
    wanted += ["LossBase"] + [BASES[m] for m in modes]
    base_code = [bases[name].text for name in wanted]
    if "regression" in modes:
        base_code.append(inspect.getsource(samples.box_areas).rstrip())

    constants = ([f"EPS = {EPS!r}"] + ([f"LOG_EPS = {LOG_EPS!r}"] if "protected_log" in helpers else [])
                 + ([f"EXP_MAX = {EXP_MAX!r}"] if "protected_exp" in helpers else []))
    header = "\n\n".join([
        _docstring(docstring, ""),
        _imports(helpers, with_heads, heads_source),
        "\n".join(constants),
        "__all__ = [" + ", ".join(repr(loss.class_name) for loss in losses) + "]",
        *(["# Where the losses come from (the run's folder and what its store says), as data.\n"
           + "\n".join(data_lines("RUN", run))] if run else []),
    ])
    sections = [header]
    if helpers:
        sections.append(_section("The primitives these losses use, as autoloss.loss.primitives defines them",
                                 [helper_source(h).rstrip() for h in helpers]))
    sections.append(_section("The searched losses, as torch functions", [c.source.rstrip() for c in codes]))
    sections.append(_section("MMDetection loss modules around them, as autoloss.detection.mmdet.loss_modules "
                             "defines them for the Searched* losses too", base_code))
    sections.append("\n\n\n".join(_loss_class(loss, code) for loss, code in zip(losses, codes)))
    if with_heads:
        sections.append(_section(
            "The IoU-aware heads of autoloss.detection.mmdet.heads, which hand the IoU to the classification loss. "
            "Registered in mmengine's root MODELS (mmdet's parent): mmdet configs find them by name, "
            "and importing autoloss.detection.mmdet.heads too does not clash.", _heads_code(heads)))
    return "\n\n\n".join(s for s in sections if s).rstrip() + "\n"


# ------------------------------------------------------------------------------------------------ parts


@dataclass(frozen=True)
class _Definition:
    node: ast.stmt
    text: str  # its source, with the comment lines right above it


def _read(package: str, name: str) -> str:
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def _definitions(source: str) -> dict[str, _Definition]:
    """The top-level functions, classes and assignments of a module, by name, as written."""
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            name = node.name
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        else:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        while start > 0 and lines[start - 1].startswith("#"):
            start -= 1
        found[name] = _Definition(node, "\n".join(lines[start:node.end_lineno]))
    return found


def _helper_order(name: str) -> int:
    return [h.__name__ for h in HELPERS.values()].index(name)


def _check_names(losses: list[ExportedLoss], carried: set[str]) -> None:
    taken = RESERVED | carried | {"HEAD_REGISTRY", HEAD_REGISTRY}
    seen: set[str] = set()
    for loss in losses:
        for name in (loss.class_name, loss.function_name):
            if not name.isidentifier() or name in taken or name in seen:
                raise ValueError(f"cannot name a loss {name!r} in an exported module "
                                 "(not an identifier, or already used)")
            seen.add(name)


def _imports(helpers: list[str], with_heads: bool, heads_source: str) -> str:
    """The import block, grouped and sorted like the rest of autoloss (isort's default style)."""
    statements = [
        "from __future__ import annotations",
        "import torch",
        "import torch.nn.functional as F",
        "from mmdet.models.losses.utils import weight_reduce_loss",
        "from mmdet.registry import MODELS",
        "from torch import Tensor, nn",
    ]
    if any("math." in helper_source(h) for h in helpers):  # the rescaled S-curves use math.pi
        statements.append("import math")
    if with_heads:
        statements += _import_lines(heads_source)
        statements.append(f"from mmengine.registry import MODELS as {HEAD_REGISTRY}")
    plain: dict[str, set[str]] = {}  # module -> {"as name" or ""}
    froms: dict[str, set[str]] = {}
    for statement in statements:
        node = ast.parse(statement).body[0]
        if isinstance(node, ast.Import):
            for alias in node.names:
                plain.setdefault(alias.name, set()).add(alias.asname or "")
        else:
            froms.setdefault(node.module, set()).update(
                a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
    groups: dict[str, list[str]] = {"future": [], "stdlib": [], "third": []}
    for module in sorted(plain):
        for asname in sorted(plain[module]):
            groups[_group(module)].append(f"import {module}" + (f" as {asname}" if asname else ""))
    for module in sorted(froms):
        names = sorted(froms[module], key=lambda n: (not n[0].isupper(), n.lower()))
        groups[_group(module)].append(f"from {module} import {', '.join(names)}")
    return "\n\n".join("\n".join(g) for g in groups.values() if g)


def _group(module: str) -> str:
    root = module.split(".")[0]
    return "future" if root == "__future__" else "stdlib" if root in STDLIB else "third"


def _import_lines(source: str) -> list[str]:
    lines = source.splitlines()
    return ["\n".join(lines[n.lineno - 1:n.end_lineno]) for n in ast.parse(source).body
            if isinstance(n, ast.Import) or (isinstance(n, ast.ImportFrom) and n.module != "__future__")]


def _heads_code(heads: dict[str, _Definition]) -> list[str]:
    """heads.py's definitions, with each head registered in mmengine's root registry instead."""
    parts = []
    for name, definition in heads.items():
        node = definition.node
        if isinstance(node, ast.ClassDef) and node.decorator_list:
            decorators = [ast.unparse(d) for d in node.decorator_list]
            if decorators != ["MODELS.register_module()"]:
                raise ValueError(f"autoloss/detection/mmdet/heads.py: unexpected decorators on {name}: {decorators}")
            text = definition.text.splitlines()
            body = text[next(i for i, line in enumerate(text) if line.startswith("class ")):]
            parts.append("\n".join([f"@{HEAD_REGISTRY}.register_module(force=True)", *body]))
        else:
            parts.append(definition.text)
    return parts


def _section(title: str, parts: list[str]) -> str:
    heading = "\n".join(textwrap.wrap(title, width=98, initial_indent="# ", subsequent_indent="# "))
    return f"{RULE}\n{heading}\n\n\n" + "\n\n\n".join(parts)


def _docstring(text: str, indent: str) -> str:
    """A docstring literal for ``text`` (raw when it holds backslashes, e.g. LaTeX)."""
    text = "".join(c if c.isprintable() or c == "\n" else "?" for c in text).replace('"""', "'''")
    body = "\n".join((indent + line) if line else "" for line in text.strip("\n").splitlines())
    prefix = "r" if "\\" in text else ""
    return f'{indent}{prefix}"""{body[len(indent):]}\n{indent}"""'


_MODE_WORDS = {
    "softmax": "softmax classification, one value per RoI over its C+1 logits",
    "sigmoid": "sigmoid classification, one value per logit, before the focal alpha weighting",
    "regression": "box regression, one value per box",
}
_DROP_IN = {
    "softmax": "Drop-in for ``CrossEntropyLoss(use_sigmoid=False)`` as ``loss_cls`` of a two-stage RoI box "
               "head (Faster R-CNN's ``Shared2FCBBoxHead``).",
    "sigmoid": "Drop-in for ``FocalLoss(use_sigmoid=True)`` as ``loss_cls`` of a one-stage head (FCOS); "
               "``alpha`` (default 0.25, None to disable) weights the positive and negative entries.",
    "regression": "Drop-in for ``GIoULoss`` as ``loss_bbox`` on decoded x1y1x2y2 boxes (in a two-stage "
                  "box head set ``reg_decoded_bbox=True``).",
}


def _loss_class(loss: ExportedLoss, code: LossCode) -> str:
    described = _describe(loss)
    space = loss.space
    inputs = "; ".join(f"{i.name.lower()}: {i.doc or i.role}" for i in space.inputs)
    lines = [*_wrapped(loss.title), ""]
    if loss.details:
        lines += [wrapped for detail in loss.details for wrapped in _wrapped(detail)] + [""]
    lines += _wrapped(f"The loss ({_MODE_WORDS[space.mode]}; {inputs}):") + [""]
    lines += _labelled("prefix", " ".join(_chunks(described["expression"], 80)))
    lines += _labelled("infix", described["infix"])
    lines += _labelled("LaTeX", described["latex"]) + [""]
    usage = _DROP_IN[space.mode]
    if loss.needs_iou_head:
        usage += (f" Use it in an ``{HEADS[space.mode]}`` (defined in this module), as in the search: "
                  + ("the head hands the IoU of each positive to the loss" if loss.uses_iou else
                     "this loss does not read the IoU, but the head is the one it was searched with")
                  + (", and learns the IoU as its centerness target." if space.mode == "sigmoid" else "."))
    lines += _wrapped(usage) + ["", f"Config: ``{loss.loss_key}=dict({_config_args(loss)})``"]
    doc = _docstring("\n".join(lines), "    ")
    return "\n".join([
        "@MODELS.register_module(force=True)",
        f"class {loss.class_name}({BASES[space.mode]}):",
        doc,
        "",
        _expression_attribute(str(loss.node)),
        f"    loss_fn = staticmethod({code.name})",
    ])


def _chunks(prefix: str, width: int) -> list[str]:
    """A prefix expression cut after commas into pieces of at most ``width`` characters (when it can)."""
    pieces, current = [], ""
    for token in prefix.replace(",", ",\0").split("\0"):
        if current and len(current) + len(token) > width:
            pieces.append(current)
            current = ""
        current += token
    return pieces + [current]


def _expression_attribute(prefix: str) -> str:
    """``expression = '...'``, split over lines in parentheses when long."""
    if len(prefix) <= 80:
        return f"    expression = {prefix!r}"
    return "\n".join(["    expression = (", *(f"        {c!r}" for c in _chunks(prefix, 80)), "    )"])


def _wrapped(text: str) -> list[str]:
    return [w for line in text.splitlines() for w in textwrap.wrap(line, width=92, break_long_words=False,
                                                                  break_on_hyphens=False) or [""]]


def _config_args(loss: ExportedLoss) -> str:
    extra = ", use_sigmoid=True" if loss.space.mode == "sigmoid" else ""
    return f"type={loss.class_name!r}{extra}"


def _labelled(label: str, text: str) -> list[str]:
    head = f"    {label + ':':<8}"
    wrapped = textwrap.wrap(text, width=92, initial_indent=head, subsequent_indent=" " * len(head),
                            break_long_words=False, break_on_hyphens=False)
    return wrapped or [head]


_GENOTYPES: dict[str, LossGenotype] = {}


def _describe(loss: ExportedLoss) -> dict[str, str]:
    key = loss.space.source or loss.space.name
    if key not in _GENOTYPES:
        _GENOTYPES[key] = LossGenotype(loss.space)
    return _GENOTYPES[key].describe(loss.node)
