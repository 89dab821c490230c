"""Search progress as plain log lines (what a search prints when not on a terminal)."""

from __future__ import annotations

import io

from autoloss.engine.progress import Progress


def test_plain_log_lines_tell_the_story_of_a_generation():
    out = io.StringIO()
    progress = Progress(stream=out, metric="mAP")
    assert not progress.live_mode  # not a terminal
    progress.baseline_started("CEI", ["mos", "proxy"])
    progress.evaluated("proxy", "CEI", 0.25, "")
    progress.baseline(0.25)
    progress.generation(0, 2, 24)
    progress.gate("convergence", 16, 9)
    progress.gate("mos", 4, 2, "5 more not run: at most 4 MOS per generation")
    progress.evaluated("proxy", "X", None, "Diverged")
    progress.evaluated("proxy", "Y", 0.3, "")
    progress.generation_done({"generation": 0, "best_fitness": 0.3}, [])
    progress.close()
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines[0] == "baseline: training the baseline (mos and proxy): CEI"
    assert "baseline mAP 0.2500" in lines
    assert "generation 1/2: 24 candidates" in lines  # generations are counted from 1 for people
    assert any(line.startswith("  mos") and line.endswith("(5 more not run: at most 4 MOS per generation)")
               for line in lines)
    assert "  new best mAP 0.3000: Y" in lines
    assert lines[-1].startswith("  generation 1 done: best this generation 0.3000, best mAP so far 0.3000")
    assert progress.state["evaluations"] == 3 and progress.state["failures"] == 1


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    progress = Progress(enabled=False, stream=out)
    progress.baseline_started("CEI", ["proxy"])
    progress.generation(0, 1, 4)
    progress.close()
    assert out.getvalue() == ""


def slow_training(task: dict, genotype: str, stage: str, seed: int) -> dict:
    """A stub evaluation that trains for a few seconds and tells its heartbeat as it goes."""
    import time

    from autoloss.engine import heartbeat

    for step in range(12):
        time.sleep(0.25)
        heartbeat.beat(step + 1, 12, 1.0 / (step + 1))
    return {"fitness": genotype[:10].count("1") / 10}


def test_plain_log_shows_what_is_training_while_an_evaluation_runs(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import toy

    from autoloss.engine import heartbeat
    from autoloss.engine.executors import LocalExecutor
    from autoloss.engine.schedulers import run_search
    from autoloss.engine.store import RunStore

    heartbeat.INTERVAL = 0.2  # workers forked from here write often
    out = io.StringIO()
    progress = Progress(stream=out, metric="ones", heartbeat_dir=tmp_path / "work", training_every=0.5, poll=0.2)
    executor = LocalExecutor(workers=1)
    strategy = toy.HillClimb(toy.HillOptions(population=1, generations=1, parents=1))
    try:
        with RunStore(tmp_path / "run.sqlite") as store:
            run_search(toy.problem(evaluate=slow_training), strategy, store, executor, progress, seed=1)
    finally:
        executor.close()
    training = [line for line in out.getvalue().splitlines() if "  training " in line]
    assert training, out.getvalue()
    assert any("quick 000000000000, iteration" in line and "/12, loss" in line and "s elapsed" in line
               for line in training), training
    assert any("s left" in line for line in training)
