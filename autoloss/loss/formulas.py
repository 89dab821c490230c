"""Stored genotypes as formulas a person can read: prefix string, infix and LaTeX.

The run's search space is loaded from its stored config; a space that cannot be loaded any more
(a custom YAML file moved away) or a string it cannot parse leaves the prefix string alone.
"""

from __future__ import annotations

from autoloss.errors import UserError
from autoloss.loss.genotype import LossGenotype
from autoloss.loss.space import load_space


class Formulas:
    """Describes genotype strings in the search space of one run."""

    def __init__(self, config: dict):
        self.space, self.genotype, self.problem = None, None, None
        names = [config.get("space"), (config.get("task") or {}).get("space")]
        for name in [n for n in names if n]:
            try:
                self.space = load_space(name)
                self.genotype = LossGenotype(self.space)
                self.problem = None
                break
            except (UserError, OSError, ValueError) as exc:
                self.problem = f"search space {name!r} could not be loaded ({exc}): formulas are shown as stored"
        self._ready = {}
        if self.genotype is not None:
            for name, text in self.space.losses.items():
                try:
                    self._ready.setdefault(str(self.genotype.parse(text)), name)
                except UserError:
                    pass

    def describe(self, text: str) -> dict[str, str | None]:
        """``{"expression", "infix", "latex"}``; infix and LaTeX are None when the string cannot be read."""
        if self.genotype is not None:
            try:
                return self.genotype.describe(self.genotype.parse(text))
            except UserError:
                pass
        return {"expression": text, "infix": None, "latex": None}

    def infix(self, text: str) -> str:
        return self.describe(text)["infix"] or text

    def ready_name(self, text: str) -> str | None:
        """The space's name for a ready loss (CE, CEI, FL, GIoU, ...) equal to this string, if any."""
        if self.genotype is None:
            return None
        try:
            return self._ready.get(str(self.genotype.parse(text)))
        except UserError:
            return None
