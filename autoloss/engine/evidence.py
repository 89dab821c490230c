"""How sure a search is: seeds as stored verdicts, their mean and spread, and one stated test.

A proxy training is noisy: the same loss (or cell) trained with another seed scores differently, by
as much as the differences a search looks for. So a candidate's score is a sample, not a number:

* **Seeds are verdicts.** The ranking stage run with seed index ``k`` is stored as the verdict of
  gate :func:`seed_gate` (``"proxy"`` for ``k = 0``, the stage's own verdict, so stores written
  before seeds existed read unchanged; ``"proxy#k"`` for ``k > 0``), with the seed value
  :func:`seed_value` derived from the run's seed. Same store, same resume, same retries.
* **The test.** :func:`compare` is Welch's unequal-variance t-test, one-sided, at level
  :data:`ALPHA`: is the candidate's mean above the baseline's? When one side has a single value,
  its variance is taken to be the other side's (the same proxy's noise), with the other side's
  degrees of freedom. It gives the difference, its standard error, the one-sided lower bound, p
  and a verdict: ``better`` (at least :data:`MIN_SEEDS` seeds, mean above, p < alpha),
  ``worse`` (the mirrored test passes) or ``not distinguishable``.
* **Several candidates, one level.** A search tests several candidates against the same baseline; at
  level 0.05 each, one of three equal-to-baseline candidates would be called better in about 9% of
  searches. :func:`holm` adjusts a family's p-values (Holm's step-down, which keeps the chance of any
  false "better" in the family at most ``alpha``), and the lower bounds become simultaneous
  (Bonferroni: each at level ``alpha / family``). The family is every candidate tested with fresh seeds.
* **Fresh seeds.** A searched candidate's claim is judged on its seeds ``k >= 1`` only: seed 0 is
  the evaluation that ranked it among the best, so it is biased upwards (the winner's curse); the
  confirmation's fresh seeds are not. The baseline was never selected, so all its seeds count.

Nothing here knows a representation; readers pass a store or a :class:`~autoloss.engine.runs.RunRecord`
(anything with ``verdicts(gate=...)`` and ``verdict(id, gate)``).
"""

from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass, replace
from typing import Iterable

from autoloss.engine.numbers import finite_number

ALPHA = 0.05  # the stated level of every "better than the baseline" claim
MIN_SEEDS = 3  # no claim of "better" on fewer (fresh) seeds
TEST = "Welch one-sided"
BETTER, WORSE, UNDECIDED = "better", "worse", "not distinguishable"
SEP = "#"


def seed_gate(stage: str, k: int) -> str:
    """The verdict gate of seed index ``k`` of ``stage``: the stage itself for 0, ``stage#k`` after."""
    return stage if k == 0 else f"{stage}{SEP}{k}"


def seed_index(gate: str, stage: str) -> int | None:
    """The seed index of verdict gate ``gate`` of ``stage`` (None: another gate)."""
    if gate == stage:
        return 0
    head, sep, tail = gate.rpartition(SEP)
    if sep and head == stage and tail.isdigit() and tail[0] != "0":
        return int(tail)
    return None


def seed_value(run_seed: int, k: int) -> int:
    """The training seed of seed index ``k``: the run's seed for 0, a reproducible draw from it after."""
    if k == 0:
        return run_seed
    digest = hashlib.sha256(repr(("evidence-seed", run_seed, k)).encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1)


def fitness_of(verdict) -> float | None:
    """The finite fitness of an ok verdict (None otherwise)."""
    if verdict is None or verdict.status != "ok":
        return None
    return finite_number(verdict.metrics.get("fitness") if isinstance(verdict.metrics, dict) else None)


def seed_table(verdicts: Iterable, stage: str) -> dict[int, dict[int, object]]:
    """Every seed verdict of ``stage``: candidate id -> {seed index: verdict}."""
    table: dict[int, dict[int, object]] = {}
    for verdict in verdicts:
        k = seed_index(verdict.gate, stage)
        if k is not None:
            table.setdefault(verdict.candidate_id, {})[k] = verdict
    return table


def values(seeds: dict[int, object], fresh: bool = False) -> list[float]:
    """The finite fitnesses of a candidate's seed verdicts in seed order (``fresh``: seed 0 left out)."""
    found = [fitness_of(seeds[k]) for k in sorted(seeds) if not (fresh and k == 0)]
    return [v for v in found if v is not None]


@dataclass(frozen=True)
class Sample:
    """Scores of one candidate over seeds."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def text(self, digits: int = 4) -> str:
        """``0.0810 ± 0.0120 sd (3 seeds)``, ``0.0810 (1 seed)`` or ``-``."""
        if not self.values:
            return "-"
        sd = f" ± {self.sd:.{digits}f} sd" if self.sd is not None else ""
        return f"{self.mean:.{digits}f}{sd} ({self.n} seed{'s' if self.n != 1 else ''})"


@dataclass(frozen=True)
class Comparison:
    """A candidate's sample against the baseline's: Welch's one-sided t-test at level ``alpha``."""

    candidate: Sample
    baseline: Sample
    alpha: float = ALPHA
    min_seeds: int = MIN_SEEDS
    fresh: bool = False  # the candidate's sample left out the seed that ranked it
    family: int = 1  # candidates tested together (see holm); 1: this test alone
    p_adjusted: float | None = None  # Holm's adjusted p within the family (None: family of 1)

    @property
    def difference(self) -> float | None:
        if not self.candidate.n or not self.baseline.n:
            return None
        return self.candidate.mean - self.baseline.mean

    def _variances(self) -> tuple[float, float, float] | None:
        """(variance of the candidate's mean, of the baseline's mean, degrees of freedom); None: no test."""
        a, b = self.candidate, self.baseline
        if a.n < 1 or b.n < 1 or (a.n < 2 and b.n < 2):
            return None
        var_a = a.sd ** 2 if a.n > 1 else b.sd ** 2  # one value: the other side's noise
        var_b = b.sd ** 2 if b.n > 1 else a.sd ** 2
        va, vb = var_a / a.n, var_b / b.n
        if a.n < 2:
            return va, vb, float(b.n - 1)
        if b.n < 2:
            return va, vb, float(a.n - 1)
        denominator = (va ** 2 / (a.n - 1) if va else 0.0) + (vb ** 2 / (b.n - 1) if vb else 0.0)
        df = (va + vb) ** 2 / denominator if denominator > 0 else float(a.n + b.n - 2)
        return va, vb, df

    @property
    def se(self) -> float | None:
        """The standard error of the difference."""
        found = self._variances()
        return None if found is None else math.sqrt(found[0] + found[1])

    @property
    def df(self) -> float | None:
        found = self._variances()
        return None if found is None else found[2]

    def _t(self):
        from scipy.stats import t  # scipy comes with scikit-learn

        return t

    @property
    def p(self) -> float | None:
        """One-sided p of "the candidate's mean is above the baseline's"."""
        return self._p(better=True)

    @property
    def p_worse(self) -> float | None:
        """One-sided p of "the candidate's mean is below the baseline's"."""
        return self._p(better=False)

    def _p(self, better: bool) -> float | None:
        se, diff = self.se, self.difference
        if se is None or diff is None:
            return None
        if se == 0:
            return 0.0 if (diff > 0 if better else diff < 0) else (0.5 if diff == 0 else 1.0)
        score = diff / se if better else -diff / se
        return float(self._t().sf(score, self.df))

    @property
    def bound_level(self) -> float:
        """The one-sided level of :attr:`lower` and :attr:`upper`: alpha, divided among the family."""
        return self.alpha / max(self.family, 1)

    @property
    def lower(self) -> float | None:
        """The one-sided lower confidence bound of the difference (level 1 - alpha / family: simultaneous)."""
        se, diff = self.se, self.difference
        if se is None or diff is None:
            return None
        return diff - (float(self._t().ppf(1 - self.bound_level, self.df)) * se if se else 0.0)

    @property
    def upper(self) -> float | None:
        """The one-sided upper confidence bound of the difference (level 1 - alpha / family)."""
        se, diff = self.se, self.difference
        if se is None or diff is None:
            return None
        return diff + (float(self._t().ppf(1 - self.bound_level, self.df)) * se if se else 0.0)

    @property
    def p_claim(self) -> float | None:
        """The p that decides "better": Holm's adjusted p in a family, the test's own p alone."""
        return self.p_adjusted if self.family > 1 and self.p_adjusted is not None else self.p

    def bound_text(self, digits: int = 4) -> str:
        """``one-sided 95% lower bound of the difference +0.0123`` (``simultaneous over 3`` in a family)."""
        lower = self.lower
        if lower is None:
            return "no lower bound (no spread measured)"
        joint = f" (simultaneous over {self.family}: each at level {self.bound_level:.3g})" if self.family > 1 else ""
        return f"one-sided {100 * (1 - self.alpha):.0f}% lower bound of the difference {lower:+.{digits}f}{joint}"

    @property
    def verdict(self) -> str:
        p, p_worse, diff = self.p_claim, self.p_worse, self.difference
        if p is not None and diff > 0 and p < self.alpha and self.candidate.n >= self.min_seeds:
            return BETTER
        if p_worse is not None and diff < 0 and p_worse < self.alpha:
            return WORSE
        return UNDECIDED

    @property
    def better(self) -> bool:
        return self.verdict == BETTER

    def seeds_text(self) -> str:
        n = self.candidate.n
        return f"{n} {'fresh ' if self.fresh else ''}seed{'s' if n != 1 else ''}"

    def text(self, digits: int = 4) -> str:
        """The claim in words, always with its uncertainty (± one standard error of the difference)."""
        diff, se = self.difference, self.se
        if diff is None:
            return f"not distinguishable from the baseline: {self.seeds_text()} and {self.baseline.n} of the baseline"
        if se is None:
            return (f"not distinguishable from the baseline with {self.seeds_text()} (difference {diff:+.{digits}f}, "
                    "no spread measured: a single run on each side)")
        number = f"{diff:+.{digits}f} ± {se:.{digits}f}"
        verdict = self.verdict
        if verdict == BETTER:
            return (f"better than the baseline: {number} over {self.seeds_text()} "
                    f"({TEST} p = {self.p:.3g}{self._holm_text()} < {self.alpha:g})")
        if verdict == WORSE:
            return (f"worse than the baseline: {number} over {self.seeds_text()} "
                    f"({TEST} p = {self.p_worse:.3g} < {self.alpha:g})")
        short = (f"; fewer than {self.min_seeds} seeds, so no claim" if self.p_claim is not None
                 and self.p_claim < self.alpha and diff > 0 else "")
        return (f"not distinguishable from the baseline with {self.seeds_text()} (difference {number}, "
                f"{TEST} p = {self.p:.2g}{self._holm_text(2)}{short})")

    def _holm_text(self, digits: int = 3) -> str:
        if self.family <= 1 or self.p_adjusted is None:
            return ""
        return f", Holm-adjusted over {self.family} candidates {self.p_adjusted:.{digits}g}"


def compare(candidate: Iterable[float], baseline: Iterable[float], alpha: float = ALPHA,
            min_seeds: int = MIN_SEEDS, fresh: bool = False) -> Comparison:
    return Comparison(Sample(tuple(candidate)), Sample(tuple(baseline)), alpha, min_seeds, fresh)


def standing(score: float, seeds: int) -> tuple[int, float]:
    """Sort key of a run's best candidates as shown to people: those retrained on several seeds first, by
    their mean; then the one-seed ones by their score. One seed is the lucky draw that ranked a candidate
    among the best, so it is biased upwards; a retrained candidate's mean has fallen back from its own
    lucky draw, and ranking the two together would put untested luck above tested candidates."""
    return (0 if seeds > 1 else 1, -score)


def holm(comparisons: dict) -> dict:
    """The family ``comparisons`` (key -> :class:`Comparison`) with Holm's adjusted p-values.

    Members with a p (a test could be made) form the family; each gets ``family`` = their number and
    ``p_adjusted`` = Holm's step-down value (sorted p's, the i-th times (m - i), made monotone, at most
    1), so "better" at level alpha keeps the family-wise error at most alpha. Others pass unchanged."""
    tested = sorted((c.p, key) for key, c in comparisons.items() if c.p is not None)
    m = len(tested)
    adjusted, running = {}, 0.0
    for i, (p, key) in enumerate(tested):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[key] = running
    return {key: (replace(c, family=m, p_adjusted=adjusted[key]) if key in adjusted else c)
            for key, c in comparisons.items()}


def method_text(alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> str:
    """The rule in one sentence, for summaries and reports."""
    return (f"'better than the baseline' means: at least {min_seeds} fresh seeds (the seed that ranked a candidate "
            f"is left out), mean above the baseline's, and Welch's one-sided t-test at level {alpha:g}, its p "
            "Holm-adjusted over every candidate tested (so the chance of any false 'better' in a search is at most "
            f"{alpha:g}); ± is one standard error of the difference")


# ---------------------------------------------------------------------------------------------- from a store


def baseline_id(store) -> int | None:
    rows = store.candidates(-1)
    return rows[0].id if rows else None


def owner_id(store, candidate_id: int) -> int:
    """The candidate whose seeds count for ``candidate_id``: itself, or the owner it duplicates."""
    verdict = store.verdict(candidate_id, "equivalence")
    owner = verdict.metrics.get("duplicate_of") if verdict is not None and isinstance(verdict.metrics, dict) else None
    return owner if isinstance(owner, int) and not isinstance(owner, bool) and owner != candidate_id else candidate_id


def claims(store, stage: str, alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> dict[int, Comparison]:
    """Every searched candidate's fresh seeds against the baseline's seeds (candidate id -> comparison),
    Holm-adjusted over those tested (the family: every candidate with fresh seeds)."""
    table = seed_table(store.verdicts(), stage)
    base_id = baseline_id(store)
    base = values(table.get(base_id, {})) if base_id is not None else []
    return holm({cid: compare(values(seeds, fresh=True), base, alpha, min_seeds, fresh=True)
                 for cid, seeds in table.items() if cid != base_id})


def baseline_sample(store, stage: str) -> Sample:
    base_id = baseline_id(store)
    if base_id is None:
        return Sample(())
    return Sample(tuple(values(seed_table(store.verdicts(gate=None), stage).get(base_id, {}))))
