"""The built-in plug-ins, registered by name with :mod:`autoloss.engine.registry`: importing this module wires them.

- strategies: ``cse``, ``vanilla``, ``random`` (:mod:`autoloss.strategies`) and ``darts``, ``darts2``,
  ``ms-darts`` (:mod:`autoloss.differentiable.strategies`);
- representation kinds, each the hooks run readers (``autoloss report``, ``autoloss export``) need:
  ``loss`` (formulas from :mod:`autoloss.loss.formulas`; its runs export as MMDetection modules,
  :mod:`autoloss.detection.export`) and ``cell`` (:mod:`autoloss.cell.kind`);
- report sections: the differentiable strategies' per-epoch figures and table (:mod:`autoloss.differentiable.report`).

Entry points that look plug-ins up (the CLI, :func:`autoloss.report.write_report`, scripts) import this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from autoloss.cell import kind as cell_kind
from autoloss.differentiable import report as differentiable_report
from autoloss.differentiable.strategies import STRATEGIES as DIFFERENTIABLE
from autoloss.engine.registry import register_kind, register_report_section, register_strategy
from autoloss.strategies.cse import CseStrategy
from autoloss.strategies.random_search import RandomStrategy
from autoloss.strategies.vanilla import VanillaStrategy


@dataclass(frozen=True)
class ReaderHooks:
    """What run readers need of a representation kind."""

    describer: Callable[[dict], Any]  # run config -> describes the run's genotype strings (report)
    export_run: Callable[..., Any]  # (run_dir, top=, out=, name=, include_worse=, ...) -> a result with summary()


def loss_hooks() -> ReaderHooks:
    # heavy: torch and sympy (the loss package), loaded only when a loss run is read
    from autoloss.detection.export.exporter import export_run
    from autoloss.loss.formulas import Formulas

    return ReaderHooks(describer=Formulas, export_run=export_run)


def cell_hooks() -> ReaderHooks:
    return ReaderHooks(describer=cell_kind.CellDescriber, export_run=cell_kind.export_run)


for _strategy in (CseStrategy, VanillaStrategy, RandomStrategy, *DIFFERENTIABLE):
    register_strategy(_strategy)
register_kind("loss", loss_hooks)
register_kind("cell", cell_hooks)
register_report_section(differentiable_report.section)
