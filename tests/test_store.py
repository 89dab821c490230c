"""Tests for autoloss.engine.store: the run's SQLite store, its queries and its durability under SIGKILL."""

import math
import multiprocessing
import os
import signal
import sqlite3
import time

import pytest

from autoloss.engine.store import CandidateRow, RunStore, StoreError, VerdictRow


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path / "run" / "run.sqlite") as s:
        yield s


def test_creates_parent_dir_and_wal(tmp_path):
    path = tmp_path / "a" / "b" / "run.sqlite"
    with RunStore(path) as s:
        assert path.exists()
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_config_save_load_and_mismatch(store, tmp_path):
    assert store.load_config() is None
    config = {"seed": 1, "search": {"population": 8, "gates": ["a", "b"]}}
    store.save_config(config)
    store.save_config({"search": {"gates": ["a", "b"], "population": 8}, "seed": 1})  # same: no-op
    assert store.load_config() == config
    with pytest.raises(ValueError, match=r"differs.*search\.population"):
        store.save_config({"seed": 1, "search": {"population": 9, "gates": ["a", "b"]}})
    with pytest.raises(ValueError, match=r"differs.*'extra'"):
        store.save_config({**config, "extra": True})
    assert store.load_config() == config
    store.close()
    with RunStore(tmp_path / "run" / "run.sqlite") as again:
        assert again.load_config() == config


def test_add_candidate_idempotent(store):
    a = store.add_candidate(0, 0, "add(x, y)", origin="random")
    b = store.add_candidate(0, 1, "mul(x, y)", parents=["add(x, y)"], origin="mutation", fingerprint="f1")
    assert a != b
    assert store.add_candidate(0, 0, "add(x, y)", origin="whatever") == a
    with pytest.raises(StoreError, match="another search or altered"):  # a resume must make the same population
        store.add_candidate(0, 0, "sub(x, y)")
    row = store.candidate(b)
    assert isinstance(row, CandidateRow)
    assert (row.generation, row.index, row.genotype, row.parents, row.origin, row.fingerprint) == (
        0, 1, "mul(x, y)", ["add(x, y)"], "mutation", "f1")
    assert store.candidate(a).origin == "random" and store.candidate(a).fingerprint is None
    store.set_fingerprint(a, "fa")
    assert store.candidate(a).fingerprint == "fa"
    with pytest.raises(KeyError):
        store.candidate(999)
    with pytest.raises(KeyError):
        store.set_fingerprint(999, "x")


def test_candidates_order_and_filter(store):
    store.add_candidate(1, 1, "d")
    store.add_candidate(0, 1, "b")
    store.add_candidate(1, 0, "c")
    store.add_candidate(0, 0, "a")
    assert [c.genotype for c in store.candidates()] == ["a", "b", "c", "d"]
    assert [c.genotype for c in store.candidates(1)] == ["c", "d"]
    assert store.candidates(5) == []


def test_verdict_replace_and_metrics_roundtrip(store):
    cid = store.add_candidate(0, 0, "g")
    assert store.verdict(cid, "train") is None
    store.add_verdict(cid, "train", False, "timed out", status="timeout", seconds=5)
    metrics = {"fitness": 0.5, "n": 3, "s": "x", "none": None, "l": [1, 2.5], "d": {"k": [None]},
               "nan": float("nan"), "inf": [float("inf"), -math.inf]}
    store.add_verdict(cid, "train", True, "", metrics, seconds=12.5)
    v = store.verdict(cid, "train")
    assert isinstance(v, VerdictRow)
    assert (v.candidate_id, v.gate, v.passed, v.reason, v.status, v.seconds) == (cid, "train", True, "", "ok", 12.5)
    assert v.metrics == {"fitness": 0.5, "n": 3, "s": "x", "none": None, "l": [1, 2.5], "d": {"k": [None]},
                         "nan": None, "inf": [None, None]}
    assert len(store.verdicts(gate="train")) == 1
    with pytest.raises(ValueError):
        store.add_verdict(cid, "train", True, "", status="bogus")
    with pytest.raises(sqlite3.IntegrityError):
        store.add_verdict(999, "train", True, "")  # foreign key


def test_verdicts_filter(store):
    a = store.add_candidate(0, 0, "a")
    b = store.add_candidate(1, 0, "b")
    store.add_verdict(a, "syntax", True, "")
    store.add_verdict(a, "train", True, "")
    store.add_verdict(b, "syntax", False, "bad")
    assert [(v.candidate_id, v.gate) for v in store.verdicts()] == [(a, "syntax"), (a, "train"), (b, "syntax")]
    assert [(v.candidate_id, v.gate) for v in store.verdicts(generation=0)] == [(a, "syntax"), (a, "train")]
    assert [v.candidate_id for v in store.verdicts(gate="syntax")] == [a, b]
    assert [v.gate for v in store.verdicts(generation=1, gate="syntax")] == ["syntax"]
    assert store.verdicts(generation=1, gate="train") == []


def test_find_evaluation_across_generations(store):
    a = store.add_candidate(0, 3, "add(x, y)")
    store.add_verdict(a, "train", True, "", {"fitness": 0.1})
    b = store.add_candidate(2, 0, "add(x, y)")  # re-bred duplicate, not yet evaluated
    found = store.find_evaluation("add(x, y)", "train")
    assert found.candidate_id == a and found.metrics == {"fitness": 0.1}
    store.add_verdict(b, "train", True, "", {"fitness": 0.2})
    assert store.find_evaluation("add(x, y)", "train").candidate_id == b
    store.add_verdict(a, "train", True, "", {"fitness": 0.3})  # a replacement is the newest
    assert store.find_evaluation("add(x, y)", "train").metrics == {"fitness": 0.3}
    assert store.find_evaluation("add(x, y)", "other") is None
    assert store.find_evaluation("mul(x, y)", "train") is None


def test_funnel(store):
    ids = [store.add_candidate(0, i, f"g{i}") for i in range(5)]
    other = store.add_candidate(1, 0, "h")
    for i, cid in enumerate(ids):
        store.add_verdict(cid, "syntax", i != 0, "")
    for cid in ids[1:]:
        store.add_verdict(cid, "proxy", cid in ids[1:3], "", status="ok" if cid != ids[4] else "crashed")
    store.add_verdict(ids[1], "train", True, "")
    store.add_verdict(other, "syntax", True, "")
    assert store.funnel(0) == {
        "syntax": {"in": 5, "passed": 4, "failed": 1},
        "proxy": {"in": 4, "passed": 2, "failed": 2},
        "train": {"in": 1, "passed": 1, "failed": 0},
    }
    assert list(store.funnel(0)) == ["syntax", "proxy", "train"]
    assert store.funnel(1) == {"syntax": {"in": 1, "passed": 1, "failed": 0}}
    assert store.funnel(7) == {}


def test_best(store):
    def add(gen, idx, genotype, fitness, status="ok", passed=True, gate="train"):
        cid = store.add_candidate(gen, idx, genotype)
        store.add_verdict(cid, gate, passed, "", {} if fitness is ... else {"fitness": fitness, "ap": 1.0},
                          status=status)
        return cid

    a = add(0, 0, "a", 0.5)
    b = add(0, 1, "b", 0.7)
    c = add(0, 2, "c", 0.5)  # ties with a: a wins (lower id)
    add(0, 3, "d", 0.9, status="failed", passed=False)
    add(0, 4, "e", 0.95, status="timeout", passed=False)
    add(0, 5, "f", None)
    add(0, 6, "g", ...)  # metric missing
    add(0, 7, "h", "high")  # not a number
    add(0, 8, "i", float("nan"))  # stored as null
    add(0, 9, "j", True)  # a bool is not a fitness
    b2 = add(1, 0, "b", 0.8)  # duplicate genotype, better: only this one appears
    add(1, 1, "a", 0.1)  # duplicate genotype, worse: a's best stays
    add(1, 2, "k", 5.0, gate="other")
    k = add(1, 3, "k", 3)  # int metric
    top = store.best("train")
    assert [(cnd.id, v.metrics["fitness"]) for cnd, v in top] == [(k, 3), (b2, 0.8), (a, 0.5), (c, 0.5)]
    assert all(v.candidate_id == cnd.id and v.gate == "train" for cnd, v in top)
    assert [cnd.id for cnd, _ in store.best("train", n=2)] == [k, b2]
    assert [cnd.genotype for cnd, _ in store.best("other")] == ["k"]
    assert [cnd.genotype for cnd, _ in store.best("train", metric="ap")][:1] == ["a"]  # all 1.0: lowest id first
    assert store.best("nothing") == []
    assert b not in [cnd.id for cnd, _ in top]  # its genotype appears once, as b2


def test_generations(store):
    assert store.finished_generations() == [] and store.generation_summary(0) is None
    store.finish_generation(1, {"best": 0.4})
    store.finish_generation(0, {"best": 0.2, "funnel": {"syntax": {"in": 3}}, "threshold": float("inf")})
    store.finish_generation(1, {"best": 0.5})  # replace
    assert store.finished_generations() == [0, 1]
    assert store.generation_summary(1) == {"best": 0.5}
    assert store.generation_summary(0) == {"best": 0.2, "funnel": {"syntax": {"in": 3}}, "threshold": None}


def test_state(store):
    assert store.get_state("rng") is None
    assert store.get_state("rng", default=[]) == []
    store.set_state("rng", [3, [1, 2], None])
    store.set_state("threshold", 0.25)
    store.set_state("rng", {"v": 2})
    assert store.get_state("rng") == {"v": 2}
    assert store.get_state("threshold") == 0.25
    store.set_state("none", None)
    assert store.get_state("none", default="d") is None


def _writer(path, flag):
    """Child process: write 50 rows (candidate and verdict), flag after 20, then hang."""
    with RunStore(path) as s:
        s.save_config({"seed": 7})
        for i in range(50):
            cid = s.add_candidate(0, i, f"g{i}", origin="child")
            s.add_verdict(cid, "train", True, "", {"fitness": i / 50})
            s.set_state("last", i)
            if i == 19:
                flag.set()  # no pause: the kill lands while rows 20..49 are being written
        time.sleep(60)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_durable_under_sigkill(tmp_path):
    path = tmp_path / "run.sqlite"
    ctx = multiprocessing.get_context("fork")
    flag = ctx.Event()
    child = ctx.Process(target=_writer, args=(path, flag))
    child.start()
    try:
        assert flag.wait(30), "child never reached row 20"
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            child.join(10)
    assert child.exitcode == -signal.SIGKILL
    with RunStore(path) as s:
        assert s._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert s.load_config() == {"seed": 7}
        last = s.get_state("last")
        assert last >= 19
        rows = s.candidates(0)
        # every row whose write returned before the kill is there: candidates 0..last, each with its verdict
        assert [c.index for c in rows][: last + 1] == list(range(last + 1))
        assert len(rows) in (last + 1, last + 2)  # at most one more candidate, written after the state
        for c in rows[: last + 1]:
            assert s.verdict(c.id, "train").metrics == {"fitness": c.index / 50}
        # the resumed run continues on the same file
        cid = s.add_candidate(0, 0, "g0")
        assert cid == rows[0].id
        s.add_candidate(0, 50, "g50")
    with RunStore(path) as s:
        assert s.candidates(0)[-1].genotype == "g50"
