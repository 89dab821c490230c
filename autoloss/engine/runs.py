"""The one reader of a run directory, for report, export and evaluate: a checked, read-only snapshot.

:func:`open_run` refuses, with one line naming the file and what is wrong, anything that is not a
readable run: a missing or non-directory path, no ``run.sqlite``, a file that is not SQLite or is
damaged, a store of an unknown schema, a config that is not a JSON object, tampered rows. It never
writes to the store and never runs anything named in it. The returned :class:`RunRecord` holds the
whole run in memory, with the representation kind and the metric stored with it, and answers the
questions the report and the exporter ask (the same ones the live store answers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from autoloss.engine.store import BASELINE_GENERATION, CandidateRow, RunStore, StoreError, VerdictRow, check_metrics
from autoloss.errors import NothingBetter, UserError

STORE_NAME = "run.sqlite"
LEGACY_KINDS = {"loss-tree": "loss"}  # stores written before the representation kind was stored
RANKING_STAGE = "proxy"
LEGACY_PIPELINE = ("validity", "equivalence", "convergence", "mos", "proxy")


def legacy_metric(config: dict) -> str:
    if config.get("detector"):
        return "mAP"
    if config.get("task_name"):
        return "accuracy"
    return "fitness"


def store_path(run_dir) -> Path:
    """``RUN_DIR/run.sqlite`` (or the store file itself), checked to exist."""
    path = Path(run_dir).expanduser()
    hint = "pass the --out directory of an `autoloss search` run"
    try:
        path.exists()
    except OSError as exc:  # a name over 255 bytes, ...
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.is_file() and path.suffix == ".sqlite":
        return path
    if not path.exists():
        raise UserError(f"{path} does not exist: {hint}")
    if not path.is_dir():
        raise UserError(f"{path} is not a directory: {hint}")
    if not (path / STORE_NAME).is_file():
        raise UserError(f"{path} holds no {STORE_NAME}: {hint}")
    return path / STORE_NAME


@dataclass
class RunRecord:
    """A run, read once: config, kind, metric, candidates, verdicts and generation summaries."""

    run_dir: Path
    path: Path
    config: dict
    kind: str
    metric: str
    rows: dict[int, CandidateRow]
    all_verdicts: list[VerdictRow]
    summaries: dict[int, dict]
    _by_key: dict[tuple[int, str], VerdictRow] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._by_key = {(v.candidate_id, v.gate): v for v in self.all_verdicts}

    # the RunStore questions, answered from memory
    def load_config(self) -> dict:
        return self.config

    def candidates(self, generation: int | None = None) -> list[CandidateRow]:
        rows = sorted(self.rows.values(), key=lambda c: (c.generation, c.index))
        return [c for c in rows if generation is None or c.generation == generation]

    def candidate(self, candidate_id: int) -> CandidateRow:
        return self.rows[candidate_id]

    def verdict(self, candidate_id: int, gate: str) -> VerdictRow | None:
        return self._by_key.get((candidate_id, gate))

    def verdicts(self, generation: int | None = None, gate: str | None = None) -> list[VerdictRow]:
        return [v for v in self.all_verdicts
                if (gate is None or v.gate == gate)
                and (generation is None or self.rows[v.candidate_id].generation == generation)]

    def finished_generations(self) -> list[int]:
        return sorted(self.summaries)

    def generation_summary(self, generation: int) -> dict | None:
        return self.summaries.get(generation)

    def funnel(self, generation: int) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for verdict in self.verdicts(generation):
            count = counts.setdefault(verdict.gate, {"in": 0, "passed": 0, "failed": 0})
            count["in"] += 1
            count["passed" if verdict.passed else "failed"] += 1
        return counts

    def best(self, gate: str = RANKING_STAGE, n: int = 10, metric: str = "fitness") -> list[tuple[CandidateRow, VerdictRow]]:
        """The top ``n`` distinct genotypes by fitness among ok verdicts of ``gate`` (ties: lower id)."""
        scored = []
        for verdict in self.verdicts(gate=gate):
            value = verdict.metrics.get(metric)
            if verdict.status == "ok" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                scored.append((-value, verdict.candidate_id, verdict))
        scored.sort(key=lambda s: (s[0], s[1]))
        top, seen = [], set()
        for _, cid, verdict in scored:
            row = self.rows[cid]
            if row.genotype not in seen and len(top) < n:
                seen.add(row.genotype)
                top.append((row, verdict))
        return top

    # what readers ask beyond the store
    @property
    def pipeline(self) -> list[str]:
        """Every gate and stage of the run in order (the screening steps, then the expensive stages)."""
        stored = self.config.get("pipeline")
        if isinstance(stored, list) and all(isinstance(g, str) for g in stored):
            return stored
        used = {v.gate for v in self.all_verdicts}
        return [g for g in LEGACY_PIPELINE if g in used] + sorted(used - set(LEGACY_PIPELINE))

    @property
    def stages(self) -> list[str]:
        stored = self.config.get("stages")
        if isinstance(stored, list) and all(isinstance(g, str) for g in stored):
            return stored
        return [g for g in ("mos", "proxy") if g in self.pipeline] or ["proxy"]

    @property
    def ranking(self) -> str:
        """The stage whose fitness ranks candidates (the proxy)."""
        stored = self.config.get("ranking")
        return stored if isinstance(stored, str) else RANKING_STAGE

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name

    def baseline(self) -> CandidateRow | None:
        rows = self.candidates(BASELINE_GENERATION)
        return rows[0] if rows else None

    def claims(self) -> dict:
        """Each searched candidate with seeds: its fresh seeds against the baseline's (evidence.Comparison)."""
        from autoloss.engine import evidence

        return evidence.claims(self, self.ranking)

    def standing(self, n: int | None = None) -> list[tuple[CandidateRow, VerdictRow, object]]:
        """The best distinct genotypes on the ranking stage as shown to people, ``(row, seed-0 verdict, sample
        over its seeds)``: retrained candidates first by their mean, then one-seed ones by their score
        (:func:`~autoloss.engine.evidence.standing`, the order of the search's own summary); the baseline too."""
        from autoloss.engine import evidence

        seeds = evidence.seed_table(self.all_verdicts, self.ranking)
        ranked = []
        for row, verdict in self.best(self.ranking, 1_000_000):
            sample = evidence.Sample(tuple(evidence.values(seeds.get(row.id, {}))))
            score = sample.mean if sample.n > 1 else float(verdict.metrics["fitness"])
            ranked.append((evidence.standing(score, sample.n), row, verdict, sample))
        ranked.sort(key=lambda item: item[0])  # stable: ties keep best()'s order (the lower id)
        return [(row, verdict, sample) for _, row, verdict, sample in ranked[:n]]

    def baseline_sample(self):
        """The baseline's ranking scores over its seeds (evidence.Sample): the proxy's noise."""
        from autoloss.engine import evidence

        return evidence.baseline_sample(self, self.ranking)

    def fitness(self, candidate_id: int, gate: str = RANKING_STAGE) -> float | None:
        verdict = self.verdict(candidate_id, gate)
        value = verdict.metrics.get("fitness") if verdict is not None and verdict.status == "ok" else None
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def open_run(run_dir) -> RunRecord:
    """Read the run in ``run_dir`` (or a ``run.sqlite`` path); one clear UserError if it cannot be read."""
    db = store_path(run_dir)
    try:
        with RunStore(db, readonly=True) as store:
            config = store.load_config()
            if config is None:
                raise StoreError(f"{db} holds no search yet (no run config stored)")
            rows = {c.id: c for c in store.candidates()}
            verdicts = store.verdicts()
            summaries = store.generations_summaries()
    except StoreError as exc:
        raise StoreError(str(exc) if str(db) in str(exc) else f"{db}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (sqlite3 errors on pages damaged past the integrity check)
        raise StoreError(f"{db}: cannot read the run store ({type(exc).__name__}: {exc})") from None
    if any(v.candidate_id not in rows for v in verdicts):
        raise StoreError(f"{db}: a verdict refers to a candidate that is not in the store (damaged or tampered)")
    try:  # every row's columns were checked as read; the metrics readers take as numbers are checked here
        for verdict in verdicts:
            check_metrics(verdict.metrics, f"the verdict of candidate {verdict.candidate_id} at {verdict.gate[:40]!r}")
    except StoreError as exc:
        raise StoreError(f"{db}: {exc}") from None
    kind = config.get("representation") or LEGACY_KINDS.get(config.get("genotype"), config.get("genotype"))
    if not isinstance(kind, str) or not kind:
        raise StoreError(f"{db}: the run config names no representation kind")
    metric = config.get("metric") if isinstance(config.get("metric"), str) else legacy_metric(config)
    return RunRecord(db.parent, db, config, kind, metric, rows, verdicts, summaries)


def beating_baseline(ranked: list, score, base: float | None, include_worse: bool, nouns: tuple[str, str],
                     where, measure: str, claim=None, include_unconfirmed: bool = False) -> tuple[list, list[str]]:
    """The export rule for a run's best candidates (``ranked``, best first; ``score(item)`` its fitness).

    With ``claim(item)`` (an :class:`~autoloss.engine.evidence.Comparison`, or None): only those
    confirmed better than the baseline (evidence's rule: at least 3 fresh seeds, mean above, Welch's
    one-sided test at its level) are kept; ``include_unconfirmed`` keeps, besides them, those whose
    score is above the baseline's ``base``. Without ``claim`` (or with ``include_unconfirmed``), the
    old rule: above ``base``. ``include_worse`` keeps everything. With none kept,
    :class:`~autoloss.errors.NothingBetter`. Returns the kept items and a note on those left out.
    ``nouns`` names a candidate and several (("loss", "losses")), ``measure`` the score ("proxy mAP")."""
    if base is None or include_worse:
        return list(ranked), []
    if claim is not None and not include_unconfirmed:
        confirmed = [item for item in ranked if (found := claim(item)) is not None and found.better]
        if not confirmed:
            best = claim(ranked[0])
            said = best.text() if best is not None and best.candidate.n else "never retrained with fresh seeds"
            raise NothingBetter(f"no {nouns[0]} of the run in {where} was confirmed better than the baseline (the best "
                                f"by {measure}: {said}): nothing exported; pass --include-unconfirmed to export those "
                                f"above the baseline's mean anyway (marked unconfirmed)")
        if len(confirmed) < len(ranked):
            return confirmed, [f"{len(ranked) - len(confirmed)} of the {len(ranked)} best {nouns[1]} were not confirmed "
                               "better than the baseline and are not exported (--include-unconfirmed exports those "
                               "above its mean, marked unconfirmed)"]
        return confirmed, []
    better = [item for item in ranked if score(item) > base]
    if not better:
        raise NothingBetter(f"no {nouns[0]} of the run in {where} beat the baseline (best {measure} "
                            f"{score(ranked[0]):.4f} against the baseline's {base:.4f}): nothing exported; pass "
                            "--include-worse to export the best ones anyway")
    if len(better) < len(ranked):
        return better, [f"{len(ranked) - len(better)} of the {len(ranked)} best {nouns[1]} did not beat the baseline "
                        "and are not exported (--include-worse exports them)"]
    return better, []
