"""Tests for autoloss.bench.table5: the time-to-quality bookkeeping of the Table 5 benchmark."""

import math
import random
import sys
from pathlib import Path

import pytest

from autoloss.bench import table5
from autoloss.bench.table5 import best_curve, proxy_events, ranks, spearman, stage_events, time_to_quality
from autoloss.engine import store as store_module
from autoloss.engine.store import RunStore


class Clock:
    """A settable stand-in for the store's ``time`` module."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def hand_made(tmp_path, monkeypatch):
    """A store written by hand, with known timestamps: baseline, clones, a duplicate, a failure."""
    clock = Clock(1000.0)
    monkeypatch.setattr(store_module, "time", clock)
    store = RunStore(tmp_path / "run.sqlite")

    def candidate(generation, index, genotype, fingerprint, at):
        clock.now = at
        cid = store.add_candidate(generation, index, genotype)
        store.set_fingerprint(cid, fingerprint)
        return cid

    def verdict(cid, gate, passed, fitness=None, at=0.0, status="ok", seconds=1.0):
        clock.now = at
        store.add_verdict(cid, gate, passed, "", {"fitness": fitness}, status, seconds)

    base = candidate(-1, 0, "CE", "f-ce", 1000.0)
    verdict(base, "proxy", True, 0.75, at=1005.0)
    a = candidate(0, 0, "A", "f-a", 1010.0)  # the search starts here
    dup = candidate(0, 1, "A2", "f-a", 1010.0)
    clone = candidate(0, 2, "CE2", "f-ce", 1010.0)  # trains like the baseline
    bad = candidate(0, 3, "BAD", "f-bad", 1010.0)
    b = candidate(0, 4, "B", "f-b", 1010.0)
    reused = candidate(0, 5, "C", "f-c", 1010.0)
    late = candidate(1, 0, "D", "f-d", 1030.0)
    verdict(a, "equivalence", True, at=1010.5)
    verdict(dup, "equivalence", False, at=1010.5)
    verdict(dup, "proxy", True, 0.99, at=1011.0)  # a duplicate's result is never counted
    verdict(clone, "equivalence", True, at=1010.5)
    verdict(clone, "proxy", True, 0.99, at=1012.0)  # nor a clone of the baseline's function
    for cid, mos in ((a, 0.7), (bad, 0.2), (b, 0.9)):
        verdict(cid, "mos", True, mos, at=1011.0, seconds=0.1)
    verdict(a, "proxy", True, 0.80, at=1014.0)
    verdict(bad, "proxy", False, None, at=1016.0, status="diverged")
    verdict(reused, "proxy", True, 0.99, at=1017.0, seconds=0.0)  # taken from another candidate, not run
    verdict(b, "proxy", True, 0.96, at=1020.0)
    verdict(late, "mos", True, 0.5, at=1031.0, seconds=0.1)
    verdict(late, "proxy", True, 0.90, at=1040.0)
    yield store
    store.close()


def test_proxy_events_count_each_function_once(hand_made):
    events = proxy_events(hand_made)
    assert [e.genotype for e in events] == ["A", "BAD", "B", "D"]  # in finishing order
    assert [e.fitness for e in events] == [0.80, None, 0.96, 0.90]
    assert [e.genotype for e in stage_events(hand_made, "mos")] == ["A", "BAD", "B", "D"]


def test_time_to_quality_when_reached(hand_made):
    reach = time_to_quality(hand_made, 0.95)
    assert reach.reached and not reach.lower_bound
    assert reach.proxy_evaluations == 3  # A, the diverged one, B: a failed evaluation still costs one
    assert reach.mos_evaluations == 3  # D's MOS came after
    assert reach.seconds == pytest.approx(1020.0 - 1010.0)  # from the first searched candidate
    assert (reach.best, reach.genotype) == (0.96, "B")
    assert reach.shown("proxy_evaluations") == "3"
    first = time_to_quality(hand_made, 0.8)
    assert (first.proxy_evaluations, first.mos_evaluations, first.genotype) == (1, 3, "A")


def test_time_to_quality_lower_bound_when_never_reached(hand_made):
    reach = time_to_quality(hand_made, 0.97)  # only duplicates, a clone and a reused result got there
    assert not reach.reached and reach.lower_bound
    assert reach.proxy_evaluations == 4 and reach.mos_evaluations == 4
    assert reach.seconds == pytest.approx(1040.0 - 1010.0)  # the whole run
    assert reach.best == 0.96
    assert reach.shown("proxy_evaluations") == ">4" and reach.shown("seconds", 1) == ">30.0"


def test_evaluations_past_the_cap_count_for_nothing(hand_made):
    capped = time_to_quality(hand_made, 0.95, cap=2)  # B, the hit, was the third evaluation
    assert not capped.reached and capped.proxy_evaluations == 2 and capped.mos_evaluations == 3
    assert capped.seconds == pytest.approx(1016.0 - 1010.0) and capped.best == 0.80
    assert time_to_quality(hand_made, 0.95, cap=3).reached
    assert time_to_quality(hand_made, 0.97, cap=10).proxy_evaluations == 4


def test_best_curve_is_the_running_best(hand_made):
    assert best_curve(hand_made) == [(1, 4.0, 0.80, 1), (2, 6.0, 0.80, 2), (3, 10.0, 0.96, 3), (4, 30.0, 0.96, 4)]
    compute = [point[3] for point in best_curve(hand_made, mos_cost=0.1)]  # 3 MOS runs before A, D's after B
    assert compute == pytest.approx([1.3, 2.3, 3.3, 4.4])


def test_compute_counts_mos_runs_at_their_cost(hand_made):
    reach = time_to_quality(hand_made, 0.95, mos_cost=0.08)
    assert reach.compute == pytest.approx(3 + 3 * 0.08)
    missed = time_to_quality(hand_made, 0.97, mos_cost=0.5)
    assert missed.compute == pytest.approx(4 + 4 * 0.5) and missed.reached_text == "not reached"
    assert time_to_quality(hand_made, 0.95).compute == 3  # no cost given: proxy evaluations alone


def test_store_without_searched_candidates(tmp_path):
    with RunStore(tmp_path / "empty.sqlite") as store:
        store.add_candidate(-1, 0, "CE")
        with pytest.raises(ValueError, match="no searched candidates"):
            time_to_quality(store, 0.5)


def test_ranks_share_ties():
    assert ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]


def test_spearman_on_known_data():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = (0, 0, -1, 1, 0): 1 - 6 * 2 / (5 * 24) = 0.9
    assert spearman([1, 2, 3, 4, 5], [1, 2, 4, 3, 5]) == pytest.approx(0.9)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1], [2]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    for _ in range(20):
        n = rng.randint(3, 40)
        x = [rng.choice([0.1, 0.2, 0.3, rng.random()]) for _ in range(n)]
        y = [a + rng.gauss(0, 0.2) if rng.random() < 0.7 else rng.choice([0.0, 1.0]) for a in x]
        expected = stats.spearmanr(x, y).correlation
        got = table5.spearman(x, y)
        assert (math.isnan(expected) and math.isnan(got)) or got == pytest.approx(expected, abs=1e-12)


def _benchmark_script():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import benchmark_search

    return benchmark_search


def _reach(reached, evaluations, seconds=10.0, compute=None):
    return table5.Reach(reached, evaluations, 0, seconds, 0.9, "L", evaluations if compute is None else compute)


def test_a_missed_target_is_said_not_reached_and_gives_no_ratio():
    script = _benchmark_script()
    by = {"vanilla": [_reach(True, 120), _reach(True, 60), _reach(True, 140)],
          "cse": [_reach(True, 10), _reach(False, 30), _reach(True, 30)]}
    line = script.comparison_line("vanilla", by, "proxy_evaluations", "fewer proxy evaluations", "vanilla_evals")
    assert "**not reached** in 1 of 3 CSE runs" in line and "x fewer" not in line and "not met" in line
    by["cse"][1] = _reach(True, 24)
    line = script.comparison_line("vanilla", by, "proxy_evaluations", "fewer proxy evaluations", "vanilla_evals")
    assert "**5.0x**" in line and "milestone >= 5x: met" in line and "goal >= 20x: not met" in line
    by["vanilla"][0] = _reach(False, 262)  # vanilla's own miss counts its whole budget, as a lower bound
    line = script.comparison_line("vanilla", by, "proxy_evaluations", "fewer proxy evaluations", "vanilla_evals")
    assert "**more than 5.8x**" in line  # medians 140 and 24
    assert script.comparison_line("random", {"random": [_reach(False, 100)], "cse": [_reach(True, 10)]},
                                  "proxy_evaluations", "fewer", None) == \
        "- CSE vs random: **more than 10.0x** fewer to reach the target (medians over seeds)."


def test_the_share_of_vanillas_gain_a_run_covers():
    script = _benchmark_script()
    assert script.gain_share(0.9, 0.7, 0.95) == pytest.approx(0.8)
    assert script.gain_share(0.96, 0.7, 0.95) > 1  # past Q*
    assert script.gain_share(None, 0.7, 0.95) is None and script.gain_share(0.9, 0.96, 0.95) is None
    assert script.mos_cost(script.parse_args(["--steps", "1000", "--mos-steps", "80"])) == pytest.approx(0.08)


def test_found_losses_are_tested_against_vanillas_of_the_same_seed():
    script = _benchmark_script()

    def row(name, scores):
        return {"name": name, "scores": scores, "mean": sum(scores) / len(scores)}

    heldout = [row("CE", [0.7, 0.71, 0.72]), row("vanilla/0", [0.97, 0.975, 0.98]), row("cse/0", [0.94, 0.945, 0.95]),
               row("vanilla/1", [0.92, 0.95, 0.93]), row("cse/1", [0.93, 0.94, 0.945]), row("cse/2", [0.9, 0.91, 0.92])]
    line = script.versus_vanilla(heldout)
    assert "seed 0: 0.9450 against 0.9750, vanilla's above" in line
    assert "seed 1: 0.9383 against 0.9333, not told apart" in line
    assert "seed 2" not in line  # no vanilla run of that seed to test against
    assert script.versus_vanilla([row("CE", [0.7, 0.71])]) == ""
