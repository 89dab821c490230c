"""The confirmation stage: before a search ends, its best candidates are retrained with fresh seeds, as a race.

The ``top`` best searched candidates of the hall of fame are chosen once (the choice is stored, so a
resumed confirmation races the same ones) and then, round after round, every candidate still in the
race gets one more seed of the ranking stage (all of a round's seeds run in parallel), up to
``seeds`` seeds per candidate (seed 0, the one that ranked it, included) and ``budget`` evaluations
in all. A candidate leaves the race once, on at least two fresh seeds, it is clearly below the
baseline (the mirrored one-sided test of :mod:`~autoloss.engine.evidence` passes) or clearly below
the current leader (the candidate with the highest fresh mean still in the race: Welch's one-sided
test of leader above it passes at level ``alpha`` divided by the number of rivals). Whatever is
still in the race goes on to the cap: a claim of "better" is tested once, at the end, on the fresh
seeds, so stopping early never makes a candidate look better than it is; its p is Holm-adjusted over
every candidate of the run tested with fresh seeds (:func:`~autoloss.engine.evidence.holm`).

Every seed is a stored verdict (:meth:`Study.evaluate_targets`), and the race's decisions are a pure
function of the stored seeds: a killed confirmation resumes with nothing lost, its seeds reused.
The state key ``confirmation:<label>`` holds the chosen candidates, the seeds each had at the start
(the budget counts what this confirmation added) and, once finished, its outcome.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from autoloss.engine import evidence
from autoloss.errors import UserError

OUT, RACING = "out", "racing"


@dataclass(frozen=True)
class ConfirmSettings:
    top: int = 3  # candidates confirmed (0: no confirmation)
    seeds: int = 5  # seeds per candidate at most, the one that ranked it included
    budget: int | None = None  # confirmation evaluations at most per confirmation (None: top x (seeds - 1))
    every_generation: bool = False  # also after each generation (generational scheduler)
    alpha: float = evidence.ALPHA
    min_seeds: int = evidence.MIN_SEEDS

    def validate(self) -> None:
        if not (isinstance(self.top, int) and 0 <= self.top <= 1000):
            raise UserError(f"--confirm-top must be an integer from 0 to 1000, got {self.top}")
        if self.top and not (isinstance(self.seeds, int) and self.min_seeds + 1 <= self.seeds <= 1000):
            raise UserError(f"--confirm-seeds must be at least {self.min_seeds + 1} (a claim needs {self.min_seeds} "
                            f"fresh seeds beside the one that ranked the candidate) and at most 1000, got {self.seeds}")
        if self.budget is not None and not (isinstance(self.budget, int) and 0 < self.budget <= 1_000_000):
            raise UserError(f"--confirm-budget must be a positive integer, got {self.budget}")

    @property
    def enabled(self) -> bool:
        return self.top > 0

    def cap(self, candidates: int) -> int:
        full = candidates * (self.seeds - 1)
        return full if self.budget is None else min(self.budget, full)


def race(study, ids: list[int], settings: ConfirmSettings) -> dict[int, tuple[str, str]]:
    """Each candidate's place in the race from its stored seeds: (``out`` or ``racing``, why)."""
    base = study.baseline_sample().values
    fresh = {cid: study.seed_fitnesses(cid, fresh=True) for cid in ids}
    status = {}
    for cid in ids:
        claim = evidence.compare(fresh[cid], base, settings.alpha, settings.min_seeds, fresh=True)
        if len(fresh[cid]) >= 2 and claim.verdict == evidence.WORSE:
            status[cid] = (OUT, f"below the baseline: {claim.text()}")
    racing = [cid for cid in ids if cid not in status and fresh[cid]]
    if racing:
        leader = max(racing, key=lambda cid: (evidence.Sample(tuple(fresh[cid])).mean, -ids.index(cid)))
        level = settings.alpha / max(len(racing) - 1, 1)
        for cid in racing:
            if cid == leader or len(fresh[cid]) < 2 or len(fresh[leader]) < 2:
                continue
            ahead = evidence.compare(fresh[leader], fresh[cid], level, 2)
            if ahead.verdict == evidence.BETTER:
                status[cid] = (OUT, f"below the leader (candidate {leader}): {ahead.difference:+.4f} ± "
                                    f"{ahead.se:.4f}, Welch one-sided p = {ahead.p:.3g} < {level:.3g}")
    for cid in ids:
        status.setdefault(cid, (RACING, "undecided"))
    return status


def confirm(study, label: str = "final") -> dict | None:
    """Run (or resume) the confirmation ``label``; its outcome (None when confirmation is off or nothing to confirm)."""
    settings: ConfirmSettings | None = study.confirmation
    if settings is None or not settings.enabled or study.baseline_sample().n == 0:
        return None
    key = f"confirmation:{label}"
    state = study.get_state(key)
    if state is None:
        ids = [e.candidate_id for e in study.hall_of_fame(settings.top, searched_only=True)]
        if not ids:
            return None
        state = {"label": label, "candidates": ids, "start": {str(cid): study.seeds_tried(cid) for cid in ids},
                 "settings": asdict(settings), "done": False}
        study.set_state(key, state)
    ids = [int(cid) for cid in state["candidates"]]
    start = {int(cid): int(n) for cid, n in state["start"].items()}
    if state.get("done") and state.get("outcome") is not None:
        return state["outcome"]
    budget = settings.cap(len(ids))

    def used() -> int:
        return sum(max(study.seeds_tried(cid) - start[cid], 0) for cid in ids)

    study.progress.note(f"confirmation ({label}): the best {len(ids)} candidate(s) retrained with fresh seeds, up to "
                        f"{settings.seeds} seeds each and {budget} evaluations; "
                        f"baseline {study.baseline_sample().text()}")
    while True:
        status = race(study, ids, settings)
        fresh_mean = {cid: study.sample(cid, fresh=True).mean for cid in ids}
        active = [cid for cid in ids if status[cid][0] == RACING and study.seeds_tried(cid) < settings.seeds]
        left = budget - used()
        if not active or left <= 0:
            break
        active.sort(key=lambda cid: (-(fresh_mean[cid] if fresh_mean[cid] is not None else float("inf")),
                                     ids.index(cid)))
        targets = {cid: study.seeds_tried(cid) + 1 for cid in active[:left]}
        if study.evaluate_targets(targets) == 0:
            break  # nothing could run (every remaining seed failed for good)
    outcome = summarise(study, ids, settings, label, used(), budget)
    study.set_state(key, {**state, "done": True, "outcome": outcome})
    for line in outcome_lines(outcome, study.problem.metric):
        study.progress.note(line)
    return outcome


def summarise(study, ids: list[int], settings: ConfirmSettings, label: str, used: int, budget: int) -> dict:
    status = race(study, ids, settings)
    base = study.baseline_sample()
    family = evidence.claims(study.store, study.ranking.name, settings.alpha, settings.min_seeds)
    rows = []
    for cid in ids:
        claim = family.get(study.owner(cid)) or evidence.compare((), base.values, settings.alpha, settings.min_seeds,
                                                                   fresh=True)
        sample = claim.candidate
        rows.append({"id": cid, "genotype": study.candidate(cid).genotype, "fresh": list(sample.values),
                     "mean": sample.mean, "sd": sample.sd, "race": status[cid][0], "why": status[cid][1],
                     "verdict": claim.verdict, "claim": claim.text(), "difference": claim.difference,
                     "se": claim.se, "lower": claim.lower, "p": claim.p, "p_adjusted": claim.p_adjusted,
                     "family": claim.family, "bound": claim.bound_text()})
    standing = [r for r in rows if r["race"] == RACING and r["mean"] is not None]
    winner = max(standing, key=lambda r: (r["mean"], -ids.index(r["id"])), default=None)
    return {"label": label, "candidates": rows, "winner": winner["id"] if winner else None,
            "confirmed": [r["id"] for r in rows if r["verdict"] == evidence.BETTER], "evaluations": used,
            "budget": budget, "baseline": {"values": list(base.values), "mean": base.mean, "sd": base.sd},
            "alpha": settings.alpha, "min_seeds": settings.min_seeds}


def outcome_lines(outcome: dict, metric: str) -> list[str]:
    """The confirmation's outcome for people: each candidate's fresh seeds and what they show."""
    lines = [f"confirmation ({outcome['label']}): {outcome['evaluations']} of at most {outcome['budget']} "
             f"evaluations with fresh seeds"]
    for row in outcome["candidates"]:
        mark = "winner, " if row["id"] == outcome["winner"] else ""
        left = ("" if row["race"] != OUT else "; left the race" if row["why"].startswith("below the baseline")
                else f"; left the race: {row['why']}")
        lines.append(f"  candidate {row['id']} ({mark}fresh seeds {evidence.Sample(tuple(row['fresh'])).text()}): "
                     f"{row['claim']}{left}")
    return lines
