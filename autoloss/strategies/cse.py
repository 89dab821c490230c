"""CSE-Autoloss (the paper's Algorithm 1): every cheap gate, the model optimisation simulation, the proxy.

A generation's survivors of the cheap gates run the MOS (at most ``max_mos`` of them); those that
score at least the threshold minus ``mos_margin`` pass, and the top K of them go on to the proxy.
The threshold (``mos_threshold``):

- ``"reference"`` (the default): the reference's all along;
- ``"previous-best"`` (the paper's rule): the MOS score of the previous generation's best loss; in
  the first generation the reference's. It raises the bar to the MOS score of the best loss so far,
  which that loss's cousins rarely reach again: after one good loss almost nothing passes, and on the
  Table 5 benchmark CSE then never reaches vanilla evolution's quality (docs/benchmarks.md).

The reference is the baseline's MOS score, or with ``mos_reference="initial"`` the MOS score of the
individual that breeding starts from. ``mos_quantile`` (q) also asks a candidate to score at least
the q-quantile of its generation's MOS scores (generational mode only).

``distinct`` (on by default): where the task reports what its trained model predicts
(:data:`~autoloss.engine.study.BEHAVIOUR`), a MOS survivor that behaves as a candidate already sent
to the proxy in an earlier generation (the baseline included) is not sent again (generational mode),
and the parents are the P best of distinct proxy behaviour (both modes). Without it a search that found a good loss fills its K places with the loss's
near-clones (variants that train the same model, such as multiples of the loss by W where the task feeds
W = 1) and breeds only from them.

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
from autoloss.engine.study import BEHAVIOUR
from autoloss.errors import UserError
from autoloss.strategies.base import positive_seconds
from autoloss.strategies.evolution import EvolutionOptions, EvolutionStrategy

MOS = "mos"
MOS_REFERENCES = ("baseline", "initial")
MOS_THRESHOLDS = ("previous-best", "reference")


@dataclass
class CseOptions(EvolutionOptions):
    parents: int = 10  # P: more than the paper's 5, as CSE trains few and its best are often one family's
    top_k: int = 10  # K: MOS survivors that go on to the proxy
    mos_margin: float = 0.0  # pass MOS at >= threshold - margin
    max_mos: int | None = None  # at most this many MOS runs per generation (None: every survivor)
    mos_timeout: float | None = None  # seconds per MOS evaluation (None: the problem's default)
    mos_reference: str = "baseline"  # the first generation's MOS threshold: the baseline's or the initial one's
    mos_threshold: str = "reference"  # later generations' threshold: the reference's, or the previous best's MOS
    mos_quantile: float | None = None  # also pass only MOS scores >= this quantile of the generation's
    distinct: bool = True  # send no near-clone of a proxy-evaluated candidate; parents of distinct behaviour
    LEGACY: ClassVar[dict] = {"mos_reference": "baseline", "mos_threshold": "previous-best",
                              "mos_quantile": None, "distinct": False}  # added later: runs stored before behaved so

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
        if self.mos_threshold not in MOS_THRESHOLDS:
            raise UserError(f"--mos-threshold must be one of {', '.join(MOS_THRESHOLDS)}, got {self.mos_threshold!r}")
        q = self.mos_quantile
        if q is not None and not (isinstance(q, (int, float)) and not isinstance(q, bool) and 0 <= q < 1):
            raise UserError(f"--mos-quantile must be a number in [0, 1), got {q}")
        if not isinstance(self.distinct, bool):
            raise UserError(f"distinct must be true or false, got {self.distinct!r}")


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
        if self.options.mos_threshold == "reference":
            return value
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
        q = self.options.mos_quantile
        scores = [f for _, f in scored if f is not None]
        if q is not None and scores:
            bar = max(bar, quantile(scores, q))
        k = self.options.top_k
        passing = sorted(((f, row) for row, f in scored if f is not None and f >= bar),
                         key=lambda s: (-s[0], s[1].index))
        sent = self._sent_behaviours(study, generation) if self.options.distinct else {}
        chosen, reasons = set(), {}
        for f, row in passing:
            behaviour = study.behaviour(row.id, MOS) if self.options.distinct else None
            if behaviour is not None and behaviour in sent:
                reasons[row.id] = (f"score {f:.4f} passed the threshold, but it trains as candidate {sent[behaviour]} "
                                   f"(the same MOS {BEHAVIOUR}), already sent on")
            elif len(chosen) < k:
                chosen.add(row.id)
                reasons[row.id] = f"score {f:.4f} >= threshold {bar:.4f}, in the top {k}"
                if behaviour is not None:
                    sent[behaviour] = row.id
            else:
                reasons[row.id] = f"score {f:.4f} passed the threshold but not in the top {k}"
        for row, f in scored:
            if f is not None and f < bar:
                reasons[row.id] = f"score {f:.4f} below the threshold {bar:.4f} ({self._source(generation)})"
        return chosen, reasons  # a failed evaluation has no reason here: it is already recorded as such

    def _sent_behaviours(self, study, generation: int) -> dict[str, int]:
        """MOS behaviour -> the first candidate with it that went on to the proxy before ``generation`` (the
        baseline included). Only earlier generations count, so a generation resumed after some of its own
        proxy runs chooses as it did uninterrupted."""
        sent = {}
        for verdict in study.store.verdicts(gate=study.ranking.name):
            if study.candidate(verdict.candidate_id).generation >= generation:
                continue
            behaviour = study.behaviour(verdict.candidate_id, MOS)
            if behaviour is not None:
                sent.setdefault(behaviour, verdict.candidate_id)
        return sent

    def parents(self, study, generation: int | None) -> list[str]:
        """The P best so far; with ``distinct``, of distinct proxy behaviour (the best of each)."""
        if not self.options.distinct:
            return super().parents(study, generation)
        chosen, seen = [], set()
        for entry in study.hall_of_fame(1_000_000, before_generation=generation):
            behaviour = study.behaviour(entry.candidate_id, study.ranking.name)
            if behaviour is not None and behaviour in seen:
                continue
            seen.add(behaviour)
            chosen.append(entry.genotype)
            if len(chosen) == self.options.parents:
                break
        return chosen

    def _source(self, generation: int) -> str:
        first = "the initial individual's" if self.options.mos_reference == "initial" else "the baseline's"
        source = (f"{first} MOS" if generation == 0 or self.options.mos_threshold == "reference"
                  else f"the best earlier candidate's MOS, else {first}")
        q = self.options.mos_quantile
        return source if q is None else f"{source}, or the generation's {q:g}-quantile if higher"

    def bar(self, study, stage: Stage) -> float | None:
        if stage.name != MOS:
            return None
        threshold = self.threshold(study, None)
        return None if threshold is None else threshold - self.options.mos_margin

    def generation_info(self, study, generation: int) -> dict:
        return {"mos_threshold": self.threshold(study, generation)}


def quantile(values: list[float], q: float) -> float:
    """The ``q``-quantile of ``values`` (linear interpolation between order statistics)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
