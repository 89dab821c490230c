"""The evolution engine on the cheap noisy-digits task: improvement, funnel, failures, resume, Ray."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import zlib

import pytest

import autoloss.plugins  # noqa: F401  (registers the built-in strategies)
from autoloss.engine.executors import LocalExecutor
from autoloss.engine.registry import strategy
from autoloss.engine.schedulers import run_search as run_study
from autoloss.engine.store import RunStore
from autoloss.loss.problem import loss_problem
from autoloss.loss.space import load_space
from autoloss.tasks.problem import task_problem

SMALL = dict(population=24, generations=3, top_k=3, parents=3)
SEED = 1
TASK = {"steps": 250}


def small_problem(**params):
    return task_problem("noisy-digits", load_space("cls_softmax"), {**TASK, **params})


def make_strategy(name="cse", **options):
    cls = strategy(name)
    allowed = set(cls.Options.names())
    return cls(cls.Options(**{k: v for k, v in {**SMALL, **options}.items() if k in allowed}))


def run_search(tmp_path, problem=None, workers=2, mode="generational", name="cse", seed=SEED, executor=None,
               **options):
    store = RunStore(tmp_path / "run.sqlite")
    executor = executor or LocalExecutor(workers=workers)
    try:
        return run_study(problem or small_problem(), make_strategy(name, **options), store, executor, seed=seed,
                         mode=mode), store
    finally:
        executor.close()


def test_seeded_search_improves_on_the_initial_loss_and_records_the_funnel(tmp_path):
    result, store = run_search(tmp_path)
    assert result.baseline is not None and result.baseline.genotype == "Neg(Dot(Mul(Y,W),Log(Softmax(X))))"
    assert result.best[0].fitness > result.baseline.fitness
    for generation in range(SMALL["generations"]):
        funnel = store.funnel(generation)
        assert list(funnel)[:3] == ["validity", "equivalence", "convergence"]
        assert funnel["validity"]["in"] == SMALL["population"]
        # every stage sees exactly the survivors of the one before it
        assert funnel["equivalence"]["in"] == funnel["validity"]["passed"]
        assert funnel["convergence"]["in"] == funnel["equivalence"]["passed"]
        assert funnel["mos"]["in"] == funnel["convergence"]["passed"]
        assert funnel["proxy"]["in"] <= SMALL["top_k"]
        assert funnel["mos"]["passed"] == funnel["proxy"]["in"]  # the MOS verdict is the gate's decision
        summary = store.generation_summary(generation)
        assert summary["funnel"] == funnel
    store.close()


def test_same_seed_same_search(tmp_path):
    a, store_a = run_search(tmp_path / "a", generations=2)
    b, store_b = run_search(tmp_path / "b", generations=2)
    assert [(e.genotype, e.fitness) for e in a.best] == [(e.genotype, e.fitness) for e in b.best]
    assert [c.genotype for c in store_a.candidates()] == [c.genotype for c in store_b.candidates()]


# ---------------------------------------------------------------------------- failing candidates


def failure_mode(expression: str) -> str:
    """Each candidate fails (or not) in a way fixed by its text: every mode shows up in a small search."""
    return ["timeout", "error", "nan", "crash", "ok", "ok"][zlib.crc32(expression.encode()) % 6]


CEI = "Neg(Dot(Mul(Y,W),Log(Softmax(X))))"


def flaky_evaluate(task: dict, expression: str, stage: str, seed: int) -> dict:
    """A task whose candidates (not the baseline) fail in every way a real one can."""
    mode = "ok" if expression == CEI else failure_mode(expression)
    if mode == "timeout":
        time.sleep(60)
    if mode == "error":
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    if mode == "nan":
        return {"fitness": math.nan}
    if mode == "crash":
        os._exit(9)  # kills its worker
    return {"fitness": 1.0 / (1 + len(expression))}


def test_failing_candidates_are_recorded_and_the_search_finishes(tmp_path):
    problem = loss_problem(load_space("cls_softmax"), flaky_evaluate, {}, "fitness", iou="iou")
    result, store = run_search(tmp_path, problem, name="vanilla", population=40, generations=2, parents=3, seed=3,
                               proxy_timeout=2.0)
    verdicts = [v for v in store.verdicts(gate="proxy") if store.candidate(v.candidate_id).generation >= 0]
    by_status = {}
    for v in verdicts:
        mode = failure_mode(store.candidate(v.candidate_id).genotype)
        by_status.setdefault(v.status, []).append(mode)
        expected = {"timeout": "timeout", "error": "error", "crash": "crashed", "nan": "failed", "ok": "ok"}[mode]
        assert v.status == expected and v.passed == (mode == "ok"), (mode, v)
        if mode == "error":
            assert "illegal memory access" in v.reason
    assert {"timeout", "error", "crashed", "failed", "ok"} <= set(by_status), by_status.keys()
    assert result.best and all(math.isfinite(e.fitness) for e in result.best)
    assert sorted(store.finished_generations()) == [0, 1]


# ---------------------------------------------------------------------------- kill and resume


def _search_cmd(out, *extra):
    return [sys.executable, "-m", "autoloss.cli", "search", "--task", "noisy-digits", "--population", "24",
            "--generations", "3", "--top-k", "3", "--parents", "3", "--seed", "1", "--steps", "250",
            "--workers", "2", "--out", str(out), "--quiet", *extra]


def _best_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.strip().startswith("1. "))


@pytest.mark.slow
def test_killed_search_resumes_with_nothing_lost_and_the_same_result(tmp_path):
    reference = subprocess.run(_search_cmd(tmp_path / "reference"), capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen(_search_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    db = out / "run.sqlite"
    deadline = time.time() + 300
    done_before_kill = {}
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if not db.exists():
            continue
        with RunStore(db) as store:
            # kill mid-generation: generation 1 is bred and being screened (its MOS and proxy runs take
            # seconds; waiting for its first MOS verdict let a fast machine finish the generation in between)
            if store.candidates(1):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
    assert proc.returncode == -signal.SIGKILL, "the search finished before it could be killed"
    with RunStore(db) as store:
        # an evaluation redone would differ at least in its measured duration
        done_before_kill = {(v.candidate_id, v.gate): (v.seconds, v.metrics) for v in store.verdicts()
                            if v.gate in ("mos", "proxy")}
        assert 1 not in store.finished_generations()
    assert done_before_kill

    resumed = subprocess.run(_search_cmd(out, "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    with RunStore(db) as store:
        after = {(v.candidate_id, v.gate): (v.seconds, v.metrics) for v in store.verdicts()
                 if v.gate in ("mos", "proxy")}
        assert sorted(store.finished_generations()) == [0, 1, 2]
    # nothing completed before the kill was lost or redone
    for key, value in done_before_kill.items():
        assert after[key] == value
    assert _best_line(resumed.stdout) == _best_line(reference.stdout)
    # and the resumed store holds exactly the evaluations of the uninterrupted run
    with RunStore(tmp_path / "reference" / "run.sqlite") as ref:
        ref_evals = sorted((ref.candidate(v.candidate_id).genotype, v.gate, v.metrics.get("fitness"))
                           for v in ref.verdicts() if v.gate in ("mos", "proxy"))
    with RunStore(db) as store:
        got = sorted((store.candidate(v.candidate_id).genotype, v.gate, v.metrics.get("fitness"))
                     for v in store.verdicts() if v.gate in ("mos", "proxy"))
    assert got == ref_evals


@pytest.mark.slow
def test_resume_refuses_different_options(tmp_path):
    out = tmp_path / "run"
    first = subprocess.run(_search_cmd(out), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(_search_cmd(out), capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    changed = [a if a != "24" else "30" for a in _search_cmd(out, "--resume")]
    different = subprocess.run(changed, capture_output=True, text=True, timeout=60)
    assert different.returncode == 2 and "population" in different.stderr and "Traceback" not in different.stderr


# ---------------------------------------------------------------------------- steady state and Ray


def test_steady_state_mode_evaluates_as_workers_free_up(tmp_path):
    result, store = run_search(tmp_path, mode="steady-state", generations=2)
    assert result.baseline is not None
    candidates = [c for c in store.candidates() if c.generation >= 0]
    assert len(candidates) == 2 * SMALL["population"]
    assert store.verdicts(gate="mos") and result.best
    # a candidate reaches the proxy only when its MOS score passed the bar at dispatch time
    for verdict in store.verdicts(gate="proxy"):
        mos = store.verdict(verdict.candidate_id, "mos")
        assert store.candidate(verdict.candidate_id).generation < 0 or (mos is not None and mos.passed)


@pytest.mark.slow
def test_ray_executor_runs_a_small_search(tmp_path):
    ray = pytest.importorskip("ray")
    from autoloss.engine.executors import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        result, store = run_search(tmp_path, generations=2, executor=RayExecutor(num_gpus=0, retries=0))
        assert result.best and result.baseline is not None
        assert store.verdicts(gate="proxy") and all(v.status == "ok" for v in store.verdicts(gate="proxy"))
        assert sorted(store.finished_generations()) == [0, 1]
    finally:
        ray.shutdown()


def test_a_resume_keeps_the_stored_options_it_is_not_given(tmp_path):
    """A run stored before a default changed (here K, the MOS threshold rule and ``distinct``) resumes with
    what it was started with; an option given on the command line still wins, and is then checked."""
    from autoloss.cli import build_parser
    from autoloss.commands.search import stored_strategy_options, strategy_options
    from autoloss.engine.store import RunStore

    db = tmp_path / "run.sqlite"
    with RunStore(db) as store:  # an older run: no mos_threshold or distinct stored (the paper's rule, off)
        store.save_config({"strategy": "cse", "options": {"population": 30, "top_k": 7, "mos_margin": 0.0}})
    args = build_parser().parse_args(["search", "--task", "noisy-digits", "--out", str(tmp_path), "--resume"])
    options = strategy_options(args, stored_strategy_options(args, db)).options
    assert (options.population, options.top_k, options.mos_threshold, options.distinct) == (30, 7, "previous-best", False)
    args = build_parser().parse_args(["search", "--task", "noisy-digits", "--out", str(tmp_path), "--resume",
                                      "--top-k", "2", "--distinct"])
    options = strategy_options(args, stored_strategy_options(args, db)).options
    assert (options.population, options.top_k, options.distinct) == (30, 2, True)
    fresh = build_parser().parse_args(["search", "--task", "noisy-digits", "--out", str(tmp_path / "new")])
    assert stored_strategy_options(fresh, tmp_path / "new" / "run.sqlite") is None  # not a resume
