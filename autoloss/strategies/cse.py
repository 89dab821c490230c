"""CSE-Autoloss (the paper's Algorithm 1): every cheap gate, the model optimisation simulation, the proxy.

A generation's survivors of the cheap gates run the MOS (at most ``max_mos`` of them); those that
score at least the threshold (the MOS score of the previous generation's best loss; in the first
generation the baseline's, or with ``mos_reference="initial"`` the MOS score of the individual that
breeding starts from), minus ``mos_margin``, pass, and the top K of them go on to the proxy.

For losses the baseline is the initial loss, so both references agree. A tracker's baseline is its
hand-designed neck while breeding starts from a published cell: a plain conv stack trains faster in
the MOS's few steps than any cell, so against it no first-generation cell would pass; the children
are compared with the cell they come from instead, as CSE compares them with the initial loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from autoloss.engine.protocols import Gate, Stage
from autoloss.errors import UserError
from autoloss.strategies.base import positive_seconds
from autoloss.strategies.evolution import EvolutionOptions, EvolutionStrategy

MOS = "mos"
MOS_REFERENCES = ("baseline", "initial")


@dataclass
class CseOptions(EvolutionOptions):
    top_k: int = 10  # K: MOS survivors that go on to the proxy
    mos_margin: float = 0.0  # pass MOS at >= threshold - margin
    max_mos: int | None = None  # at most this many MOS runs per generation (None: every survivor)
    mos_timeout: float | None = None  # seconds per MOS evaluation (None: the problem's default)
    mos_reference: str = "baseline"  # the first generation's MOS threshold: the baseline's or the initial one's
    LEGACY: ClassVar[dict] = {"mos_reference": "baseline"}  # added later: runs stored before behaved so

    def validate(self) -> None:
        super().validate()
        if not (isinstance(self.top_k, int) and 0 < self.top_k <= self.population):
            raise UserError(f"--top-k must be a positive integer no larger than --population ({self.population}), "
                            f"got {self.top_k}")
        if not (isinstance(self.mos_margin, (int, float)) and math.isfinite(self.mos_margin) and self.mos_margin >= 0):
            raise UserError(f"--mos-margin must be a finite number >= 0, got {self.mos_margin}")
        if self.max_mos is not None and not (isinstance(self.max_mos, int) and 0 < self.max_mos <= self.population):
            raise UserError(f"--max-mos must be a positive integer no larger than --population ({self.population}), "
                            f"got {self.max_mos}")
        positive_seconds("mos_timeout", self.mos_timeout)
        if self.mos_reference not in MOS_REFERENCES:
            raise UserError(f"--mos-reference must be one of {', '.join(MOS_REFERENCES)}, got {self.mos_reference!r}")


class CseStrategy(EvolutionStrategy):
    name = "cse"
    Options = CseOptions

    def cheap_gates(self, gates: list[Gate]) -> list[Gate]:
        return list(gates)

    def stages(self, timeouts: dict[str, float]) -> list[Stage]:
        mos = Stage(MOS, self.options.mos_timeout or timeouts.get(MOS, 600.0))
        return [mos] + super().stages(timeouts)

    def prepare(self, study) -> None:
        if self.options.mos_reference == "initial":
            study.reference(next(stage for stage in study.stages if stage.name == MOS))

    def threshold(self, study, generation: int | None) -> float | None:
        """The MOS score of the best candidate before ``generation`` (None: so far); first, the reference's."""
        if self.options.mos_reference == "initial":
            value = study.reference_fitness(MOS)
        else:
            baseline = study.baseline_row()
            value = study.fitness(baseline.id, MOS) if baseline is not None else None
        if generation is None:
            best = study.hall_of_fame(1, searched_only=True)
            mos = best[0].scores.get(MOS) if best else None
            return mos if mos is not None else value
        for earlier in range(generation):
            summary = study.generation_summary(earlier) or {}
            best = summary.get("best")
            rows = [r for r in study.candidates(earlier) if r.genotype == best] if best else []
            mos = study.fitness(rows[0].id, MOS) if rows else None
            if mos is not None:
                value = mos
        return value

    def _bar(self, threshold: float | None) -> float:
        return -math.inf if threshold is None else threshold - self.options.mos_margin

    def admit(self, study, stage: Stage, rows: list, generation: int) -> tuple[list, str]:
        cap = self.options.max_mos
        if stage.name != MOS:
            return super().admit(study, stage, rows, generation)
        if not cap or len(rows) <= cap:
            return list(rows), ""
        return list(rows[:cap]), f"{len(rows) - cap} more not run: at most {cap} MOS per generation"

    def advance(self, study, stage: Stage, scored: list, generation: int) -> tuple[set[int], dict[int, str]]:
        bar = self._bar(self.threshold(study, generation))
        k = self.options.top_k
        passing = sorted(((f, row) for row, f in scored if f is not None and f >= bar),
                         key=lambda s: (-s[0], s[1].index))
        chosen = {row.id for _, row in passing[:k]}
        reasons = {}
        for row, f in scored:
            if f is None:
                continue  # the evaluation itself failed: already recorded as such
            if row.id in chosen:
                reasons[row.id] = f"score {f:.4f} >= threshold {bar:.4f}, in the top {k}"
            elif f < bar:
                reasons[row.id] = f"score {f:.4f} below the threshold {bar:.4f} ({self._source(generation)})"
            else:
                reasons[row.id] = f"score {f:.4f} passed the threshold but not in the top {k}"
        return chosen, reasons

    def _source(self, generation: int) -> str:
        first = "the initial individual's" if self.options.mos_reference == "initial" else "the baseline's"
        return f"{first} MOS" if generation == 0 else f"the best earlier candidate's MOS, else {first}"

    def bar(self, study, stage: Stage) -> float | None:
        if stage.name != MOS:
            return None
        threshold = self.threshold(study, None)
        return None if threshold is None else threshold - self.options.mos_margin

    def generation_info(self, study, generation: int) -> dict:
        return {"mos_threshold": self.threshold(study, generation)}
