"""The tracking-cell search through the command line: a tiny seeded demo search end to end, SIGKILLed and
resumed to the same result; its report (AO per generation, funnel, cell pictures) and its export (a
module that needs only torch); ``evaluate --tracker``; and every bad input as one line, exit 2, before
anything is trained.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autoloss.cell.representation import HAND, INITIAL, CellRepresentation
from autoloss.cell.genotype import format_genotype
from autoloss.engine.store import REFERENCE_GENERATION, RunStore, StoreError
from cli_helpers import assert_clean_error, autoloss, run_cli

# A tiny proxy: 64 px crops, C = 8, a few steps; 2 sequences per split of 6 frames.
TINY = {"channels": 8, "crop_size": 64, "baseline_steps": 3, "baseline_batch": 1, "steps": 4, "batch": 2, "pool": 2,
        "track_iterations": 3, "init_shifts": 1, "weights_sequences": 2, "holdout_sequences": 2,
        "test_sequences": 2, "verify_sequences": 2, "sequence_frames": 6, "frame_size": 64,
        "mos_steps": 2, "mos_sequences": 1}
OPTIONS = [arg for key, value in TINY.items() for arg in ("--tracker-option", f"{key}={value}")]
BUDGET = ["--population", "4", "--generations", "2", "--top-k", "2", "--parents", "2", "--seed", "1",
          "--workers", "1", "--mos-margin", "0.02"]  # the margin given: --demo and --data runs must match
TIMEOUT = 600


def _hall(db: Path) -> list[tuple[str, float]]:
    with RunStore(db, readonly=True) as store:
        return [(row.genotype, verdict.metrics["fitness"]) for row, verdict in store.best("proxy", 20)]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tracking") / "demo"
    result = autoloss("search", "--tracker", "dimp_small", "--demo", "--out", out, *BUDGET, *OPTIONS, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


@pytest.mark.slow
def test_the_demo_search_runs_end_to_end_and_stores_a_cell_run(demo_run):
    out, result = demo_run
    assert "cells bred" in result.stdout and "(the hand-designed neck)" in result.stdout
    with RunStore(out / "run.sqlite", readonly=True) as store:
        config = store.load_config()
        assert config["representation"] == "cell" and config["metric"] == "AO" and config["tracker"] == "dimp_small"
        assert config["task"]["settings"]["channels"] == 8 and config["task"]["stages"]["mos_steps"] == 2
        baseline = store.candidates(-1)
        assert [row.genotype for row in baseline] == ["hand"]
        assert store.verdict(baseline[0].id, "proxy").status == "ok"
        searched = [row for row in store.candidates() if row.generation >= 0]
        assert len(searched) == 8
        representation = CellRepresentation(references=(HAND,))
        assert all(row.genotype != "hand" for row in searched)
        for row in searched:  # every searched candidate is a cell that parses back
            assert representation.key(representation.parse(row.genotype)) == row.genotype
        first = [row for row in searched if row.generation == 0]
        assert all(row.parents == [format_genotype(INITIAL)] for row in first)  # bred from the initial cell
        # the first generation's MOS bar is the initial cell's (the hand neck's would bar every cell)
        [reference] = store.candidates(REFERENCE_GENERATION)
        assert reference.genotype == representation.key(INITIAL) and reference.fingerprint is None
        assert store.verdict(reference.id, "mos").status == "ok" and store.verdict(reference.id, "proxy") is None
        assert store.load_config()["options"]["mos_reference"] == "initial"
        proxied = [v for v in store.verdicts(gate="proxy") if v.status == "ok"]
        assert len(proxied) >= 2 and all(0.0 <= v.metrics["ao"] <= 1.0 for v in proxied)
        assert all({"sr50", "sr75", "fps"} <= v.metrics.keys() for v in proxied)
    assert (out / "baseline_tracker.pt").is_file() and (out / "data" / "holdout" / "list.txt").is_file()


@pytest.mark.slow
def test_a_killed_search_resumes_to_the_same_result(demo_run, tmp_path):
    reference, _ = demo_run
    data = reference / "data"  # the same synthetic sequences, now given as --data: the demo's run is the reference
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "autoloss.cli", "search", "--tracker", "dimp_small", "--data", str(data), "--out",
               str(out), "--quiet", *BUDGET, *OPTIONS]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "run.sqlite"
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                with RunStore(db, readonly=True) as store:
                    proxied = any(store.candidate(v.candidate_id).generation == 0 for v in store.verdicts(gate="proxy"))
            except StoreError:  # being created
                continue
            if proxied:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
    assert proc.returncode == -signal.SIGKILL, "finished before it could be killed"
    with RunStore(db, readonly=True) as store:
        assert not store.finished_generations() or store.finished_generations() == [0]
    resumed = autoloss("search", "--tracker", "dimp_small", "--data", data, "--out", out, "--resume", "--quiet",
                       *BUDGET, *OPTIONS, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr
    assert _hall(db) == _hall(reference / "run.sqlite")
    with RunStore(db, readonly=True) as store:
        assert store.finished_generations() == [0, 1]


@pytest.mark.slow
def test_report_of_a_cell_run_has_ao_per_generation_the_funnel_and_cell_pictures(demo_run, tmp_path):
    out, _ = demo_run
    result = autoloss("report", out, "--out", tmp_path / "report", timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "the neck cell of the tracker `dimp_small`" in text
    assert "## Proxy fitness per generation" in text and "proxy AO" in text
    assert "## Gate funnel per generation" in text and "structure" in text
    assert "## Top" in text and " cells" in text and "hand-designed neck" in text
    pictures = sorted((tmp_path / "report").glob("cell_*.png"))
    assert pictures and all(p.stat().st_size > 1000 for p in pictures)
    for picture in pictures:
        assert f"]({picture.name})" in text
    assert "prefix:" not in text  # cells are shown as genotypes, not as loss formulas
    assert "(`--mos-reference initial`): MOS AO" in text  # the first generation's bar, shown with the baseline


@pytest.mark.slow
def test_export_writes_a_module_that_needs_only_torch(demo_run, tmp_path):
    out, _ = demo_run
    module = tmp_path / "found_cells.py"
    result = autoloss("export", out, "--top", "2", "--out", module, "--include-worse", timeout=TIMEOUT)  # tiny: may not beat it
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"wrote {module}" in result.stdout and "Genotype(normal=" in result.stdout
    source = module.read_text()
    assert "autoloss" not in source.split('"""', 2)[2].replace("autoloss parses", "")  # no import of autoloss
    check = (
        "import sys, torch\n"
        "import found_cells as m\n"
        "name = next(iter(m.GENOTYPES))\n"
        "cell = m.build_cell(name, 8).eval()\n"
        "out = cell(torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5))\n"
        "assert out.shape == (2, 32, 5, 5), out.shape\n"
        "assert not [k for k in sys.modules if k.startswith(('autoloss', 'mmdet', 'mmcv', 'numpy.random_x'))]\n"
        "print(m.DARTS_TEXT[name])\n"
        "print(sorted(cell.state_dict()))\n"
    )
    run = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {[str(tmp_path)] + _torch_path()!r}\n"
                          + check], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    darts_text, keys = run.stdout.splitlines()[:2]
    from autoloss.cell.genotype import parse_genotype
    from autoloss.cell.model import Cell

    cell = Cell(parse_genotype(darts_text), 8)  # the same layers under the same names: weights load
    assert keys == str(sorted(cell.state_dict()))
    with RunStore(out / "run.sqlite", readonly=True) as store:
        assert darts_text == store.best("proxy", 1 + 1)[0][0].genotype or darts_text in [
            row.genotype for row, _ in store.best("proxy", 3)]


def _torch_path() -> list[str]:
    """The site-packages folder torch lives in (the subprocess runs without site, so nothing else is importable)."""
    return [str(Path(torch.__file__).resolve().parents[1])]


@pytest.mark.slow
def test_evaluate_compares_found_cell_hand_neck_and_random_cell(demo_run, tmp_path):
    out, _ = demo_run
    result = autoloss("evaluate", "--tracker", "dimp_small", "--data", out / "data", "--run", out, "--seeds", "2",
                      "--workers", "1", "--out", tmp_path / "eval", "--quiet", *OPTIONS, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    names = [row.split("|")[1].strip() for row in rows[2:]]
    assert names[:2] == ["hand neck (baseline)", "random cell"] and names[2].startswith("found #1")
    assert all(row.rstrip().endswith("2/2 |") for row in rows[2:])
    assert "±" in rows[2]
    assert (tmp_path / "eval" / "evaluate.md").read_text().count("| found #1") == 1
    # two seeds each: the table says it cannot claim anything, for the random and the found cell alike
    assert result.stdout.count("fewer than 3 seeds each, so nothing can be claimed") == 2


def test_the_evaluate_table_states_welchs_verdict_against_the_hand_neck():
    from autoloss.tracking.evaluate import result_table

    variants = [("hand neck (baseline)", "hand"), ("random cell", "r"), ("found #1", "f")]
    ao = {"hand neck (baseline)": (0.50, 0.52, 0.51), "random cell": (0.50, 0.53, 0.51), "found #1": (0.60, 0.61, 0.62)}
    results = {(name, s): {"ao": v, "sr50": v, "sr75": v} for name, values in ao.items() for s, v in enumerate(values)}
    text = "\n".join(result_table(variants, [0, 1, 2], results))
    assert "| found #1 | 0.610 ± 0.010 |" in text
    assert "- found #1: better than the baseline: +0.100 ± 0.008 over 3 seeds (Welch one-sided p = " in text
    assert "- random cell: not distinguishable from the baseline with 3 seeds (difference +0.003 ± 0.011" in text
    short = "\n".join(result_table(variants, [0, 1], results))
    assert "- found #1: 2 and 2 finished seeds (difference +0.095): fewer than 3 seeds each, so nothing can be " \
           "claimed" in short and "better than" not in short


# --------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The demo's synthetic sequences at the TINY sizes, written here (no search needed to check bad input)."""
    from autoloss.tracking.train import TrackingSettings, prepare_synthetic_data

    sizes = {key: TINY[key] for key in ("weights_sequences", "holdout_sequences", "test_sequences",
                                        "verify_sequences", "sequence_frames", "frame_size")}
    return prepare_synthetic_data(TrackingSettings(**sizes), tmp_path_factory.mktemp("tracking") / "data")


@pytest.fixture
def data_copy(tiny_data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    return copy


def _search(data, out, *extra):
    return run_cli("search", "--tracker", "dimp_small", "--data", data, "--out", out, *BUDGET, *OPTIONS, *extra)


def _first_sequence(data: Path, split: str = "weights") -> Path:
    return data / split / (data / split / "list.txt").read_text().split()[0]


def test_a_folder_that_is_not_got10k_layout(tmp_path):
    (tmp_path / "nothing").mkdir()
    result = _search(tmp_path / "nothing", tmp_path / "run")
    assert_clean_error(result, "is not a GOT-10k-layout tracking root", "weights/list.txt")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage, words", [
    (lambda gt: gt.write_text("1,2,3\n" + "\n".join(gt.read_text().splitlines()[1:]) + "\n"), ("line 1", "4 values")),
    (lambda gt: gt.write_text("\n".join(gt.read_text().splitlines()[:-2]) + "\n"), ("lines for", "frames")),
    (lambda gt: gt.write_text("900,900,10,10\n" + "\n".join(gt.read_text().splitlines()[1:]) + "\n"),
     ("line 1", "outside")),
])
def test_bad_groundtruth_is_one_line_before_training(data_copy, tmp_path, damage, words):
    damage(_first_sequence(data_copy) / "groundtruth.txt")
    result = _search(data_copy, tmp_path / "run")
    assert_clean_error(result, "groundtruth.txt", *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("truncate", [False, True])
def test_frames_that_do_not_decode(data_copy, tmp_path, truncate):
    frame = _first_sequence(data_copy, "holdout") / "00000002.jpg"
    frame.write_bytes(frame.read_bytes()[:300] if truncate else b"not a jpeg at all")
    result = _search(data_copy, tmp_path / "run")
    assert_clean_error(result, "00000002.jpg", "does not decode")
    assert not (tmp_path / "run").exists()


def test_a_genotype_that_does_not_parse(data_copy, tmp_path):
    result = run_cli("evaluate", "--tracker", "dimp_small", "--data", data_copy, "--cell",
                      "Genotype(normal=[('sep_conv_9x9', 0)])", "--out", tmp_path / "eval", *OPTIONS)
    assert_clean_error(result, "genotype")
    assert not (tmp_path / "eval").exists()


def test_a_checkpoint_that_does_not_fit(data_copy, tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(3, 3, 3, 3)}}, wrong)
    result = _search(data_copy, tmp_path / "run", "--backbone-checkpoint", wrong)
    assert_clean_error(result, "does not fit a ResNet-18")
    missing = _search(data_copy, tmp_path / "run", "--backbone-checkpoint", tmp_path / "absent.pth")
    assert_clean_error(missing, "does not exist")
    r50 = run_cli("search", "--tracker", "dimp_r50", "--data", data_copy, "--out", tmp_path / "run")
    assert_clean_error(r50, "--backbone-checkpoint")
    assert not (tmp_path / "run").exists()


def test_options_that_do_not_apply(tmp_path):
    assert_clean_error(run_cli("search", "--tracker", "dimp_small", "--task", "noisy-digits", "--out", tmp_path / "r"),
                       "choose one of")
    assert_clean_error(run_cli("search", "--tracker", "dimp_small", "--demo", "--space", "reg", "--out", tmp_path / "r"),
                       "--space applies to loss searches")
    assert_clean_error(run_cli("search", "--tracker", "dimp_small", "--demo", "--tracker-option", "no_such=1",
                               "--out", tmp_path / "r"), "unknown --tracker-option")
    assert_clean_error(run_cli("search", "--task", "noisy-digits", "--tracker-option", "steps=3",
                               "--out", tmp_path / "r"), "applies to --tracker")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------- the hand neck as a reference


def test_the_hand_neck_is_a_reference_of_the_representation_and_breeds_as_the_initial_cell():
    import random

    representation = CellRepresentation(references=(HAND,))
    hand = representation.parse("hand")
    assert hand is HAND and representation.key(hand) == "hand"
    assert representation.fingerprint(hand) != representation.fingerprint(INITIAL)
    assert "hand-designed" in representation.describe(hand)["summary"]
    for seed in range(5):  # what the engine does with a parent from the hall of fame: as the initial cell
        assert representation.mutate(hand, random.Random(seed)) == representation.mutate(INITIAL, random.Random(seed))
        other = representation.random(random.Random(seed))
        assert representation.crossover(hand, other, random.Random(seed)) == \
            representation.crossover(INITIAL, other, random.Random(seed))
    with pytest.raises(Exception, match="genotype"):
        CellRepresentation().parse("hand")  # only a representation that names it knows it
