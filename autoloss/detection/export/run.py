"""Reading a search run for export: its settings, and its best losses by proxy score.

A run directory holds ``run.sqlite`` (:class:`autoloss.engine.store.RunStore`): the run's config
(``space``, ``task`` with ``branch``, and ``detector`` for a detector search) and every verdict.
The losses worth exporting are the best by the proxy stage's fitness (bbox mAP for a detector),
without the baseline (the initial loss, generation -1), which is exported only when no other loss
finished its proxy evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autoloss.engine.runs import RunRecord, open_run
from autoloss.engine.store import BASELINE_GENERATION, CandidateRow, VerdictRow
from autoloss.errors import UserError
from autoloss.loss.expression import Node, parse
from autoloss.loss.space import SearchSpace, load_space

PROXY, MOS = "proxy", "mos"


@dataclass(frozen=True)
class Scored:
    """One proxy-evaluated loss of a run, with its verdicts."""

    candidate: CandidateRow
    proxy: VerdictRow
    mos: VerdictRow | None
    node: Node

    @property
    def fitness(self) -> float:
        return float(self.proxy.metrics["fitness"])


@dataclass(frozen=True)
class RunLosses:
    """What an export needs to know about a run."""

    run_dir: Path
    config: dict
    space: SearchSpace
    detector: str | None  # a bundled detector name or a config path; None for a --task run
    best: list[Scored]  # best proxy first; the baseline only when nothing else was evaluated
    baseline: Scored | None
    notes: list[str]

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name

    @property
    def only_baseline(self) -> bool:
        return bool(self.best) and self.best[0].candidate.generation == BASELINE_GENERATION

    metric: str = "fitness"  # what the proxy fitness measures (stored with the run)
    claims: dict = field(default_factory=dict)  # candidate id -> evidence.Comparison (fresh seeds vs the baseline)


def read_run(run_dir, top: int = 1) -> RunLosses:
    """The ``top`` best proxy-evaluated losses of the run in ``run_dir``, and its settings."""
    if top < 1:
        raise UserError(f"--top must be a positive integer, got {top}")
    record = open_run(run_dir)
    if record.kind != "loss":
        raise UserError(f"{record.path}: a run of {record.kind}s, not of losses: nothing for the loss exporter")
    return _read(record, record.path, top)


def _read(store: RunRecord, db: Path, top: int) -> RunLosses:
    config = store.load_config()
    task = config.get("task") if isinstance(config.get("task"), dict) else {}
    space_name = config.get("space") or task.get("space")
    if not space_name:
        raise UserError(f"{db}: the run config names no search space")
    space = load_space(space_name)
    detector = config.get("detector") or task.get("detector")

    def scored(candidate: CandidateRow, verdict: VerdictRow) -> Scored:
        try:
            node = parse(candidate.genotype, space)
        except UserError as exc:
            raise UserError(f"{db}: candidate {candidate.id} is not a loss of space {space.name} ({exc})") from None
        return Scored(candidate, verdict, store.verdict(candidate.id, MOS), node)

    ranked = [(c, v) for c, v, _ in store.standing(top + 1)]  # the summary's order: retrained losses first
    best = [scored(c, v) for c, v in ranked if c.generation != BASELINE_GENERATION][:top]
    baseline = next((scored(c, v) for c, v in ranked if c.generation == BASELINE_GENERATION), None)
    if baseline is None:
        baseline = _baseline(store, scored)
    notes = []
    if not best:
        if baseline is None:
            candidates = len(store.candidates())
            raise UserError(f"no loss of the run in {db.parent} has finished its proxy evaluation "
                            f"({candidates} candidates so far): nothing to export")
        best = [baseline]
        notes.append("only the baseline (the initial loss) finished its proxy evaluation: exporting it")
    elif len(best) < top:
        notes.append(f"only {len(best)} losses besides the baseline finished their proxy evaluation "
                     f"(asked for {top})")
    return RunLosses(db.parent, config, space, detector, best, baseline, notes, store.metric, store.claims())


def _baseline(store: RunRecord, scored) -> Scored | None:
    for candidate in store.candidates(BASELINE_GENERATION):
        verdict = store.verdict(candidate.id, PROXY)
        fitness = verdict.metrics.get("fitness") if verdict else None
        if verdict is not None and verdict.status == "ok" and isinstance(fitness, (int, float)):
            return scored(candidate, verdict)
    return None
