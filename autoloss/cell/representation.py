"""The cell as a representation of the engine: parse, identity, description, start, gates, breeding.

It follows ``autoloss.engine.protocols`` (Representation and Operators): the engine stores a cell
as its printed form, :meth:`CellRepresentation.key` (``parse(key(g)) == g``), and recognises
duplicates by :meth:`CellRepresentation.fingerprint`, the hash of the canonical form (equal for
cells that compute the same function; :func:`~autoloss.cell.canonical.canonical_key` is that form
printed).

The initial cell (:data:`INITIAL`) is DARTS_V2's normal cell (second-order DARTS on CIFAR-10): a
published, well-tried cell that reads both inputs, mostly 3x3 separable convs with two skips and a
dilated conv; the search starts from it as CSE-Autoloss starts from its initial loss.

References: a representation may name modules that are not cells but fill the cell's slot (the
tracker's hand-designed neck, key ``"hand"``), so a run's baseline can be one of them while breeding
starts from the initial cell. ``parse``, ``key``, ``describe`` and ``fingerprint`` accept a
:class:`Reference`; the breeding operators replace one by the initial cell (a reference has no edges
to mutate or exchange: the engine's hall of fame, which holds the baseline, may hand it over as a
parent), and the gates never see one (the engine does not screen its baseline).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any, Mapping

from autoloss.cell import breeding
from autoloss.cell.canonical import canonical, fingerprint
from autoloss.cell.cost import count_flops, count_parameters
from autoloss.cell.gates import BudgetGate, StructureGate
from autoloss.cell.genotype import PRIMITIVES, Genotype, format_genotype, parse_genotype
from autoloss.errors import UserError

INITIAL = parse_genotype(
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5])"
)


@dataclass(frozen=True)
class CellSpace:
    """Options of the cell search: channels per node, the feature-map size the budget is counted at, budgets."""

    channels: int = 64
    height: int = 18
    width: int = 18
    max_params: int | None = None
    max_flops: int | None = None

    def __post_init__(self):
        for name in ("channels", "height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"cell option {name} must be a positive integer, got {value!r}")
        for name in ("max_params", "max_flops"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise UserError(f"cell option {name} must be a non-negative integer or empty, got {value!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None, base: "CellSpace | None" = None) -> "CellSpace":
        """A space from a mapping of option names (unknown names are a UserError), over ``base``."""
        known = [f.name for f in fields(cls)]
        options = dict(options or {})
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise UserError(f"unknown cell option(s) {', '.join(unknown)} (known: {', '.join(known)})")
        values = {name: getattr(base or cls(), name) for name in known}
        values.update(options)
        return cls(**values)


@dataclass(frozen=True)
class Reference:
    """A named module in the cell's slot that is not a cell (e.g. the hand-designed neck)."""

    name: str
    description: str

    def __str__(self) -> str:
        return self.name


HAND = Reference("hand", "the hand-designed neck: concatenated inputs, three 3x3 convs with BN to 4C channels")


def summary(genotype: Genotype) -> str:
    """Operation counts, most used first, e.g. '5 sep_conv_3x3, 2 skip_connect, 1 dil_conv_3x3'."""
    counts = Counter(op for op, _ in genotype.normal)
    return ", ".join(f"{counts[op]} {op}" for op in sorted(counts, key=lambda op: (-counts[op], PRIMITIVES.index(op))))


class CellRepresentation:
    """What the engine needs of the tracking cell; the breeding operators are those of :mod:`breeding`."""

    kind = "cell"

    def __init__(self, space: CellSpace | None = None, initial: Genotype = INITIAL,
                 references: tuple[Reference, ...] = ()):
        self.space = space or CellSpace()
        self._initial = initial
        self.references = {r.name: r for r in references}

    # ---- identity and text
    def parse(self, text: str) -> Genotype | Reference:
        if isinstance(text, str) and text.strip() in self.references:
            return self.references[text.strip()]
        return parse_genotype(text)

    def key(self, genotype: Genotype | Reference) -> str:
        """The text stored for the cell: its printed form (the canonical one is in ``describe``)."""
        if isinstance(genotype, Reference):
            return genotype.name
        return format_genotype(genotype)

    def fingerprint(self, genotype: Genotype | Reference) -> str:
        if isinstance(genotype, Reference):
            return f"reference:{genotype.name}"
        return fingerprint(genotype)

    def describe(self, genotype: Genotype | Reference) -> dict[str, str]:
        if isinstance(genotype, Reference):
            return {"genotype": genotype.name, "canonical": genotype.name, "fingerprint": self.fingerprint(genotype),
                    "summary": genotype.description, "params": "", "flops": ""}
        s = self.space
        return {
            "genotype": format_genotype(genotype),
            "canonical": format_genotype(canonical(genotype)),
            "fingerprint": fingerprint(genotype),
            "summary": summary(genotype),
            "params": str(count_parameters(genotype, s.channels)),
            "flops": str(count_flops(genotype, s.channels, s.height, s.width)),
        }

    # ---- start and gates
    def initial(self) -> Genotype:
        return self._initial

    def gates(self, options: Mapping[str, Any] | None = None) -> list:
        """The structure gate, then the budget gate (this representation's space, ``options`` overriding it)."""
        s = CellSpace.from_options(options, base=self.space)
        return [StructureGate(), BudgetGate(s.max_params, s.max_flops, s.channels, s.height, s.width)]

    # ---- breeding (a reference breeds as the initial cell)
    def _cell(self, genotype: Genotype | Reference) -> Genotype:
        return self._initial if isinstance(genotype, Reference) else genotype

    def random(self, rng: random.Random) -> Genotype:
        return breeding.random_genotype(rng)

    def mutate(self, genotype: Genotype | Reference, rng: random.Random) -> Genotype:
        return breeding.mutate(self._cell(genotype), rng)

    def crossover(self, a: Genotype | Reference, b: Genotype | Reference, rng: random.Random) -> tuple[Genotype, Genotype]:
        return breeding.crossover(self._cell(a), self._cell(b), rng)

    def initial_population(self, size: int, rng: random.Random) -> list[Genotype]:
        return breeding.initial_population(self._initial, size, rng)
