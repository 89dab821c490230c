"""Cell export follows the loss export's rule: only cells that beat the baseline (the hand neck) on the
ranking stage are written, unless ``--include-worse``; a run where none did exports nothing (exit 1)."""

from __future__ import annotations

import random

import pytest

from autoloss.cell.export import export_run
from autoloss.cell.representation import CellRepresentation
from autoloss.engine.store import BASELINE_GENERATION, RunStore
from autoloss.errors import NothingBetter
from cli_helpers import autoloss


def _cells(n: int) -> list[str]:
    rep, rng, keys = CellRepresentation(), random.Random(3), []
    while len(keys) < n:
        key = rep.key(rep.random(rng))
        if key not in keys:
            keys.append(key)
    return keys


def _run(tmp_path, baseline: float, scores: list[float]):
    """A cell run store: the hand neck as baseline and one searched cell per score, each with a proxy AO."""
    run = tmp_path / "cells"
    run.mkdir()
    with RunStore(run / "run.sqlite") as store:
        store.save_config({"representation": "cell", "metric": "AO", "ranking": "proxy", "task": {"tracker": "t"}})
        base = store.add_candidate(BASELINE_GENERATION, 0, "hand", origin="baseline")
        store.add_verdict(base, "proxy", True, "ok", {"fitness": baseline, "ao": baseline})
        for index, (genotype, score) in enumerate(zip(_cells(len(scores)), scores)):
            cid = store.add_candidate(0, index, genotype, origin="random")
            store.add_verdict(cid, "proxy", True, "ok", {"fitness": score, "ao": score})
    return run


def test_only_cells_that_beat_the_baseline_are_exported(tmp_path):
    run = _run(tmp_path, 0.40, [0.45, 0.35, 0.42])
    result = export_run(run, top=3)
    assert [c.title.split(": proxy AO ")[1][:6] for c in result.cells] == ["0.4500", "0.4200"]
    assert any("1 of the 3 best cells did not beat the baseline" in note for note in result.notes)
    assert "WORSE" not in result.module_path.read_text()


def test_include_worse_exports_them_marked(tmp_path):
    run = _run(tmp_path, 0.40, [0.45, 0.35])
    result = export_run(run, top=2, include_worse=True)
    assert len(result.cells) == 2
    assert "WORSE THAN THE BASELINE" in result.cells[1].title and "WORSE" not in result.cells[0].title


def test_nothing_better_exports_nothing(tmp_path):
    run = _run(tmp_path, 0.50, [0.45, 0.35])
    with pytest.raises(NothingBetter, match="no cell of the run .* beat the baseline .*0.4500.*0.5000"):
        export_run(run)
    assert not (run / "export").exists()
    result = autoloss("export", run)
    assert result.returncode == 1 and "--include-worse" in result.stderr and "Traceback" not in result.stderr
    assert autoloss("export", run, "--include-worse").returncode == 0
