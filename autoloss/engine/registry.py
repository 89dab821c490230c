"""Strategies and representations by name: the CLI and the run readers look them up here.

A strategy registers its class (``name``, ``Options``); a representation kind registers a factory
of its run reader hooks (report and export dispatch on the kind stored with a run).
"""

from __future__ import annotations

from typing import Any, Callable

_STRATEGIES: dict[str, type] = {}
_KINDS: dict[str, Callable[[], Any]] = {}


def register_strategy(cls: type) -> type:
    _STRATEGIES[cls.name] = cls
    return cls


def strategies() -> dict[str, type]:
    import autoloss.strategies  # noqa: F401  (registers the built-in ones)

    return dict(_STRATEGIES)


def strategy(name: str) -> type:
    from autoloss.errors import UserError

    known = strategies()
    if name not in known:
        raise UserError(f"unknown strategy '{name}': expected one of {', '.join(sorted(known))}")
    return known[name]


def register_kind(kind: str, factory: Callable[[], Any]) -> None:
    """``factory()`` returns the kind's hooks for readers (e.g. how to describe a stored genotype)."""
    _KINDS[kind] = factory


def kind(name: str) -> Any:
    from autoloss.errors import UserError

    import autoloss.kinds  # noqa: F401  (registers the built-in kinds)

    if name not in _KINDS:
        raise UserError(f"this autoloss does not know runs of kind '{name}' (known: {', '.join(sorted(_KINDS))})")
    return _KINDS[name]()
