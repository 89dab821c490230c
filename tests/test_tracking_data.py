"""The GOT-10k-layout reader and the synthetic sequence generator."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from got10k.datasets import GOT10k  # the toolkit (dev extras), in tests only
from hostile_files import png_claiming
from PIL import Image

from autoloss.errors import UserError
from autoloss.tracking.dataset import load_frame, read_sequence, read_sequences
from autoloss.tracking.synthetic import (
    SPLITS,
    SyntheticSettings,
    generate_dataset,
    generate_split,
    make_sequence,
    sequence_seed,
    split_settings,
    write_sequences,
)

FRAMES = 8
SIZE = 64


@pytest.fixture(scope="module")
def small_split(tmp_path_factory) -> Path:
    """A written split of 3 sequences, 8 frames, 64 px; tests copy it before changing it."""
    root = tmp_path_factory.mktemp("tracking")
    generate_split(root, "weights", sequences=3, frames=FRAMES, size=SIZE, seed=0)
    return root


@pytest.fixture
def split_copy(small_split, tmp_path) -> Path:
    """A private copy of the small split's folder (root/weights)."""
    target = tmp_path / "data"
    shutil.copytree(small_split, target)
    return target


def _files(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# ----------------------------------------------------------------------------------- generator


def test_reader_accepts_what_the_generator_writes(small_split):
    sequences = read_sequences(small_split, "weights")
    settings = split_settings("weights", 3, FRAMES, SIZE)
    assert [s.name for s in sequences] == [f"SYN_weights_{i:06d}" for i in (1, 2, 3)]
    for index, sequence in enumerate(sequences):
        drawn = make_sequence(settings, "weights", index, seed=0)
        assert len(sequence.frames) == FRAMES
        assert [p.name for p in sequence.frames] == [f"{i:08d}.jpg" for i in range(1, FRAMES + 1)]
        assert sequence.image_size == (SIZE, SIZE)
        np.testing.assert_allclose(sequence.boxes, drawn.boxes, atol=1e-4)
        np.testing.assert_array_equal(sequence.cover, drawn.cover)
        np.testing.assert_array_equal(sequence.absent, drawn.absent)
        np.testing.assert_array_equal(sequence.visible(), drawn.cover > 0)
        frame = load_frame(sequence.frames[0])
        assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
        # JPEG keeps the drawn picture closely.
        assert np.abs(frame.astype(float) - drawn.frames[0]).mean() < 5


def test_the_toolkit_dataset_accepts_the_generated_folder(tmp_path):
    generate_split(tmp_path, "test", sequences=2, frames=FRAMES, size=SIZE, folder="val")
    dataset = GOT10k(str(tmp_path), subset="val", return_meta=True)
    ours = read_sequences(tmp_path, "val")
    assert len(dataset) == 2
    for index, sequence in enumerate(ours):
        img_files, anno, meta = dataset[index]
        assert [Path(f).name for f in img_files] == [p.name for p in sequence.frames]
        np.testing.assert_allclose(anno, sequence.boxes)
        assert meta["resolution"] == f"({SIZE}, {SIZE})"
        np.testing.assert_array_equal(meta["cover"], sequence.cover)
        np.testing.assert_array_equal(meta["absence"].astype(bool), sequence.absent)


def test_generation_is_byte_identical_and_reused(tmp_path):
    first = generate_split(tmp_path / "a", "holdout", sequences=2, frames=6, size=SIZE, seed=3)
    second = generate_split(tmp_path / "b", "holdout", sequences=2, frames=6, size=SIZE, seed=3)
    assert _files(first) == _files(second)
    assert len(_files(first)) == 1 + 1 + 2 * (6 + 5)  # list.txt, manifest, frames + 5 text files each
    stamp = (first / "list.txt").stat().st_mtime_ns
    assert generate_split(tmp_path / "a", "holdout", sequences=2, frames=6, size=SIZE, seed=3) == first
    assert (first / "list.txt").stat().st_mtime_ns == stamp  # found complete, not rewritten
    other = generate_split(tmp_path / "a", "holdout", sequences=2, frames=6, size=SIZE, seed=4)
    assert _files(other) != _files(second)  # other parameters replace our own folder


def test_generator_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not empty"):
        generate_split(tmp_path, "weights", sequences=1, frames=4, size=SIZE)
    assert (tmp_path / "weights" / "precious.txt").read_text() == "keep me"


def test_split_seeds_are_disjoint():
    seeds = {sequence_seed(0, split, i).generate_state(4).tobytes() for split in SPLITS for i in range(20)}
    assert len(seeds) == len(SPLITS) * 20
    frames, first_boxes = {}, []
    for split in SPLITS:
        settings = split_settings(split, 4, 4, SIZE)
        for index in range(4):
            sequence = make_sequence(settings, split, index, seed=0)
            key = hashlib.sha256(sequence.frames.tobytes()).hexdigest()
            assert key not in frames, f"{split} {index} repeats {frames.get(key)}"
            frames[key] = (split, index)
            assert not any(np.allclose(sequence.boxes[0], box) for box in first_boxes)
            first_boxes.append(sequence.boxes[0])


def test_holdout_moves_faster_with_more_distractors():
    def mean_speed(split):
        settings = split_settings(split, 1, 20, SIZE)
        steps = [
            np.linalg.norm(np.diff(make_sequence(settings, split, i).boxes[:, :2], axis=0), axis=1).mean()
            for i in range(10)
        ]
        return float(np.mean(steps))

    assert split_settings("holdout", 1, 2).distractors > split_settings("weights", 1, 2).distractors
    assert mean_speed("holdout") > 1.4 * mean_speed("weights")
    assert split_settings("test", 5, 9) == split_settings("weights", 5, 9)


def test_occlusion_labels_match_the_drawn_pixels():
    settings = replace(split_settings("weights", 1, 16, SIZE), occlusion_probability=1.0, distractors=0)
    hidden_seen = partial_seen = 0
    for index in range(6):
        drawn = make_sequence(settings, "weights", index)
        without = make_sequence(settings, "weights", index, draw_target=False)
        np.testing.assert_array_equal(drawn.boxes, without.boxes)
        assert drawn.cover[0] == 8 and not drawn.absent[0]  # the initialisation frame is clear
        np.testing.assert_array_equal(drawn.absent, drawn.cover == 0)
        for t in range(settings.frames):
            x, y, w, h = drawn.boxes[t]
            window = (slice(int(np.ceil(y)), int(y + h)), slice(int(np.ceil(x)), int(x + w)))
            difference = np.abs(drawn.frames[t][window].astype(int) - without.frames[t][window]).max(axis=-1)
            changed = float((difference > 2).mean())
            # The share of the box whose pixels the target changes is the visible share.
            assert abs(changed - drawn.visible_fraction[t]) < 0.2, (index, t, changed, drawn.visible_fraction[t])
            assert drawn.cover[t] == (0 if drawn.visible_fraction[t] < 0.02 else max(1, round(8 * drawn.visible_fraction[t])))
            if drawn.cover[t] == 0:
                hidden_seen += 1
                assert changed < 0.05
            elif drawn.cover[t] < 8:
                partial_seen += 1
    assert hidden_seen > 0 and partial_seen > 0


def test_generate_dataset_writes_every_split(tmp_path):
    written = generate_dataset(tmp_path, sizes={split: 1 for split in SPLITS} | {"verify": 0}, frames=3, size=32)
    assert set(written) == set(SPLITS) - {"verify"}
    for split, folder in written.items():
        assert folder == tmp_path / split
        assert [s.name for s in read_sequences(tmp_path, split)] == [f"SYN_{split}_000001"]
    with pytest.raises(UserError, match="unknown synthetic tracking split"):
        generate_dataset(tmp_path, sizes={"train": 1})


def test_synthetic_settings_refuse_nonsense():
    with pytest.raises(UserError, match="frames must be >= 2"):
        SyntheticSettings(frames=1)
    with pytest.raises(UserError, match="occlusion_probability"):
        SyntheticSettings(occlusion_probability=1.5)


def test_generation_is_fast(tmp_path):
    import time

    start = time.perf_counter()
    write_sequences(tmp_path / "fast", replace(SyntheticSettings(), sequences=10, frames=30, size=128), "weights")
    assert time.perf_counter() - start < 10  # 40 x 30 frames of 128 px take ~4x this, well under 30 s


# -------------------------------------------------------------------------------------- reader


def _one_line_error(call, *patterns):
    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for pattern in patterns:
        assert pattern in message, message
    return message


def _sequence_folder(root: Path, index: int = 0) -> Path:
    return root / "weights" / f"SYN_weights_{index + 1:06d}"


def test_not_a_got10k_folder(tmp_path):
    _one_line_error(lambda: read_sequences(tmp_path / "nowhere"), "does not exist")
    (tmp_path / "some_file.txt").write_text("x")
    _one_line_error(lambda: read_sequences(tmp_path), "is not a GOT-10k-layout folder", "list.txt")
    _one_line_error(lambda: read_sequences(tmp_path, "val"), "is not a GOT-10k-layout folder", "val")


def test_missing_sequence_folder(split_copy):
    with open(split_copy / "weights" / "list.txt", "a") as f:
        f.write("ghost\n")
    _one_line_error(lambda: read_sequences(split_copy, "weights"), "list.txt line 4", "ghost does not exist")


def test_bad_list_file(split_copy):
    (split_copy / "weights" / "list.txt").write_text("../etc\n")
    _one_line_error(lambda: read_sequences(split_copy, "weights"), "list.txt line 1", "plain sequence folder name")
    (split_copy / "weights" / "list.txt").write_text("")
    _one_line_error(lambda: read_sequences(split_copy, "weights"), "names no sequences")


def _rewrite_line(path: Path, number: int, text: str | None) -> None:
    lines = path.read_text().splitlines()
    if text is None:
        del lines[number - 1]
    else:
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "line, text, expected",
    [
        (FRAMES, None, f"has {FRAMES - 1} lines for {FRAMES} frames"),
        (3, "1.0,2.0,abc,4.0", "line 3: 'abc' is not a number"),
        (4, "1.0,2.0,3.0", "line 4: expected 4 values"),
        (5, "1.0,2.0,nan,4.0", "line 5: 'nan' is not a finite number"),
        (2, "1.0,2.0,-3.0,4.0", "line 2: negative width or height"),
        (6, "", "line 6: empty line"),
    ],
)
def test_malformed_groundtruth(split_copy, line, text, expected):
    groundtruth = _sequence_folder(split_copy) / "groundtruth.txt"
    _rewrite_line(groundtruth, line, text)
    _one_line_error(lambda: read_sequences(split_copy, "weights"), str(groundtruth), expected)


def test_first_line_only_groundtruth_is_the_test_split(split_copy):
    folder = _sequence_folder(split_copy)
    groundtruth = folder / "groundtruth.txt"
    first = groundtruth.read_text().splitlines()[0]
    groundtruth.write_text(first + "\n")
    for label in ("absence.label", "cover.label"):
        (folder / label).unlink()
    _one_line_error(lambda: read_sequence(folder), "has 1 lines for 8 frames")
    sequence = read_sequence(folder, allow_first_only=True)
    assert np.isfinite(sequence.boxes[0]).all() and np.isnan(sequence.boxes[1:]).all()
    assert not sequence.fully_annotated
    assert sequence.absent is None and sequence.cover is None and sequence.visible().all()
    (split_copy / "test").mkdir()
    shutil.move(str(folder), split_copy / "test" / folder.name)
    (split_copy / "test" / "list.txt").write_text(folder.name + "\n")
    assert read_sequences(split_copy, "test")[0].boxes.shape == (FRAMES, 4)  # allowed there by default


def test_frame_that_does_not_decode(split_copy):
    folder = _sequence_folder(split_copy, 1)
    (folder / "00000003.jpg").write_bytes(b"this is no jpeg")
    _one_line_error(lambda: read_sequences(split_copy, "weights"), "00000003.jpg", "does not decode")
    # A truncated JPEG passes the header check; the full decode names it.
    data = (folder / "00000002.jpg").read_bytes()
    (folder / "00000003.jpg").write_bytes(data[: len(data) // 2])
    sequence = read_sequences(split_copy, "weights")[1]
    _one_line_error(lambda: load_frame(sequence.frames[2]), "00000003.jpg", "does not decode")
    _one_line_error(lambda: load_frame(folder / "00000099.jpg"), "does not exist")


def test_frames_of_other_size_or_with_gaps(split_copy):
    folder = _sequence_folder(split_copy)
    Image.new("RGB", (SIZE + 2, SIZE)).save(folder / "00000004.jpg")
    _one_line_error(lambda: read_sequences(split_copy, "weights"), "00000004.jpg", "one size")
    (folder / "00000004.jpg").unlink()
    _one_line_error(lambda: read_sequences(split_copy, "weights"), "00000004.jpg is missing")


def test_box_outside_the_frame(split_copy):
    folder = _sequence_folder(split_copy)
    groundtruth = folder / "groundtruth.txt"
    _rewrite_line(groundtruth, 3, f"{SIZE + 5}.0,10.0,10.0,10.0")
    _one_line_error(lambda: read_sequences(split_copy, "weights"), "line 3", "outside the 64x64 frame")
    _rewrite_line(groundtruth, 3, "10.0,10.0,0.0,10.0")
    _one_line_error(lambda: read_sequences(split_copy, "weights"), "line 3", "non-positive width")
    # Where the target is hidden (cover 0) the box is not checked.
    cover = (folder / "cover.label").read_text().splitlines()
    cover[2] = "0"
    (folder / "cover.label").write_text("\n".join(cover) + "\n")
    assert read_sequences(split_copy, "weights")[0].visible()[2] == np.False_


@pytest.mark.parametrize(
    "label, change, expected",
    [
        ("cover.label", lambda lines: lines[:-1], f"has {FRAMES - 1} lines for {FRAMES} frames"),
        ("cover.label", lambda lines: ["9"] + lines[1:], "line 1: label 9 is outside 0..8"),
        ("absence.label", lambda lines: lines[:2] + ["2"] + lines[3:], "line 3: label 2 is outside 0..1"),
        ("absence.label", lambda lines: lines[:1] + ["0.5"] + lines[2:], "line 2: '0.5' is not an integer label"),
        ("cover.label", lambda lines: lines[:1] + ["x"] + lines[2:], "line 2: 'x' is not an integer label"),
    ],
)
def test_bad_label_files(split_copy, label, change, expected):
    path = _sequence_folder(split_copy, 2) / label
    path.write_text("\n".join(change(path.read_text().splitlines())) + "\n")
    _one_line_error(lambda: read_sequences(split_copy, "weights"), str(path), expected)


# ----------------------------------------------------------------------------------- a GOT-10k download


@pytest.fixture(scope="module")
def got10k_download(tmp_path_factory) -> Path:
    """A tiny download in GOT-10k's layout: train/ of 10 sequences, val/ of 2."""
    root = tmp_path_factory.mktemp("got10k")
    generate_split(root, "weights", sequences=10, frames=4, size=SIZE, folder="train")
    generate_split(root, "test", sequences=2, frames=4, size=SIZE, folder="val")
    return root


def test_a_got10k_download_is_carved_so_that_val_is_only_the_test(got10k_download, tmp_path):
    """Issue 24: verify, hold-out and test all read val/ (cells chosen and tested on one split), and a
    differentiable search found no architecture split. Now verify, hold-out and architecture are seeded,
    disjoint parts of train/, the weights split the rest, the test val/ alone; the run lists them."""
    import json

    from autoloss.commands.tracker import Prepared, carve
    from autoloss.tracking.problem import (ROLES, StageSettings, carve_download, check_data, is_got10k_download,
                                           resolve_splits)
    from autoloss.tracking.supernet_model import prepare_architecture_split
    from autoloss.tracking.train import TrackingSettings

    splits = resolve_splits(got10k_download)
    assert is_got10k_download(splits) and splits["test"] == "val"
    assert all(splits[role] != "val" for role in ROLES if role != "test")
    train = {s.name for s in read_sequences(got10k_download, "train")}
    val = [s.name for s in read_sequences(got10k_download, "val")]

    prepared = Prepared("dimp_small", TrackingSettings(), StageSettings(), got10k_download, splits)
    carve(prepared, tmp_path / "run", quiet=True)
    root = tmp_path / "run" / "splits"
    assert prepared.data_root == root and prepared.splits == {role: role for role in (*ROLES, "architecture")}
    parts = {role: [s.name for s in read_sequences(root, role)] for role in prepared.splits}
    assert parts["test"] == val
    carved = [set(parts[role]) for role in ("weights", "verify", "holdout", "architecture")]
    assert all(carved) and set().union(*carved) == train and sum(map(len, carved)) == len(train)  # disjoint, covering
    assert check_data(root, prepared.splits)["holdout"] == len(parts["holdout"])
    manifest = json.loads((root / "carve.json").read_text())
    assert manifest["seed"] == 0 and manifest["sequences"] == {role: parts[role] for role in manifest["sequences"]}
    # The frames are the download's, through links: nothing copied.
    assert read_sequences(root, "holdout")[0].frames[0].resolve().parent.parent == (got10k_download / "train").resolve()
    # A differentiable search's architecture split is there now.
    prepare_architecture_split({"data_root": str(root), "splits": prepared.splits, "settings": {}})

    # Seeded: the same seed carves the same parts again (re-used), another seed other parts (refused here).
    again, _ = carve_download(got10k_download, tmp_path / "run", seed=0)
    assert again == root and [s.name for s in read_sequences(root, "verify")] == parts["verify"]
    other, _ = carve_download(got10k_download, tmp_path / "other", seed=1)
    assert any([s.name for s in read_sequences(other, role)] != parts[role] for role in ("verify", "holdout",
                                                                                          "architecture"))
    _one_line_error(lambda: carve_download(got10k_download, tmp_path / "run", seed=1), str(root),
                    "with seed 0", "not overwritten")


def test_a_download_too_small_to_carve_is_one_line(tmp_path):
    from autoloss.tracking.problem import carve_plan

    assert sorted(len(v) for v in carve_plan([f"s{i}" for i in range(4)], 0).values()) == [1, 1, 1, 1]
    plan = carve_plan([f"s{i}" for i in range(10_000)], 3)
    assert {role: len(names) for role, names in plan.items()} == {"verify": 180, "holdout": 180, "architecture": 1000,
                                                                   "weights": 8640}
    _one_line_error(lambda: carve_plan(["a", "b", "c"], 0), "train/ of 3 sequence(s) is too small", "at least 4")


# ------------------------------------------------------------------ hostile data (issue 21, point 4)




@pytest.mark.parametrize("side", [30000, 10000])  # PIL: an error beyond 2 x its limit, a warning beyond it
def test_a_decompression_bomb_header_is_one_line_and_no_warning(split_copy, side):
    import warnings

    frame = _sequence_folder(split_copy) / "00000002.jpg"
    frame.write_bytes(png_claiming(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would be printed before the error line
        _one_line_error(lambda: read_sequences(split_copy, "weights"), "00000002.jpg", "decompression bomb")
        _one_line_error(lambda: load_frame(frame), "00000002.jpg", "decompression bomb")


def test_a_box_of_1e308_is_refused_without_a_numpy_warning(split_copy):
    import warnings

    _rewrite_line(_sequence_folder(split_copy) / "groundtruth.txt", 2, "1e308,1e308,1e308,1e308")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in add" came before the error line
        _one_line_error(lambda: read_sequences(split_copy, "weights"), "line 2", "outside")


def _all_roles(root: Path) -> Path:
    """Four roles (weights, verify, holdout, test) of 2 sequences of FRAMES frames each."""
    generate_dataset(root, {"weights": 2, "architecture": 0, "holdout": 2, "verify": 2, "test": 2}, FRAMES, SIZE, 0)
    return root


def _keep_first_frame(sequence: Path) -> None:
    for frame in sorted(sequence.glob("0*.jpg"))[1:]:
        frame.unlink()
    for name in ("groundtruth.txt", "cover.label", "absence.label", "cut_by_image.label"):
        path = sequence / name
        if path.exists():
            path.write_text(path.read_text().splitlines()[0] + "\n")


def _hide_after_first(sequence: Path) -> None:
    count = len(list(sequence.glob("0*.jpg")))
    (sequence / "cover.label").write_text("\n".join(["8"] + ["0"] * (count - 1)) + "\n")
    (sequence / "absence.label").write_text("\n".join(["0"] + ["1"] * (count - 1)) + "\n")


@pytest.mark.parametrize("damage", [_keep_first_frame, _hide_after_first])
def test_data_without_two_visible_frames_is_refused_by_the_data_check(tmp_path, damage):
    """The pair sampler needs one sequence with two frames where the target is visible: refused by the
    check that runs before anything is written (it was a ValueError from the sampler, after the run
    folder and its lock were made)."""
    from autoloss.tracking.problem import ROLES, check_data

    root = _all_roles(tmp_path / "data")
    splits = {role: role for role in ROLES}
    assert check_data(root, splits)["weights"] == 2
    for sequence in (root / "weights").iterdir():
        if sequence.is_dir():
            damage(sequence)
    _one_line_error(lambda: check_data(root, splits), "weights", "no sequence has two frames with the target visible")
