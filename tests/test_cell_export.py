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
    result = export_run(run, top=3, include_unconfirmed=True)  # one seed each
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
    with pytest.raises(NothingBetter, match="no cell of the run .* confirmed better than the baseline"):
        export_run(run)
    with pytest.raises(NothingBetter, match="no cell of the run .* beat the baseline .*0.4500.*0.5000"):
        export_run(run, include_unconfirmed=True)
    assert not (run / "export").exists()
    result = autoloss("export", run, "--include-unconfirmed")
    assert result.returncode == 1 and "--include-worse" in result.stderr and "Traceback" not in result.stderr
    assert autoloss("export", run, "--include-worse").returncode == 0


# ---------------------------------------------------------------------------- stored text reaching the module


def hostile_texts(marker) -> dict[str, str]:
    """Values a tampered store (or an odd folder name) may hold: code after a newline, quotes, backslashes."""
    plant = f"open({str(marker)!r}, 'w').write('pwned')"
    return {
        "newline code": f"AO\n}}\n{plant}\nGENOTYPES = {{\n#",
        "docstring close": f'x"""\n{plant}\n"""',
        "single quotes": f"x'''\n{plant}\n'''",
        "backslashes": "a\\b\\",
        "named escape": "dimp\\N",
        "unicode escape": "\\u12",
        "unicode": "AO é ✓",
        "carriage return": f"AO\r{plant}",
    }


def import_path(path, name: str):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@pytest.mark.parametrize("case", list(hostile_texts("m")))
def test_stored_text_reaches_the_cell_module_only_as_data(tmp_path, case, capsys):
    """The metric, the ranking stage, task.tracker and the run folder's name: the module imports, runs
    nothing planted, and gives each back exactly in RUN."""
    from autoloss.cli import main

    marker = tmp_path / "PWNED"
    text = hostile_texts(marker)[case]
    folder = "run" + ("_" if "/" in text else text.replace("/", "_").replace("\0", ""))
    run = tmp_path / folder
    run.mkdir()
    with RunStore(run / "run.sqlite") as store:
        store.save_config({"representation": "cell", "metric": text, "ranking": text, "task": {"tracker": text}})
        base = store.add_candidate(BASELINE_GENERATION, 0, "hand", origin="baseline")
        store.add_verdict(base, text, True, "ok", {"fitness": 0.4})
        cid = store.add_candidate(0, 0, _cells(1)[0], origin=text)
        store.add_verdict(cid, text, True, "ok", {"fitness": 0.5})
    out = tmp_path / "exported_cells.py"
    assert main(["export", str(run), "--out", str(out), "--include-worse", "--include-unconfirmed"]) == 0, \
        capsys.readouterr().err
    module = import_path(out, f"exported_cells_{abs(hash(case))}")
    assert not marker.exists()
    assert module.RUN == {"run": folder, "run_dir": str(run.resolve()), "tracker": text, "metric": text,
                          "ranking": text}
    assert list(module.GENOTYPES) == ["cell1"]


def test_a_unicode_run_folder_is_exported_under_an_ascii_module_name(tmp_path):
    run = _run(tmp_path, 0.40, [0.45])
    moved = run.rename(tmp_path / "zählung_é")
    result = export_run(moved, include_worse=True, include_unconfirmed=True)
    assert result.module_path.name == "autoloss_cells_z_hlung.py"
    assert import_path(result.module_path, "autoloss_cells_unicode").RUN["run"] == "zählung_é"
