"""Strategies and representation kinds by name: the CLI and the run readers look them up here.

A strategy registers its class (``name``, ``Options``); a representation kind registers a factory
of its run reader hooks (report and export dispatch on the kind stored with a run); a report
section (e.g. the differentiable strategies' per-epoch figures) registers the function that adds
itself to a run's report when the run is one of its own. The engine knows no plug-in itself: :mod:`autoloss.plugins` registers the built-in ones.
"""

from __future__ import annotations

from typing import Any, Callable

from autoloss.errors import UserError

_STRATEGIES: dict[str, type] = {}
_KINDS: dict[str, Callable[[], Any]] = {}
_REPORT_SECTIONS: list[Callable[..., Any]] = []


def register_strategy(cls: type) -> type:
    _STRATEGIES[cls.name] = cls
    return cls


def strategies() -> dict[str, type]:
    """The registered strategies by name."""
    return dict(_STRATEGIES)


def strategy(name: str) -> type:
    if name not in _STRATEGIES:
        raise UserError(f"unknown strategy '{name}': expected one of {', '.join(sorted(_STRATEGIES)) or 'none registered'}")
    return _STRATEGIES[name]


def register_kind(kind: str, factory: Callable[[], Any]) -> None:
    """``factory()`` returns the kind's hooks for readers (e.g. how to describe a stored genotype)."""
    _KINDS[kind] = factory


def kind(name: str) -> Any:
    if name not in _KINDS:
        raise UserError(f"this autoloss does not know runs of kind '{name}' "
                        f"(known: {', '.join(sorted(_KINDS)) or 'none registered'})")
    return _KINDS[name]()


def register_report_section(section: Callable[..., Any]) -> None:
    """``section(record, out_dir)`` -> ``(figures {name: path}, markdown)`` for runs it covers, else None."""
    if section not in _REPORT_SECTIONS:
        _REPORT_SECTIONS.append(section)


def report_sections() -> list[Callable[..., Any]]:
    return list(_REPORT_SECTIONS)
