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
from hostile_files import png_claiming
from test_space import HOSTILE_FILES

from autoloss.cli import main
from autoloss.errors import UserError

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


# ------------------------------------------------------------------ the tracker side (issue 21, points 4, 5, 9)

TRACKER_TINY = {"channels": 8, "crop_size": 64, "baseline_steps": 3, "baseline_batch": 1, "steps": 4, "batch": 2,
                "pool": 2, "track_iterations": 3, "init_shifts": 1, "weights_sequences": 2, "holdout_sequences": 2,
                "test_sequences": 2, "verify_sequences": 2, "sequence_frames": 6, "frame_size": 64}
TRACKER_OPTIONS = [arg for key, value in TRACKER_TINY.items() for arg in ("--tracker-option", f"{key}={value}")]


def _refused_before_anything_is_written(capsys, argv: list[str], out: Path, *words: str) -> str:
    """``autoloss ARGV`` in this process: exit 2, one line holding WORDS, no warning, and OUT never made."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning (PIL's, numpy's, torch's) would come before the error line
        for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", hidden)  # what Python does not print by default
        code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    line = _one_line_error(captured.err, *words)
    assert not out.exists(), sorted(p.name for p in out.iterdir())  # no run folder, no run.lock
    return line


@pytest.fixture(scope="module")
def tracking_data(tmp_path_factory):
    """Four GOT-10k-layout roles of 2 sequences of 6 frames (64 px); tests copy it before damaging it."""
    from autoloss.tracking.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("tracking") / "data"
    generate_dataset(root, {"weights": 2, "architecture": 0, "holdout": 2, "verify": 2, "test": 2}, 6, 64, 0)
    return root




def _weights_sequences(data: Path) -> list[Path]:
    return [data / "weights" / name for name in (data / "weights" / "list.txt").read_text().split()]


def _bomb(data: Path) -> None:
    (_weights_sequences(data)[0] / "00000002.jpg").write_bytes(png_claiming(30000, 30000))


def _one_frame_each(data: Path) -> None:
    for role in ("weights", "verify", "holdout", "test"):
        for name in (data / role / "list.txt").read_text().split():
            sequence = data / role / name
            for frame in sorted(sequence.glob("0*.jpg"))[1:]:
                frame.unlink()
            for label in ("groundtruth.txt", "cover.label", "absence.label", "cut_by_image.label"):
                if (sequence / label).exists():
                    (sequence / label).write_text((sequence / label).read_text().splitlines()[0] + "\n")


def _target_hidden_after_the_first_frame(data: Path) -> None:
    for sequence in _weights_sequences(data):
        count = len(list(sequence.glob("0*.jpg")))
        (sequence / "cover.label").write_text("\n".join(["8"] + ["0"] * (count - 1)) + "\n")
        (sequence / "absence.label").write_text("\n".join(["0"] + ["1"] * (count - 1)) + "\n")


@pytest.mark.parametrize("damage, words", [
    (_bomb, ["00000002.jpg", "decompression bomb"]),
    (_one_frame_each, ["no sequence has two frames with the target visible"]),
    (_target_hidden_after_the_first_frame, ["weights", "no sequence has two frames with the target visible"]),
], ids=["30000x30000-png-header", "one-frame-sequences", "target-visible-once"])
def test_bad_tracking_data_is_one_line_before_anything_is_written(tmp_path, capsys, tracking_data, damage, words):
    data = tmp_path / "data"
    shutil.copytree(tracking_data, data)
    damage(data)
    out = tmp_path / "run"
    _refused_before_anything_is_written(capsys, ["search", "--tracker", "dimp_small", "--data", data, "--out", out,
                                                 *TRACKER_OPTIONS, "--quiet"], out, *words)


@pytest.mark.parametrize("option", [
    "crop_size=0", "baseline_lr=-1", "data_seed=-1", "seed=1180591620717411303424", "filter_size=99", "frames=1000",
    "baseline_batch=100000", "sigma_factor=0", "track_iterations=-1", "max_gap=0", "depth=7", "frame_size=0",
    "sequence_frames=1", "filter_size=9", "depth=20", "lr=nan", "mos_steps=0", "mos_sequences=10000000",
])
def test_tracker_options_out_of_range_are_refused_before_anything_is_written(tmp_path, capsys, option):
    """Each value the probe found (tracebacks, exhausted memory, AO 0 everywhere, or a refusal that left
    out/ and its run.lock behind): one line naming the option, and no out/ at all."""
    out = tmp_path / "out"
    _refused_before_anything_is_written(capsys, ["search", "--tracker", "dimp_small", "--demo", "--out", out,
                                                 "--tracker-option", option, "--quiet"], out, option.split("=")[0])


def test_settings_that_cannot_fit_in_memory_are_refused_with_the_estimate(tmp_path, capsys, monkeypatch):
    import autoloss.tracking.train as train

    out = tmp_path / "out"
    line = _refused_before_anything_is_written(
        capsys, ["search", "--tracker", "dimp_small", "--demo", "--out", out, "--tracker-option", "baseline_batch=4000",
                 "--quiet"], out, "GiB", "baseline_batch", "24000 crops of 128 px")
    assert "more than this machine's" in line
    # the machine's memory decides: the demo's own settings fit 24 GiB, not 100 MiB
    settings = train.TrackingSettings()
    assert train.check_memory(settings, 2, host=24 * train.GIB, gpu=0)["baseline"] < train.GIB
    with pytest.raises(UserError, match="GiB of host memory"):
        train.check_memory(settings, 2, host=100 << 20, gpu=0)
    monkeypatch.setattr(train, "machine_memory", lambda: 100 << 20)
    monkeypatch.setattr(train.torch.cuda, "is_available", lambda: False)
    _refused_before_anything_is_written(capsys, ["search", "--tracker", "dimp_small", "--demo", "--out", out, "--quiet"],
                                        out, "more than this machine's 0.1 GiB")


@pytest.mark.parametrize("extra, words", [
    (["--strategy", "ms-darts", "--ms-h", "1e-300"], ["--ms-h"]),
    (["--strategy", "ms-darts", "--ms-temperature", "1e-300"], ["--ms-temperature"]),
    (["--strategy", "darts", "--weight-lr", "1e9"], ["--weight-lr"]),
    (["--strategy", "darts", "--arch-lr", "1e9"], ["--arch-lr"]),
    (["--strategy", "darts2", "--holdout-batches", "1000000"], ["--holdout-batches 1000000", "at most 240"]),
], ids=["ms-h", "ms-temperature", "weight-lr", "arch-lr", "holdout-batches"])
def test_differentiable_options_out_of_range_are_refused_before_anything_is_written(tmp_path, capsys, extra, words):
    out = tmp_path / "out"
    _refused_before_anything_is_written(capsys, ["search", "--tracker", "dimp_small", "--demo", "--out", out, *extra,
                                                 "--quiet"], out, *words)


def test_every_echoed_input_is_cut_to_a_sane_length(tmp_path, capsys):
    """A 7.9 MB genotype was echoed whole in its error line; argparse echoes a bad choice whole."""
    from autoloss.cli import MAX_MESSAGE

    genotype = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
                "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
                "normal_concat=range(2, 999999))")
    out = tmp_path / "eval"
    line = _refused_before_anything_is_written(capsys, ["evaluate", "--tracker", "dimp_small", "--demo", "--cell",
                                                        genotype, "--out", out, "--quiet"], out, "range(2, 999999)")
    assert len(line) < 300
    with pytest.raises(SystemExit) as exited:  # argparse's usage errors exit from parse_args
        main(["search", "--strategy", "x" * 100_000])
    assert exited.value.code == 2
    line = _one_line_error(capsys.readouterr().err, "--strategy", "characters cut")
    assert len(line) <= MAX_MESSAGE + 100 and line.endswith("(see --help)")


def test_a_unicode_digit_is_not_an_input_index():
    """U+0661 (ARABIC-INDIC DIGIT ONE) was read as input 1; digits are ASCII, as in loss expressions."""
    from autoloss.cell.genotype import parse_genotype

    text = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', \u0661), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)])")
    with pytest.raises(UserError, match="unexpected character '\u0661'"):
        parse_genotype(text)
    assert parse_genotype(text.replace("\u0661", "1")).normal[1] == ("sep_conv_3x3", 1)


# ---------------------------------------------------------------------------- a user's files where a demo writes


@pytest.mark.parametrize("argv, where", [
    (["search", "--detector", "faster_rcnn", "--demo"], "data"),
    (["search", "--tracker", "dimp_small", "--demo", "--quiet"], "data/weights"),
])
def test_a_demo_never_overwrites_a_users_data(tmp_path, capsys, argv, where):
    """The detection demo deleted the user's images and overwrote their annotations in OUT/data; both demos
    now follow one rule: a folder that is not empty and not autoloss's own is refused, left as it was."""
    proj = tmp_path / "proj"
    mine = {proj / where / "annotations" / "instances_train.json": b'{"mine": true}',
            proj / where / "train" / "000000.png": b"my image", proj / where / "list.txt": b"my list\n"}
    for path, content in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    assert main([*argv, "--out", str(proj)]) == 2
    _one_line_error(capsys.readouterr().err, str(proj / where), "not empty and not ours")
    assert {p: p.read_bytes() for p in mine} == mine
    assert sorted(str(p.relative_to(proj)) for p in proj.rglob("*") if p.is_file()) == \
        sorted(str(p.relative_to(proj)) for p in mine)


# ---------------------------------------------------------------------------- paths


LONG = "x" * 300  # a path component over 255 bytes: "File name too long"


@pytest.mark.parametrize("argv", [
    ["search", "--task", "noisy-digits", *TINY, "--out", "{tmp}/" + LONG],
    ["search", "--task", "noisy-digits", *TINY, "--out", "{tmp}/" + LONG + "/run"],
    ["report", "{run}", "--out", "{tmp}/" + LONG],
    ["export", "{run}", "--include-worse", "--include-unconfirmed", "--out", "{tmp}/" + LONG + ".py"],
    ["export", "{run}", "--include-worse", "--include-unconfirmed", "--out", "{tmp}/" + LONG + "/m.py"],
    ["export", "{run}", "--include-worse", "--include-unconfirmed", "--out", "{tmp}/" + "m" * 250 + ".py"],
    ["report", "{tmp}/" + LONG],
    ["export", "{tmp}/" + LONG],
])
def test_a_file_name_over_255_bytes_is_one_line(tmp_path, capsys, argv):
    from test_export import make_run  # a loss run store, made in this process

    run = make_run(tmp_path / "run", [(-1, "Neg(Dot(Mul(Y,W),Log(Softmax(X))))", 0.30, None),
                                      (0, "Neg(Dot(Y,Log(Softmax(X))))", 0.35, None)])
    assert main([a.format(tmp=tmp_path, run=run) for a in argv]) == 2
    _one_line_error(capsys.readouterr().err, "too long")
    assert not list(tmp_path.glob("x*")) and not list(tmp_path.glob("m*"))


def test_a_differentiable_search_without_an_architecture_split_is_refused_before_anything_is_written(
        tmp_path, capsys, tracking_data):
    """It was refused after the baseline had been trained and the run store made (a rerun then said
    "already holds a run")."""
    data = tmp_path / "data"
    shutil.copytree(tracking_data, data)
    (data / "weights" / "synthetic.json").unlink()  # not ours: no architecture split is written into it
    out = tmp_path / "run"
    _refused_before_anything_is_written(capsys, ["search", "--tracker", "dimp_small", "--data", data, "--out", out,
                                                 *TRACKER_OPTIONS, "--strategy", "darts", "--holdout-batches", "2",
                                                 "--quiet"], out, "architecture", "list.txt")
