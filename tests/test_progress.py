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
    assert lines[0] == "baseline: training the initial loss (mos and proxy): CEI"
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
