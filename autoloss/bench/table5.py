"""Time to quality, the paper's Table 5 bookkeeping: what a search spent until its best reached a target.

Read from a run's store alone (:class:`~autoloss.engine.store.RunStore`):

- :func:`proxy_events`: the searched candidates' ranking-stage (proxy) evaluations in the order they
  finished. Duplicates are never counted: a candidate the duplicate check rejected, a verdict that
  took no time (a result reused from another candidate) and a candidate whose fingerprint was
  already evaluated (the baseline's included) are left out.
- :func:`time_to_quality`: proxy evaluations, MOS evaluations, compute and wall-clock (every gate
  included: from the first searched candidate's timestamp to the verdict that reached the target)
  until the best fitness reaches ``target``; a run that never gets there counts its whole budget,
  marked as a lower bound (:attr:`Reach.lower_bound`). Compute is in proxy evaluations: a MOS run
  counts ``mos_cost`` of one (its steps over the proxy's).
- :func:`best_curve`: the step-shaped best-so-far curve against evaluations, compute and seconds.
- :func:`spearman`: the rank correlation (average ranks for ties), for gate quality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from autoloss.engine.duplicates import GATE as DUPLICATE_GATE
from autoloss.engine.store import BASELINE_GENERATION, RunStore

PROXY, MOS = "proxy", "mos"


@dataclass(frozen=True)
class Event:
    """One stored stage evaluation of a searched candidate."""

    candidate_id: int
    genotype: str
    fitness: float | None  # None: the evaluation failed (diverged, timed out)
    finished: float  # the verdict's timestamp (seconds since the epoch)
    seconds: float  # the evaluation's own duration


@dataclass(frozen=True)
class Reach:
    """What a run spent until its best reached the target (its whole budget when it never did)."""

    reached: bool
    proxy_evaluations: int
    mos_evaluations: int
    seconds: float
    best: float | None  # the best fitness at that point (at the end when never reached)
    genotype: str | None  # the loss that reached the target (the best at the end when never reached)
    compute: float = 0.0  # proxy evaluations + mos_cost x MOS evaluations

    @property
    def reached_text(self) -> str:
        return "yes" if self.reached else "not reached"

    @property
    def lower_bound(self) -> bool:
        return not self.reached

    def shown(self, field: str, digits: int = 0) -> str:
        """A figure of this reach as text, with '>' when it is a lower bound."""
        value = getattr(self, field)
        return (">" if self.lower_bound else "") + (f"{value:.{digits}f}" if digits else f"{value}")


def _fitness(metrics: dict) -> float | None:
    value = metrics.get("fitness")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _duplicates(store: RunStore) -> set[int]:
    return {v.candidate_id for v in store.verdicts(gate=DUPLICATE_GATE) if not v.passed}


def stage_events(store: RunStore, stage: str) -> list[Event]:
    """The searched candidates' evaluations of ``stage`` in finishing order, duplicates left out."""
    duplicates = _duplicates(store)
    rows = {row.id: row for row in store.candidates()}
    seen = {row.fingerprint for row in rows.values() if row.generation == BASELINE_GENERATION and row.fingerprint}
    events = []
    for verdict in sorted(store.verdicts(gate=stage), key=lambda v: (v.created, v.candidate_id)):
        row = rows[verdict.candidate_id]
        if row.generation == BASELINE_GENERATION or row.id in duplicates or verdict.seconds <= 0:
            continue
        if row.fingerprint:
            if row.fingerprint in seen:
                continue
            seen.add(row.fingerprint)
        fitness = _fitness(verdict.metrics) if verdict.status == "ok" else None
        events.append(Event(row.id, row.genotype, fitness, verdict.created, verdict.seconds))
    return events


def proxy_events(store: RunStore, stage: str = PROXY) -> list[Event]:
    """The proxy evaluations that count (see :func:`stage_events`)."""
    return stage_events(store, stage)


def search_start(store: RunStore) -> float:
    """When the search proper began: the first searched candidate's timestamp (after the baseline)."""
    times = [row.created for row in store.candidates() if row.generation != BASELINE_GENERATION]
    if not times:
        raise ValueError(f"{store.path}: no searched candidates")
    return min(times)


def search_end(store: RunStore) -> float:
    """The last thing the search recorded (a verdict or a candidate)."""
    searched = {row.id for row in store.candidates() if row.generation != BASELINE_GENERATION}
    times = [v.created for v in store.verdicts() if v.candidate_id in searched]
    times += [row.created for row in store.candidates() if row.id in searched]
    return max(times)


def time_to_quality(store: RunStore, target: float, stage: str = PROXY, mos: str = MOS,
                    cap: int | None = None, mos_cost: float = 0.0) -> Reach:
    """What the run in ``store`` spent until its best ``stage`` fitness reached ``target``.

    ``cap``: the budget in proxy evaluations; evaluations past it (a strategy that checks its cap
    only between generations overshoots) count for nothing, and a run that did not reach the target
    within it is charged exactly the cap. ``mos_cost``: what one MOS run costs in proxy evaluations.
    """
    start = search_start(store)
    proxies = proxy_events(store, stage)
    moses = stage_events(store, mos)
    if cap is not None and len(proxies) > cap:
        proxies, end = proxies[:cap], proxies[cap - 1].finished
    else:
        end = search_end(store)
    best, best_genotype = None, None
    for count, event in enumerate(proxies, 1):
        if event.fitness is not None and (best is None or event.fitness > best):
            best, best_genotype = event.fitness, event.genotype
        if best is not None and best >= target:
            spent_mos = sum(1 for m in moses if m.finished <= event.finished)
            return Reach(True, count, spent_mos, event.finished - start, best, best_genotype,
                         count + mos_cost * spent_mos)
    spent_mos = sum(1 for m in moses if m.finished <= end)
    return Reach(False, len(proxies), spent_mos, end - start, best, best_genotype,
                 len(proxies) + mos_cost * spent_mos)


def best_curve(store: RunStore, stage: str = PROXY, mos: str = MOS,
               mos_cost: float = 0.0) -> list[tuple[int, float, float, float]]:
    """(proxy evaluations, seconds since the search began, best fitness so far, compute) after each
    evaluation with a finite fitness so far; plot it step-shaped (``where="post"``). Compute as in
    :func:`time_to_quality`."""
    start = search_start(store)
    moses = [m.finished for m in stage_events(store, mos)]
    curve, best = [], None
    for count, event in enumerate(proxy_events(store, stage), 1):
        if event.fitness is not None and (best is None or event.fitness > best):
            best = event.fitness
        if best is not None:
            spent_mos = sum(1 for finished in moses if finished <= event.finished)
            curve.append((count, event.finished - start, best, count + mos_cost * spent_mos))
    return curve


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of their positions."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of paired samples; NaN with fewer than 2 pairs or a constant side."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} values against {len(y)}")
    if len(x) < 2:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)
