"""The one rule for text that reaches generated Python source (the exported loss and cell modules).

A value autoloss did not write into the template itself (a run folder's name or path, a stored
metric, ranking-stage, tracker or detector name, a candidate's origin, any other stored setting)
enters a generated module only as :func:`literal`: its ``repr()``, a Python literal on one line made
of printable characters, with no double quote (so no ``\"\"\"`` that would close a docstring) and no
newline (so nothing it holds can start a line of code after a ``#`` comment). In code it is that
value; in a comment or a docstring it is inert text that reads as the quoted value (:func:`mention`
shows a plain word or path bare there, anything else as its literal). Values a reader
should get back exactly go into the module as data (:func:`data_lines`), never only into prose.

Module names made from such values (a run folder's name) keep ASCII letters, digits and
underscores only (:func:`ascii_label`), and a module file's name is checked by :func:`module_name`:
the same rules for every exporter.
"""

from __future__ import annotations

import keyword
import math
import re
import sys
from pathlib import Path

from autoloss.errors import UserError

# module names an exported module must not take: it would hide the real one
SHADOWED = {"autoloss", "torch", "mmdet", "mmengine", "mmcv", "numpy", "deap", "sympy", "yaml"}


def literal(value) -> str:
    """``value`` (a str, a path, a finite number, a bool or None) as a one-line Python literal that is
    safe anywhere in generated source: in code, a comment or a docstring. ``eval(literal(v)) == v``."""
    if isinstance(value, Path):
        value = str(value)
    if value is None or isinstance(value, (bool, int)):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"a non-finite number ({value!r}) has no Python literal")
        return repr(value)
    if not isinstance(value, str):
        raise TypeError(f"no literal for a {type(value).__name__} in generated source")
    text = repr(value)  # printable, one line; quotes: '...' unless the value holds ' and no "
    if text[0] == '"':
        text = "'" + text[1:-1].replace("'", "\\'") + "'"
    return "'" + text[1:-1].replace('"', '\\"') + "'"


def mention(value) -> str:
    """A stored value inside prose of generated source (a comment, a docstring): the value itself when
    it is a plain ASCII word or path (letters, digits and ``_ . , : / + -``: nothing a comment or a
    docstring could read differently), else its :func:`literal`."""
    text = str(value) if isinstance(value, (str, Path, int, float)) and not isinstance(value, bool) else None
    if text and _PLAIN.fullmatch(text):
        return text
    try:
        return literal(value)
    except (TypeError, ValueError):  # a list, a dict, a NaN: shown as the literal of its text
        return literal(str(value))


_PLAIN = re.compile(r"[A-Za-z0-9_.,:/+-]+")


def data_lines(name: str, values: dict, indent: str = "") -> list[str]:
    """``NAME = {key: value, ...}`` over several lines, every key and value a :func:`literal`."""
    if not name.isidentifier():
        raise ValueError(f"{name!r} is not an identifier")
    lines = [f"{indent}{name} = {{"]
    lines += [f"{indent}    {literal(key)}: {literal(value)}," for key, value in values.items()]
    return lines + [f"{indent}}}"]


def ascii_label(text: str, default: str = "run") -> str:
    """A run folder's name as part of a module or class name: ASCII letters, digits and ``_`` only,
    lower case (``'demo-run é'`` -> ``'demo_run'``)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower() or default


def module_name(path: Path) -> str:
    """The import name of a generated module file, checked: a Python identifier that is no keyword and
    hides no other module (the standard library's, or one an exported module imports)."""
    if path.suffix != ".py":
        raise UserError(f"--out {path}: the module file must end in .py")
    name = path.stem
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UserError(f"--out {path}: {name!r} is not a valid module name (configs import it by name; "
                        "use letters, digits and underscores)")
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    if name in SHADOWED or name in stdlib:
        raise UserError(f"--out {path}: {name!r} would hide the module of that name; choose another file name")
    return name
