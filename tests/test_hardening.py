"""What a hostile probe found: nothing from a run store runs, options are checked before anything is
written, unusable output paths and damaged stores are one line (exit 2, store untouched), a search
whose baseline fails exits non-zero, SIGTERM says so."""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_helpers import assert_clean_error, autoloss, run_cli

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
    exported = run_cli("export", run, "--include-worse")
    reported = run_cli("report", run)
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
    assert_clean_error(run_cli(*argv), *words)


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
    assert_clean_error(run_cli(*argv), *words)
    assert not (out / "run.sqlite").exists()


def test_a_space_whose_initial_loss_does_not_parse_leaves_no_store(tmp_path):
    space = tmp_path / "space.yaml"
    text = (Path(__file__).parents[1] / "search_spaces" / "cls_softmax.yaml").read_text()
    space.write_text(text.replace("initial: CEI", "initial: BROKEN").replace(
        "losses:\n", "losses:\n  BROKEN: Neg(Foo(X))\n"))
    assert "BROKEN: Neg(Foo(X))" in space.read_text()
    out = tmp_path / "run"
    result = run_cli("search", "--task", "noisy-digits", "--space", space, "--out", out, "--quiet")
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
    assert_clean_error(run_cli("search", *TINY, "--out", out), "run directory")


@pytest.mark.parametrize("what", ["regular file", "under a regular file", "/dev/null", "/proc"])
def test_an_unusable_out_is_one_line_for_report(finished_run, tmp_path, what):
    out = _unusable(tmp_path)[what]
    assert_clean_error(run_cli("report", finished_run, "--out", out), "report directory")


@pytest.mark.parametrize("what", ["regular file", "/dev/null", "/proc"])
def test_an_unusable_out_is_one_line_for_evaluate(tmp_path, what):
    out = _unusable(tmp_path)[what]
    assert_clean_error(run_cli("evaluate", "--detector", "faster_rcnn_small", "--demo", "--out", out),
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


def _tamper(sql: str):
    """A damage that runs ``sql`` on the store (a row's field of the wrong type, a table gone, ...)."""
    def damage(db: Path) -> None:
        con = sqlite3.connect(db)
        con.execute(sql)
        con.commit()
        con.close()
    return damage


DAMAGE = {"truncated": _truncate, "overwritten": _overwrite, "page-damaged": _damage_pages,
          "config not an object": _config_not_object, "metrics not JSON": _metrics_not_json,
          "baseline tampered": _baseline_tampered, "zero bytes": _zero_bytes,
          # issue 21: every row read is checked (types, finiteness) by the one run reader
          "generation 'zero'": _tamper("UPDATE candidates SET generation = 'zero' WHERE id = (SELECT max(id) FROM candidates)"),
          "created 'yesterday'": _tamper("UPDATE verdicts SET created = 'yesterday'"),
          "seconds 'long'": _tamper("UPDATE verdicts SET seconds = 'long'"),
          "fitness not a number": _tamper("UPDATE verdicts SET metrics = json_set(metrics, '$.fitness', 'abc') "
                                          "WHERE gate = 'proxy'"),
          "seed 'abc'": _tamper("UPDATE verdicts SET metrics = json_set(metrics, '$.seed', 'abc')"),
          "fitness Infinity": _tamper("UPDATE verdicts SET metrics = '{\"fitness\": Infinity}' WHERE gate = 'proxy'"),
          "no generations table": _tamper("DROP TABLE generations"),
          "state not JSON": _tamper("INSERT OR REPLACE INTO state (key, value) VALUES ('strategy', 'not json {')")}
READABLE = {"baseline tampered", "state not JSON"}  # report and export do not read them: they show the run


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_store_is_one_line_and_left_untouched(finished_run, tmp_path, damage):
    run = copy_run(finished_run, tmp_path / "damaged")
    db = run / "run.sqlite"
    DAMAGE[damage](db)
    before = digest(db)
    commands = [["search", *TINY, "--out", run, "--resume"]]
    if damage not in READABLE:  # a changed genotype is readable: report and export show it
        commands += [["report", run, "--out", tmp_path / "report"], ["export", run, "--include-worse"]]
    for argv in commands:
        result = run_cli(*argv)
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


# ---------------------------------------------------------------------------- issue 21: full disks, odd folders


class FullDisk:
    """The temporary file of autoloss.files.write_atomic on a disk that fills after ``room`` bytes."""

    def __init__(self, room: int = 100):
        self.room = room

    def __call__(self, fd: int):
        disk = self

        class File:
            def __init__(self):
                self.real, self.written = os.fdopen(fd, "wb"), 0

            def write(self, data):
                self.written += len(data)
                if self.written > disk.room:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return self.real.write(data)

            def close(self):
                self.real.close()

            def __getattr__(self, name):
                return getattr(self.real, name)

        return File()


def test_a_checkpoint_written_on_a_full_disk_leaves_the_old_one_and_no_temporary(tmp_path, monkeypatch):
    """The differentiable search's checkpoint (torch.save, which reports a failed write as a RuntimeError):
    the old checkpoint stays whole, no .tmp is left, one line says the disk is full."""
    import torch
    from test_differentiable import toy_search

    from autoloss import files
    from autoloss.errors import UserError

    search = toy_search("darts2")
    path = tmp_path / "search.pt"
    search.save(path)
    before = digest(path)
    monkeypatch.setattr(files, "_open_temporary", FullDisk(room=1000))
    with pytest.raises(UserError, match="disk full") as raised:
        search.save(path)
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)
    assert digest(path) == before and [p.name for p in tmp_path.iterdir()] == ["search.pt"]
    assert torch.load(path, weights_only=True)["epoch"] == 0


def test_a_report_onto_a_full_disk_is_one_line(finished_run, tmp_path, monkeypatch):
    from autoloss import files

    monkeypatch.setattr(files, "_open_temporary", FullDisk())
    result = run_cli("report", finished_run, "--out", tmp_path / "report")
    assert_clean_error(result, "disk full", str(tmp_path / "report"))
    assert list((tmp_path / "report").iterdir()) == []  # no fragment, no temporary


def test_a_baseline_checkpoint_path_that_is_a_directory_is_refused_before_training(tmp_path):
    from autoloss.errors import UserError
    from autoloss.tracking.train import TrackingSettings, train_baseline

    folder = tmp_path / "baseline_tracker.pt"
    folder.mkdir()
    started = time.perf_counter()
    with pytest.raises(UserError, match="is not a file"):
        train_baseline(TrackingSettings(), tmp_path / "no-data", folder)
    assert time.perf_counter() - started < 5 and list(tmp_path.iterdir()) == [folder]


def test_a_moved_run_folder_resumes_and_an_old_store_still_does(tmp_path):
    """Paths inside the run folder (a tracker run's data and baseline) are stored relative to it."""
    import json

    from autoloss.engine.store import RunStore, StoreError
    from autoloss.engine.study import check_resume

    class Problem:  # what check_resume reads of a problem
        baseline = None

        class representation:
            def initial():
                return "hand"

            def key(individual):
                return individual

    def config(run: Path) -> dict:
        resolved = run.resolve()
        return {"representation": "cell", "task": {"data_root": str(resolved / "data"),
                                                   "baseline": str(resolved / "baseline_tracker.pt"),
                                                   "elsewhere": str(tmp_path / "shared" / "data")}}

    first = tmp_path / "first"
    with RunStore(first / "run.sqlite") as store:
        store.save_config(config(first))
    moved = first.rename(tmp_path / "moved")
    with RunStore(moved / "run.sqlite", readonly=True) as store:
        check_resume(store, config(moved), Problem)  # "differs at 'task.baseline'" before
        assert store.load_config() == config(moved)
    with RunStore(moved / "run.sqlite") as store:
        store.save_config(config(moved))  # what a resumed Study does

    old = tmp_path / "old"  # written before: absolute paths
    with RunStore(old / "run.sqlite") as store:
        store._db.execute("INSERT INTO config (id, value) VALUES (1, ?)", (json.dumps(config(old)),))
    with RunStore(old / "run.sqlite") as store:
        check_resume(store, config(old), Problem)
        store.save_config(config(old))
    with RunStore(old.rename(tmp_path / "old-moved") / "run.sqlite", readonly=True) as store, \
            pytest.raises(StoreError, match="differs at 'task.baseline'"):
        check_resume(store, config(tmp_path / "old-moved"), Problem)


def _read_only(folder: Path, *argv) -> subprocess.CompletedProcess:
    """``autoloss ARGV`` with ``folder`` mounted read-only (a user namespace: no root needed)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -rm (user namespaces) to mount a folder read-only")
    command = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "autoloss.cli", *argv])
    return subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind -o ro {shlex.quote(str(folder))} "
                           f"{shlex.quote(str(folder))} && exec {command}"], capture_output=True, text=True,
                          timeout=300)


def test_a_finished_run_on_read_only_media_is_readable(finished_run, tmp_path):
    """'unable to open database file' before: a WAL store cannot get its index beside it there."""
    run = copy_run(finished_run, tmp_path / "dvd")
    assert not (run / "run.sqlite-wal").exists()
    before = digest(run / "run.sqlite")
    result = _read_only(run, "report", run, "--out", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report" / "report.md").is_file()
    exported = _read_only(run, "export", run, "--include-worse", "--include-unconfirmed", "--out", tmp_path / "m.py")
    assert exported.returncode == 0, exported.stderr
    assert digest(run / "run.sqlite") == before and sorted(p.name for p in run.iterdir()) == ["run.sqlite"]


def test_an_export_into_a_read_only_folder_is_one_line(finished_run, tmp_path):
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    result = _read_only(shelf, "export", finished_run, "--include-worse", "--include-unconfirmed",
                        "--out", shelf / "module.py")
    assert_clean_error(result, str(shelf / "module.py"), "read-only")


def test_every_writer_of_a_users_file_writes_atomically():
    """write_text, torch.save(obj, path), savefig(path) empty or leave a fragment on a full disk: files a
    user reads go through autoloss.files.write_atomic. Allowed: the heartbeat (temp + rename itself:
    engine/ imports nothing of autoloss), a write probe, and the demo data written under a manifest that
    says "incomplete" until the last file is in (autoloss/tracking/synthetic.py)."""
    import re

    allowed = {("engine/heartbeat.py", "tmp.write_text("), ("detection/coco.py", 'probe.write_text("")')}
    pattern = re.compile(r"\.write_text\(|\.write_bytes\(|torch\.save\((?!\w+, file\))|savefig\((?!file\b)|"
                         r"open\([^)]*[\"']wb?[\"']")
    root = Path(__file__).parents[1] / "autoloss"
    found = []
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root).as_posix()
        if name in ("files.py", "tracking/synthetic.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and not any(name == n and text in line for n, text in allowed):
                found.append(f"{name}:{number}: {line.strip()}")
    assert found == []


# ---------------------------------------------------------------------------- issue 21, point 9: no warning first


def test_a_pickle_as_backbone_checkpoint_is_one_line_without_torchs_warning(tmp_path):
    """torch's weights-only unpickler warned "Detected pickle protocol 4" before the error line (once per
    process, hence a real one); the pickle never runs and nothing is written."""
    import pickle

    marker = tmp_path / "EXECUTED"

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(Planted(), protocol=4))
    out = tmp_path / "run"
    result = autoloss("search", "--tracker", "dimp_small", "--demo", "--backbone-checkpoint", evil, "--out", out,
                      "--quiet")
    assert_clean_error(result, str(evil), "not a PyTorch checkpoint")
    assert not marker.exists() and not out.exists()
