"""Signal, not noise (issue 22): seeds as stored verdicts, the stated test, the confirmation race, the claims.

In-process and small: the noisy toy (:mod:`noisy_toy`) runs its searches with an inline executor."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy import stats

import noisy_toy
from autoloss.engine import evidence
from autoloss.engine.confirmation import ConfirmSettings, confirm, race
from autoloss.engine.protocols import Proposal, Verdict
from autoloss.engine.runs import beating_baseline, open_run
from autoloss.engine.store import RunStore
from autoloss.engine.study import Study
from autoloss.errors import NothingBetter, UserError

SEARCHED = ("100000000000", "110000000000", "111000000000")


def test_welch_matches_scipy_and_says_its_numbers_with_their_uncertainty():
    a, b = [0.12, 0.13, 0.125, 0.128], [0.081, 0.07, 0.09]
    found = evidence.compare(a, b)
    reference = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert found.p == pytest.approx(reference.pvalue, rel=1e-9)
    assert found.difference == pytest.approx(sum(a) / 4 - sum(b) / 3)
    assert found.verdict == evidence.BETTER and found.lower > 0
    assert found.text().startswith("better than the baseline: +0.0454 ± 0.0062 over 4 seeds") and "Welch one-sided p = " in found.text()
    noisy = evidence.compare([0.12, 0.04], [0.083, 0.059])  # the numbers: two seeds each
    assert noisy.verdict == evidence.UNDECIDED
    assert noisy.text().startswith("not distinguishable from the baseline with 2 seeds (difference +0.0090 ± ")
    # fewer than 3 seeds never make a claim, however small p is
    assert evidence.compare([0.5, 0.51], [0.1, 0.11, 0.1]).verdict == evidence.UNDECIDED
    assert evidence.compare([0.01, 0.02, 0.0], [0.5, 0.51, 0.5]).verdict == evidence.WORSE
    single = evidence.compare([0.3, 0.31, 0.29], [0.1])  # one baseline seed: its sd taken as the candidate's
    assert single.df == 2 and single.se == pytest.approx(0.01 * math.sqrt(1 / 3 + 1))


def test_the_noisy_toy_confirms_the_truly_best_and_rarely_calls_an_equal_candidate_better():
    """Over 100 seeded searches (noise sd 0.08 against steps of 0.1 between candidates): the confirmed
    winner is truly best of those evaluated at least 95% of the time, more often than the single-shot
    winner; a candidate as good as the baseline is called better in at most 5% of the cases, and a search
    whose candidates all equal the baseline claims any of them better in at most 5% of the searches (Holm)."""
    found = noisy_toy.rates(100, sd=0.08)
    assert found["confirmed_right"] >= 0.95
    assert found["confirmed_right"] > found["single_shot_right"]
    assert found["null_called_better"] <= 0.05
    assert found["null_runs_with_a_claim"] <= 0.05


def test_holm_adjusts_a_family_and_keeps_the_family_wise_rate():
    family = evidence.holm({"a": evidence.compare([0.3, 0.31, 0.32], [0.1, 0.12, 0.11]),
                            "b": evidence.compare([0.13, 0.16, 0.12], [0.1, 0.12, 0.11]),
                            "c": evidence.compare([0.11, 0.1, 0.12], [0.1, 0.12, 0.11]),
                            "untested": evidence.compare([], [0.1, 0.12, 0.11])})
    raw = sorted((family[k].p, k) for k in "abc")
    expected, running = {}, 0.0
    for i, (p, k) in enumerate(raw):  # Holm by hand: the i-th smallest times (3 - i), made monotone
        running = max(running, min(1.0, (3 - i) * p))
        expected[k] = running
    for k in "abc":
        assert family[k].family == 3 and family[k].p_adjusted == pytest.approx(expected[k])
        assert family[k].p_adjusted >= family[k].p
    assert family["untested"].family == 1 and family["untested"].p_adjusted is None
    # the bound is simultaneous: at level alpha / 3, so lower than the test's own
    alone = evidence.compare([0.3, 0.31, 0.32], [0.1, 0.12, 0.11])
    assert family["a"].lower < alone.lower and "simultaneous over 3" in family["a"].bound_text()
    assert "Holm-adjusted over 3 candidates" in family["a"].text()
    # a claim that passes alone (p = 0.043) but not within a family of 3 (second smallest: p x 2 = 0.087)
    weak = evidence.compare([0.13, 0.16, 0.11, 0.15], [0.1, 0.12, 0.11])
    strong = evidence.compare([0.5, 0.51, 0.52], [0.1, 0.12, 0.11])
    three = evidence.holm({"weak": weak, "strong": strong, "null": evidence.compare([0.1, 0.13, 0.09], [0.1, 0.12, 0.11])})
    assert weak.p < 0.05 and weak.better
    assert three["weak"].p_adjusted == pytest.approx(2 * weak.p) and not three["weak"].better
    assert three["strong"].better


def test_holm_family_of_equal_candidates_claims_at_most_alpha_of_the_time():
    """Three candidates as good as the baseline, 4 fresh seeds each, 3 baseline seeds: over 4000 seeded
    draws the family-wise rate of any false "better" is at most 5% with Holm, above it without."""
    import random

    rng = random.Random(7)
    any_raw = any_holm = 0
    for _ in range(4000):
        base = [rng.gauss(0, 1) for _ in range(3)]
        family = {k: evidence.compare([rng.gauss(0, 1) for _ in range(4)], base) for k in range(3)}
        any_raw += any(c.better for c in family.values())
        any_holm += any(c.better for c in evidence.holm(family).values())
    assert any_holm / 4000 <= 0.05 < any_raw / 4000


def _study(tmp_path, table=None, sd=0.01, confirmation=ConfirmSettings(), kill_after=None, store=None):
    problem = noisy_toy.problem(evaluate=noisy_toy.tabled)
    problem.task.update({"table": table or {}, "sd": sd})
    noisy_toy.KILL_AFTER[:] = [kill_after] if kill_after is not None else []
    strategy = noisy_toy.Plain(noisy_toy.EvolutionOptions(population=3, generations=1, parents=2))
    store = store or RunStore(Path(tmp_path) / "run.sqlite")
    return Study(problem, strategy, store, noisy_toy.InlineExecutor(), seed=5, baseline_seeds=3,
                 confirmation=confirmation)


def _searched(study, genotypes=SEARCHED):
    rows = [study.add_candidate(0, i, Proposal(g, (), "hand")) for i, g in enumerate(genotypes)]
    study.screen(rows, quiet=True)
    study.evaluate(rows, study.ranking)
    return rows


def test_a_candidates_seeds_are_stored_verdicts_and_the_ranking_uses_their_mean(tmp_path):
    noisy_toy.CALLS.clear()
    study = _study(tmp_path, {"100000000000": 0.5, "110000000000": 0.4})
    study.baseline()
    lucky, steady = _searched(study, SEARCHED[:2])
    # hand-made seed verdicts: the first is lucky once, then poor; the second steady
    for k, value in ((1, 0.1), (2, 0.1)):
        study.record(lucky, Verdict(evidence.seed_gate("proxy", k), True, "", {"fitness": value}))
    assert study.seed_fitnesses(lucky.id)[1:] == [0.1, 0.1]
    assert study.mean_fitness(lucky.id) == pytest.approx(sum(study.seed_fitnesses(lucky.id)) / 3)
    best = study.hall_of_fame(2, searched_only=True)
    assert [e.candidate_id for e in best] == [steady.id, lucky.id]  # the mean, not the lucky seed, ranks
    assert best[1].seeds == 3 and best[1].sd is not None
    baseline = study.baseline_sample()
    assert baseline.n == 3 and baseline.sd > 0  # the noise is measured
    assert {v.gate for v in study.verdicts(gate=None) if v.candidate_id == study.baseline_row().id} >= {
        "proxy", "proxy#1", "proxy#2"}
    seeds = [seed for genotype, seed in noisy_toy.CALLS if genotype == "000000000000"]
    assert seeds[-3:] == [5, evidence.seed_value(5, 1), evidence.seed_value(5, 2)]  # the run's seed, then derived ones
    assert len(set(seeds[-3:])) == 3


def test_what_people_see_ranks_retrained_candidates_before_one_seed_ones(tmp_path):
    """A one-seed score is the lucky draw that ranked it: shown after the candidates whose mean over fresh
    seeds was measured, in the search's summary and the report alike (the strategy's ranking is the mean's)."""
    from autoloss.report.run import read_run

    study = _study(tmp_path, {"100000000000": 0.5, "110000000000": 0.4})
    study.baseline()
    retrained, untested = _searched(study, SEARCHED[:2])
    for k in (1, 2, 3):
        study.record(retrained, Verdict(evidence.seed_gate("proxy", k), True, "", {"fitness": 0.2}))
    untested_score = study.fitness(untested.id, "proxy")
    assert study.mean_fitness(retrained.id) < untested_score  # the mean fell back below the one-seed score
    plain = study.hall_of_fame(2, searched_only=True)
    shown = study.hall_of_fame(2, searched_only=True, retrained_first=True)
    assert [e.candidate_id for e in plain] == [untested.id, retrained.id]
    assert [e.candidate_id for e in shown] == [retrained.id, untested.id]
    study.store.close()
    record = open_run(tmp_path)
    run = read_run(record)
    assert [c.id for c, _, _ in run.top][:2] == [retrained.id, untested.id]
    standing = [(row.id, sample.n) for row, _, sample in record.standing() if row.generation >= 0]
    assert standing[:2] == [(retrained.id, 4), (untested.id, 1)]  # the exports' and evaluate's order too


def test_the_race_stops_a_candidate_clearly_below_the_baseline_and_keeps_the_others(tmp_path):
    table = {"100000000000": 0.3, "110000000000": -0.3, "111000000000": 0.3}
    study = _study(tmp_path, table, confirmation=ConfirmSettings(top=3, seeds=5))
    study.baseline()
    good, bad, twin = _searched(study)
    outcome = confirm(study)
    rows = {r["id"]: r for r in outcome["candidates"]}
    assert rows[bad.id]["race"] == "out" and "below the baseline" in rows[bad.id]["why"]
    assert len(study.seed_fitnesses(bad.id)) == 3  # stopped after 2 fresh seeds
    assert len(study.seed_fitnesses(good.id)) == len(study.seed_fitnesses(twin.id)) == 5
    assert set(outcome["confirmed"]) == {good.id, twin.id} and outcome["evaluations"] == 10
    assert rows[good.id]["claim"].startswith("better than the baseline: +0.3")
    # a candidate clearly below the leader stops as well
    status = race(study, [good.id, twin.id], ConfirmSettings())
    assert status[good.id][0] == status[twin.id][0] == "racing"


def test_the_budget_caps_the_confirmation(tmp_path):
    study = _study(tmp_path, {g: 0.3 for g in SEARCHED}, confirmation=ConfirmSettings(top=3, seeds=5, budget=4))
    study.baseline()
    _searched(study)
    outcome = confirm(study)
    assert outcome["evaluations"] == 4 and outcome["confirmed"] == []  # one or two fresh seeds: no claim
    assert all(r["verdict"] == evidence.UNDECIDED for r in outcome["candidates"])


def test_a_killed_confirmation_resumes_with_nothing_lost(tmp_path):
    table = {"100000000000": 0.3, "110000000000": 0.1, "111000000000": 0.2}
    whole = _study(tmp_path / "whole", table)
    whole.baseline()
    _searched(whole)
    expected = confirm(whole)
    noisy_toy.CALLS.clear()
    study = _study(tmp_path / "killed", table, kill_after=9)  # 3 baseline + 3 ranking + 3 confirmation seeds
    study.baseline()
    _searched(study)
    with pytest.raises(noisy_toy.Killed):
        confirm(study)
    ran = list(noisy_toy.CALLS[:-1])
    study.store.close()
    noisy_toy.CALLS.clear()
    resumed = _study(tmp_path / "killed", table, store=RunStore(tmp_path / "killed" / "run.sqlite"))
    resumed.baseline()
    _searched(resumed)
    outcome = confirm(resumed)
    assert not set(noisy_toy.CALLS) & set(ran)  # no stored seed ran again
    assert outcome == expected
    calls = len(noisy_toy.CALLS)
    assert confirm(resumed) == outcome and len(noisy_toy.CALLS) == calls  # finished: its outcome is stored


def test_a_duplicate_gets_no_seeds_its_owners_count(tmp_path):
    study = _study(tmp_path, {"100000000000": 0.3})
    study.baseline()
    owner, = _searched(study, SEARCHED[:1])
    duplicate = study.add_candidate(0, 5, Proposal("100000000001", (), "hand"))  # the same first 10 bits
    study.screen([duplicate], quiet=True)
    assert not study.verdict(duplicate.id, "equivalence").passed
    study.evaluate_seeds([owner], n=3)
    calls = len(noisy_toy.CALLS)
    assert study.seed_fitnesses(duplicate.id) == study.seed_fitnesses(owner.id) and len(study.seed_fitnesses(owner.id)) == 3
    study.evaluate_seeds([duplicate], n=3)
    assert len(noisy_toy.CALLS) == calls  # nothing ran: the owner has its seeds
    assert all(v.gate == "equivalence" for v in study.verdicts() if v.candidate_id == duplicate.id)
    study.evaluate_seeds([duplicate], n=4)
    assert len(study.seed_fitnesses(owner.id)) == 4  # a duplicate's seed is its owner's


def test_a_store_without_seed_verdicts_reads_unchanged(tmp_path):
    result, store = noisy_toy.search(tmp_path, 1, confirmation=None, baseline_seeds=1)
    assert not any("#" in v.gate for v in store.verdicts())
    singles = {v.candidate_id: v.metrics["fitness"] for v in store.verdicts(gate="proxy")}
    assert all(e.fitness == singles[e.candidate_id] and e.seeds == 1 for e in result.best)
    store.close()
    record = open_run(tmp_path)
    assert record.baseline_sample().n == 1
    claims = record.claims()
    assert all(c.candidate.n == 0 and c.verdict == evidence.UNDECIDED for c in claims.values())


def test_the_export_rule_needs_a_confirmed_claim(tmp_path):
    result, store = noisy_toy.search(tmp_path, 3, sd=0.05)
    store.close()
    record = open_run(tmp_path)
    claims = record.claims()
    ranked = [(row, v) for row, v in record.best(record.ranking, 5) if row.generation >= 0]
    base = record.baseline_sample().mean
    claim = lambda item: claims.get(item[0].id)  # noqa: E731
    kept, _ = beating_baseline(ranked, lambda item: item[1].metrics["fitness"], base, False, ("x", "xs"), tmp_path,
                               "ones", claim=claim)
    assert kept and all(claims[row.id].better for row, _ in kept)
    unconfirmed = [item for item in ranked if not claims.get(item[0].id) or not claims[item[0].id].better]
    with pytest.raises(NothingBetter, match="--include-unconfirmed"):
        beating_baseline(unconfirmed, lambda item: item[1].metrics["fitness"], base, False, ("x", "xs"), tmp_path,
                         "ones", claim=claim)
    kept, _ = beating_baseline(unconfirmed, lambda item: item[1].metrics["fitness"], base, False, ("x", "xs"),
                               tmp_path, "ones", claim=claim, include_unconfirmed=True)
    assert kept


def test_confirm_settings_are_checked():
    with pytest.raises(UserError, match="--confirm-seeds must be at least 4"):
        ConfirmSettings(top=3, seeds=3).validate()
    ConfirmSettings(top=0, seeds=1).validate()  # off: nothing to check


# ------------------------------------------------------------------------------------------ the command line


@pytest.mark.parametrize("extra, words", [
    (["--confirm-seeds", "3"], ["--confirm-seeds must be at least 4", "3 fresh seeds"]),
    (["--confirm-seeds", "x"], ["--confirm-seeds needs an integer"]),
    (["--confirm-top", "-1"], ["--confirm-top must be between 0 and 1000"]),
    (["--confirm-budget", "0"], ["--confirm-budget must be between 1 and"]),
    (["--baseline-seeds", "0"], ["--baseline-seeds must be between 1 and 1000"]),
    (["--confirm-every-generation", "--mode", "steady-state"], ["--confirm-every-generation", "generational"]),
    (["--tracker", "dimp_small", "--demo", "--strategy", "darts", "--confirm-every-generation"],
     ["--confirm-every-generation", "generational"]),
])
def test_bad_evidence_options_are_one_clean_error_and_write_nothing(tmp_path, extra, words):
    from cli_helpers import assert_clean_error, run_cli

    args = ["search", "--out", tmp_path / "run", *extra]
    result = run_cli(*(args if "--tracker" in extra else args + ["--task", "noisy-digits"]))
    assert_clean_error(result, *words)
    assert not (tmp_path / "run").exists()


def test_the_demo_confirmation_settings_and_the_explicit_ones():
    import argparse

    from autoloss.commands.search import DEMO_CONFIRM, evidence_options

    def parsed(**given):
        base = {"demo": False, "task": "noisy-digits", "mode": "generational", "strategy": "cse",
                "baseline_seeds": None, "confirm_top": None, "confirm_seeds": None, "confirm_budget": None,
                "confirm_every_generation": False}
        return evidence_options(argparse.Namespace(**{**base, **given}))

    seeds, settings = parsed(demo=True, task=None)
    assert seeds == 3 and (settings.top, settings.seeds, settings.budget) == (
        DEMO_CONFIRM["confirm_top"], DEMO_CONFIRM["confirm_seeds"], DEMO_CONFIRM["confirm_budget"])
    seeds, settings = parsed(demo=True, task=None, confirm_top=0, confirm_seeds=6, baseline_seeds=5)
    assert seeds == 5 and settings.top == 0 and not settings.enabled and settings.seeds == 6
    seeds, settings = parsed(confirm_every_generation=True)
    assert settings.every_generation and (settings.top, settings.seeds, settings.budget) == (3, 5, None)


# ------------------------------------------------------------------------------------------ the schedulers


def test_a_steady_state_search_ends_with_a_confirmation(tmp_path):
    result, store = noisy_toy.search(tmp_path, 3, sd=0.05, population=6, generations=2, mode="steady-state",
                                     confirmation=ConfirmSettings(top=2, seeds=4))
    try:
        outcome = result.confirmation
        assert outcome is not None and outcome["label"] == "final"
        assert store.get_state("confirmation:final")["done"]
        assert len(outcome["candidates"]) == 2 and outcome["evaluations"] > 0
        table = evidence.seed_table(store.verdicts(), "proxy")
        for row in outcome["candidates"]:  # each confirmed candidate's fresh seeds are stored verdicts
            assert len(row["fresh"]) == len(table[row["id"]]) - 1 >= 1
        base = store.candidates(-1)[0].id
        assert sorted(table[base]) == [0, 1, 2]  # the baseline on 3 seeds: the proxy's noise
    finally:
        store.close()


def test_confirming_every_generation_breeds_the_next_from_the_means(tmp_path):
    """Seed 2 of the noisy toy (sd 0.15): the two best of generation 1 by their one seed differ from the two
    best by their mean once confirmed; generation 2 is bred from the latter."""
    result, store = noisy_toy.search(tmp_path, 2, sd=0.15, population=6, generations=2, baseline_seeds=3,
                                     confirmation=ConfirmSettings(top=3, seeds=4, every_generation=True))
    try:
        states = store.states()
        assert states["confirmation:generation 1"]["done"] and states["confirmation:generation 2"]["done"]
        table = evidence.seed_table(store.verdicts(), "proxy")
        pool = [c for c in store.candidates(0) + store.candidates(-1) if c.id in table]
        single = {c.genotype for c in sorted(pool, key=lambda c: -evidence.values(table[c.id])[0])[:2]}
        mean = {c.genotype for c in sorted(pool, key=lambda c: -evidence.Sample(
            tuple(evidence.values(table[c.id]))).mean)[:2]}
        assert single != mean  # the confirmation changed who the best are
        parents = {p for c in store.candidates(1) for p in c.parents}
        assert parents and parents <= mean and not parents <= single
    finally:
        store.close()
