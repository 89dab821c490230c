"""What run readers need of the cell kind: how to show its genotypes (text and pictures), how to export its best.

:mod:`autoloss.plugins` registers these hooks for runs of kind ``cell``.
"""

from __future__ import annotations

from pathlib import Path

from autoloss.cell.genotype import Genotype
from autoloss.cell.representation import HAND, CellRepresentation, CellSpace, Reference
from autoloss.errors import UserError


class CellDescriber:
    """Describes the genotype strings of a cell run (the report's counterpart of the loss kind's Formulas)."""

    noun = "cell"  # what the report calls a candidate
    forms = {"expression": "genotype", "infix": "operations"}  # labels of the report's formula lines

    def __init__(self, config: dict):
        self.space = None
        self.problem = None
        self.representation = CellRepresentation(references=(HAND,))
        try:
            space = (config.get("task") or {}).get("space") or {}
            self.representation = CellRepresentation(CellSpace.from_options(space), references=(HAND,))
        except (UserError, TypeError, AttributeError) as exc:
            self.problem = f"the run's cell space could not be read ({exc}): parameter counts use the defaults"

    def _parse(self, text: str):
        try:
            return self.representation.parse(text)
        except UserError:
            return None

    def describe(self, text: str) -> dict[str, str | None]:
        """``{"expression": the stored genotype, "infix": a summary of its operations, "latex": None}``."""
        genotype = self._parse(text)
        if genotype is None:
            return {"expression": text, "infix": None, "latex": None}
        described = self.representation.describe(genotype)
        summary = described["summary"]
        if described.get("params"):
            summary += f" ({int(described['params']):,} parameters)"
        return {"expression": text, "infix": summary, "latex": None}

    def infix(self, text: str) -> str:
        return self.describe(text)["infix"] or text

    def ready_name(self, text: str) -> str | None:
        """The reference's name for a reference neck (the hand-designed neck), else None."""
        genotype = self._parse(text)
        return "hand-designed neck" if isinstance(genotype, Reference) else None

    def draw(self, text: str, path: str | Path, title: str | None = None) -> Path | None:
        """The cell as a PNG graph at ``path`` (None for a reference neck or a string that does not parse)."""
        from autoloss.cell.draw import draw_cell  # heavy: matplotlib

        genotype = self._parse(text)
        if not isinstance(genotype, Genotype):
            return None
        return draw_cell(genotype, path, title=title)


def export_run(run_dir, top: int = 1, out=None, name=None, include_worse: bool = False,
               include_unconfirmed: bool = False, **_):
    """The best ``top`` cells of the run as a standalone PyTorch module (:func:`autoloss.cell.export.export_run`)."""
    from autoloss.cell.export import export_run as export  # heavy: torch

    return export(run_dir, top=top, out=out, name=name, include_worse=include_worse,
                  include_unconfirmed=include_unconfirmed)
