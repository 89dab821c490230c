"""What a hostile probe found: nothing from a run store runs, options are checked before anything is
written, unusable output paths and damaged stores are one line (exit 2, store untouched), a search
whose baseline fails exits non-zero, SIGTERM says so."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import assert_clean_error, autoloss

TINY = ["--task", "noisy-digits", "--population", "4", "--generations", "1", "--top-k", "1", "--parents", "1",
        "--steps", "5", "--workers", "1", "--quiet"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    result = autoloss("search", *TINY, "--out", out, timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    con = sqlite3.connect(src / "run.sqlite")
    try:
        con.execute(f"VACUUM INTO '{dst / 'run.sqlite'}'")  # one self-contained file, WAL folded in
    finally:
        con.close()
    con = sqlite3.connect(dst / "run.sqlite")
    con.execute("PRAGMA journal_mode=WAL")  # as the engine writes its stores
    con.close()
    return dst


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- 1: nothing from a store runs


def test_export_and_report_never_run_a_detector_config_named_in_the_store(finished_run, tmp_path):
    marker = tmp_path / "EXECUTED"
    evil = tmp_path / "evil_cfg.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('pwned')\nmodel = dict(type='FasterRCNN')\n")
    run = copy_run(finished_run, tmp_path / "tampered")
    con = sqlite3.connect(run / "run.sqlite")
    con.execute("UPDATE config SET value = json_set(value, '$.detector', ?)", (str(evil),))
    con.commit()
    con.close()
    exported = autoloss("export", run, "--include-worse")
    reported = autoloss("report", run)
    assert not marker.exists()
    assert exported.returncode == 0 and "is not read" in exported.stdout and str(evil) in exported.stdout
    assert reported.returncode == 0, reported.stderr


# ---------------------------------------------------------------------------- 3: options, store absent


@pytest.mark.parametrize("argv, words", [
    (["check", "CEI", "--timeout", "0"], ["--timeout"]),
    (["check", "CEI", "--timeout", "-1"], ["--timeout"]),
    (["check", "CEI", "--timeout", "nan"], ["--timeout"]),
    (["check", "CEI", "--timeout", "inf"], ["--timeout"]),
    (["check", "CEI", "--timeout", "1e309"], ["--timeout"]),
    (["check", "CEI", "--timeout", "1e12"], ["--timeout"]),
    (["evaluate", "--detector", "faster_rcnn_small", "--demo", "--timeout", "0"], ["--timeout"]),
])
def test_bad_option_values_are_one_line(argv, words):
    assert_clean_error(autoloss(*argv), *words)


@pytest.mark.parametrize("extra, words", [
    (["--mos-timeout", "0"], ["--mos-timeout"]),
    (["--mos-timeout", "-5"], ["--mos-timeout"]),
    (["--proxy-timeout", "inf"], ["--proxy-timeout"]),
    (["--proxy-timeout", "nan"], ["--proxy-timeout"]),
    (["--workers", "-1"], ["--workers"]),
    (["--workers", "0"], ["--workers"]),
    (["--workers", "100000"], ["--workers"]),
    (["--top-k", "50", "--population", "6"], ["--top-k", "--population"]),
    (["--max-mos", "0"], ["--max-mos"]),
    (["--mos-margin", "nan"], ["--mos-margin"]),
    (["--seed", "1208925819614629174706176"], ["--seed"]),
    (["--strategy", "vanilla", "--top-k", "2"], ["--top-k", "does not apply to --strategy vanilla"]),
])
def test_bad_search_options_leave_no_store(tmp_path, extra, words):
    out = tmp_path / "run"
    argv = ["search", "--task", "noisy-digits", "--population", "4", "--generations", "1", "--out", out, *extra]
    assert_clean_error(autoloss(*argv), *words)
    assert not (out / "run.sqlite").exists()


def test_a_space_whose_initial_loss_does_not_parse_leaves_no_store(tmp_path):
    space = tmp_path / "space.yaml"
    text = (Path(__file__).parents[1] / "search_spaces" / "cls_softmax.yaml").read_text()
    space.write_text(text.replace("initial: CEI", "initial: BROKEN").replace(
        "losses:\n", "losses:\n  BROKEN: Neg(Foo(X))\n"))
    assert "BROKEN: Neg(Foo(X))" in space.read_text()
    out = tmp_path / "run"
    result = autoloss("search", "--task", "noisy-digits", "--space", space, "--out", out, "--quiet")
    assert_clean_error(result)
    assert not (out / "run.sqlite").exists()
    fixed = autoloss("search", *TINY, "--out", out)  # the corrected command is not refused
    assert fixed.returncode == 0, fixed.stderr


# ---------------------------------------------------------------------------- 4: unusable --out


def _unusable(tmp_path: Path) -> dict[str, Path]:
    regular = tmp_path / "file.txt"
    regular.write_text("x")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    paths = {"regular file": regular, "under a regular file": regular / "run", "/dev/null": Path("/dev/null"),
             "/proc": Path("/proc/x")}
    if os.geteuid() != 0:  # root writes anywhere: a read-only folder only stops other users
        paths["read-only"] = readonly / "run"
    return paths


@pytest.mark.parametrize("what", ["regular file", "under a regular file", "/dev/null", "/proc"])
def test_an_unusable_out_is_one_line_for_search(tmp_path, what):
    out = _unusable(tmp_path)[what]
    assert_clean_error(autoloss("search", *TINY, "--out", out), "run directory")


@pytest.mark.parametrize("what", ["regular file", "under a regular file", "/dev/null", "/proc"])
def test_an_unusable_out_is_one_line_for_report(finished_run, tmp_path, what):
    out = _unusable(tmp_path)[what]
    assert_clean_error(autoloss("report", finished_run, "--out", out), "report directory")


@pytest.mark.parametrize("what", ["regular file", "/dev/null", "/proc"])
def test_an_unusable_out_is_one_line_for_evaluate(tmp_path, what):
    out = _unusable(tmp_path)[what]
    assert_clean_error(autoloss("evaluate", "--detector", "faster_rcnn_small", "--demo", "--out", out),
                       "output directory")


# ---------------------------------------------------------------------------- 5: damaged stores


def _truncate(db: Path) -> None:
    db.write_bytes(db.read_bytes()[:3000])


def _overwrite(db: Path) -> None:
    db.write_bytes(b"\x00garbage" * 4096)


def _damage_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    for offset in range(4096, len(data), 4096):  # every page but the header's: the b-tree pages
        data[offset: offset + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))


def _config_not_object(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("UPDATE config SET value = '[1, 2, 3]'")
    con.commit()
    con.close()


def _metrics_not_json(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("UPDATE verdicts SET metrics = 'not json {' WHERE gate = 'proxy'")
    con.commit()
    con.close()


def _baseline_tampered(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("UPDATE candidates SET genotype = 'Neg(Neg(Dot(Mul(Y,W),Log(Softmax(X)))))' WHERE generation = -1")
    con.commit()
    con.close()


def _zero_bytes(db: Path) -> None:
    db.write_bytes(b"")


DAMAGE = {"truncated": _truncate, "overwritten": _overwrite, "page-damaged": _damage_pages,
          "config not an object": _config_not_object, "metrics not JSON": _metrics_not_json,
          "baseline tampered": _baseline_tampered, "zero bytes": _zero_bytes}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_store_is_one_line_and_left_untouched(finished_run, tmp_path, damage):
    run = copy_run(finished_run, tmp_path / "damaged")
    db = run / "run.sqlite"
    DAMAGE[damage](db)
    before = digest(db)
    commands = [["search", *TINY, "--out", run, "--resume"]]
    if damage != "baseline tampered":  # a changed genotype is readable: report and export show it
        commands += [["report", run, "--out", tmp_path / "report"], ["export", run, "--include-worse"]]
    for argv in commands:
        result = autoloss(*argv, timeout=300)
        assert_clean_error(result, str(db) if damage != "zero bytes" else "empty")
        assert digest(db) == before, argv


# ---------------------------------------------------------------------------- 8 and 9: failing baseline, SIGTERM


def test_a_search_whose_baseline_fails_exits_non_zero_with_the_reason(tmp_path):
    space = tmp_path / "space.yaml"
    text = (Path(__file__).parents[1] / "search_spaces" / "cls_softmax.yaml").read_text()
    # an initial loss that parses but cannot train: its value is NaN from the first step
    space.write_text(text.replace("initial: CEI", "initial: BROKEN").replace(
        "losses:\n", "losses:\n  BROKEN: Neg(Dot(Y,Sqrt(Neg(Softmax(X)))))\n"))
    result = autoloss("search", "--task", "noisy-digits", "--space", space, "--population", "4",
                      "--generations", "1", "--top-k", "1", "--steps", "5", "--out", tmp_path / "run", "--quiet",
                      timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autoloss: error: the baseline") and "Traceback" not in result.stderr


def test_sigterm_says_terminated(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "autoloss.cli", "search", "--task", "noisy-digits",
                             "--population", "40", "--generations", "5", "--out", str(tmp_path / "run"), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "run" / "run.sqlite").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == "autoloss: terminated" and "Traceback" not in err
