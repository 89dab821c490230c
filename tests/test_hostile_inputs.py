"""Hostile and malformed inputs at the command line: exit 2, one line on stderr, nothing executed.

The space files are those of test_space.HOSTILE_FILES; a few run in a child process under a 1 GiB
address-space limit (the "billion laughs" file once took 1.5 GB and 89 s), the rest through
``autoloss.cli.main`` in this process, which prints exactly what the command prints.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_space import HOSTILE_FILES

from autoloss.cli import main

MEMORY_LIMIT = 1 << 30
TINY = ["--population", "2", "--generations", "1", "--top-k", "1", "--parents", "1"]  # a search's smallest budget


def _run_limited(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m autoloss.cli ARGS`` in a child limited to MEMORY_LIMIT bytes of address space."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-m", "autoloss.cli", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit)


def _one_line_error(stderr: str, *words: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("autoloss: error: "), stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _write(tmp_path: Path, case: str) -> Path:
    content = HOSTILE_FILES[case][0]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("case", ["billion-laughs", "deep-flow-list"])
def test_space_bomb_at_the_command_line_within_a_memory_limit(tmp_path, case):
    """`autoloss check CEI --space FILE` refuses the worst files in a child limited to 1 GiB."""
    path = _write(tmp_path, case)
    result = _run_limited("check", "CEI", "--space", str(path))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout == ""
    _one_line_error(result.stderr, str(path))


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_space_file_refused_by_check(tmp_path, capsys, case):
    """Every hostile or malformed space file: `autoloss check` exits 2 with its one-line reason."""
    path = _write(tmp_path, case)
    assert main(["check", "CEI", "--space", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _one_line_error(captured.err, str(path), HOSTILE_FILES[case][1])


@pytest.mark.parametrize("case", ["billion-laughs", "second-iou-input", "duplicate-key", "binary"])
def test_space_file_refused_by_search(tmp_path, capsys, case):
    """`autoloss search --task noisy-digits --space FILE` exits 2 with the same line, evaluating nothing."""
    path = _write(tmp_path, case)
    out = tmp_path / "run"
    code = main(["search", "--task", "noisy-digits", "--space", str(path), *TINY, "--steps", "5",
                 "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    _one_line_error(captured.err, HOSTILE_FILES[case][1])


@pytest.mark.parametrize("target, words", [
    ("TMP", ["is a directory"]), ("/proc/self/mem", ["cannot be read"]), ("/dev/zero", ["not a regular file"]),
])
def test_special_paths_as_space_at_the_command_line(tmp_path, capsys, target, words):
    """A directory, /proc/self/mem or a device as --space: exit 2, one line saying what it is."""
    target = str(tmp_path) if target == "TMP" else target
    if not Path(target).exists():
        pytest.skip(f"{target} does not exist here")
    assert main(["check", "CEI", "--space", target]) == 2
    _one_line_error(capsys.readouterr().err, *words)


@pytest.mark.parametrize("expression, words", [
    ("Neg(Dot(Y,Mul(０２,Log(Softmax(X)))))", ["unexpected character '０'"]),
    ("Neg(Dot(Y,Mul(0x2,Log(Softmax(X)))))", ["malformed number '0x2'"]),
    ("Neg(Dot(Y,Mul(" + "9" * 19_000 + ",Log(Softmax(X)))))", ["(19,000 digits) is not in this space"]),
    ("__import__('os').system('touch MARKER')", ["unexpected character"]),
    ("Neg(Dot(Y,Log(Softmax(X))))\nextra", ["unexpected 'extra'"]),
])
def test_hostile_expression_at_the_command_line(tmp_path, capsys, monkeypatch, expression, words):
    """Malformed and hostile expressions exit 2 with one short line; nothing is run."""
    monkeypatch.chdir(tmp_path)
    assert main(["check", expression]) == 2
    captured = capsys.readouterr()
    line = _one_line_error(captured.err, *words)
    assert len(line) < 400
    assert not (tmp_path / "MARKER").exists()


# ------------------------------------------------------------------------------ broken COCO datasets

def _dataset(tmp_path_factory):
    from autoloss.detection.synthetic import make_synthetic_coco

    out = tmp_path_factory.mktemp("coco")
    make_synthetic_coco(out, num_train=8, num_val=4)
    return out


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    pytest.importorskip("mmdet")
    return _dataset(tmp_path_factory)


def _box_nan(coco):
    coco["annotations"][0]["bbox"][0] = float("nan")


def _image_1x1(coco):
    coco["images"][0].update(width=1, height=1)


def _no_width(coco):
    coco["images"][0].pop("width")


@pytest.mark.parametrize("mutate, image_bytes, words", [
    (_box_nan, None, ["annotation id 1", "not a finite number"]),
    (_image_1x1, None, ["is 1 x 1 pixels"]),
    (_no_width, None, ["needs a positive integer 'width' and 'height'"]),
    (None, b"GIF89a broken", ["cannot be decoded as an image"]),
], ids=["nan-box", "1x1-image", "no-width", "undecodable"])
def test_broken_dataset_refused_by_detector_search(tmp_path, capsys, coco_dir, mutate, image_bytes, words):
    """`autoloss search --detector faster_rcnn_small --data DIR`: exit 2, one line, no training started."""
    data = tmp_path / "data"
    shutil.copytree(coco_dir, data)
    ann = data / "annotations" / "instances_train.json"
    if mutate is not None:
        coco = json.loads(ann.read_text())
        mutate(coco)
        ann.write_text(json.dumps(coco))
    if image_bytes is not None:
        (data / "train" / "000000.png").write_bytes(image_bytes)
    out = tmp_path / "run"
    code = main(["search", "--detector", "faster_rcnn_small", "--branch", "cls", "--data", str(data), *TINY,
                 "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    _one_line_error(captured.err, "instances_train.json", *words)
    assert not list(out.glob("work/*/*/run.log"))  # nothing trained
