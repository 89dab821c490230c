"""The GOT-10k metrics against the GOT-10k toolkit's own code (PyPI ``got10k``) on the same files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from got10k.experiments import ExperimentGOT10k  # the toolkit (dev extras), in tests only
from got10k.utils import metrics as toolkit_metrics

from autoloss.errors import UserError
from autoloss.tracking.dataset import read_sequences
from autoloss.tracking.metrics import (
    THRESHOLDS,
    clip_boxes,
    got10k_scores,
    iou,
    read_results,
    score_results,
    sequence_ious,
    write_results,
)
from autoloss.tracking.synthetic import split_settings, write_sequences

SIZE = 64


def _predictions(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """Ground truth plus noise, some frames far off, some boxes reaching out of the image."""
    pred = gt + rng.normal(0, 2.0, size=gt.shape) * np.array([1, 1, 0.5, 0.5])
    pred[:, 2:] = np.abs(pred[:, 2:])
    far = rng.random(len(gt)) < 0.2
    pred[far] = rng.uniform([0, 0, 4, 4], [SIZE, SIZE, 30, 30], size=(int(far.sum()), 4))
    out = rng.random(len(gt)) < 0.15
    pred[out, :2] -= 25  # partly or wholly left of / above the image: clipping matters
    pred[[1, -1]] = gt[[1, -1]] + [0, 0, SIZE, SIZE]  # overlaps the target, reaches past both borders
    return pred


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A small val split with occlusion, our tracker's results in the toolkit layout, and the
    toolkit's own report on them."""
    root = tmp_path_factory.mktemp("got10k")
    settings = replace(split_settings("holdout", 5, 14, SIZE), occlusion_probability=1.0)
    write_sequences(root / "val", settings, "holdout", seed=1)
    sequences = read_sequences(root, "val")
    assert any((s.cover == 0).any() for s in sequences)  # some frames fully hidden
    assert any(((s.cover > 0) & (s.cover < 8)).any() for s in sequences)
    rng = np.random.default_rng(7)
    tracker_dir = root / "results" / "GOT-10k" / "ours"
    predictions, times = {}, {}
    for sequence in sequences:
        predictions[sequence.name] = _predictions(rng, sequence.boxes)
        times[sequence.name] = rng.uniform(0.005, 0.05, size=len(sequence.boxes))
        times[sequence.name][0] = 0.0  # the toolkit drops non-positive times
        write_results(tracker_dir, sequence.name, predictions[sequence.name], times[sequence.name])
    experiment = ExperimentGOT10k(
        str(root), subset="val", result_dir=str(root / "results"), report_dir=str(root / "reports")
    )
    report = experiment.report(["ours"])["ours"]
    return sequences, tracker_dir, report


def test_scores_match_the_toolkit_on_the_same_files(evaluated):
    sequences, tracker_dir, report = evaluated
    entries, times = [], []
    for sequence in sequences:
        boxes, seconds = read_results(tracker_dir, sequence.name)
        entries.append((boxes, sequence.boxes, sequence.visible(), sequence.image_size))
        times.append(seconds)
    ours = got10k_scores(entries, times)
    overall = report["overall"]
    assert ours["ao"] == pytest.approx(overall["ao"], abs=1e-6)
    assert ours["sr50"] == pytest.approx(overall["sr"], abs=1e-6)
    np.testing.assert_allclose(ours["curve"], overall["succ_curve"], atol=1e-6)
    assert ours["sr75"] == pytest.approx(overall["succ_curve"][75], abs=1e-6)
    assert ours["speed_fps"] == pytest.approx(overall["speed_fps"], rel=1e-6)
    for sequence, sequence_ao in zip(sequences, ours["sequence_ao"]):
        assert sequence_ao == pytest.approx(report["seq_wise"][sequence.name]["ao"], abs=1e-6)
    # The scores are not trivial: far-off frames pull them well away from 0 and 1.
    assert 0.2 < ours["ao"] < 0.9 and 0.1 < ours["sr75"] < ours["sr50"] < 1
    assert ours["frames"] == sum(int(s.visible()[1:].sum()) for s in sequences)
    assert ours["frames"] < sum(len(s) - 1 for s in sequences)  # hidden frames are left out


def test_score_results_reads_the_folder_as_the_toolkit(evaluated):
    sequences, tracker_dir, report = evaluated
    ours = score_results(sequences, tracker_dir)
    assert ours["ao"] == pytest.approx(report["overall"]["ao"], abs=1e-6)
    np.testing.assert_allclose(ours["curve"], report["overall"]["succ_curve"], atol=1e-6)
    assert ours["speed_fps"] == pytest.approx(report["overall"]["speed_fps"], rel=1e-6)
    with pytest.raises(UserError, match="no results for sequence"):
        score_results(sequences, tracker_dir.parent / "nobody")


def test_iou_matches_the_toolkits_rect_and_polygon_iou():
    rng = np.random.default_rng(3)
    a = np.column_stack([rng.uniform(-30, 90, (500, 2)), rng.uniform(0.5, 60, (500, 2))])
    b = np.column_stack([rng.uniform(-30, 90, (500, 2)), rng.uniform(0.5, 60, (500, 2))])
    b[:100] = a[:100] + rng.normal(0, 3, (100, 4)) * [1, 1, 0, 0]  # many overlapping pairs
    ours = iou(clip_boxes(a, (SIZE, SIZE)), clip_boxes(b, (SIZE, SIZE)))
    np.testing.assert_allclose(ours, toolkit_metrics.rect_iou(a.copy(), b.copy(), bound=(SIZE, SIZE)), atol=1e-12)
    np.testing.assert_allclose(iou(a, b), toolkit_metrics.poly_iou(a, b), atol=1e-6)
    # The toolkit's rect_iou (what its GOT-10k evaluation uses) moves a box starting left of or
    # above the image to 0 keeping its size, where poly_iou cuts it: they agree only on boxes
    # starting inside the image.
    inside = (a[:, :2] >= 0).all(axis=1) & (b[:, :2] >= 0).all(axis=1)
    polygons = toolkit_metrics.poly_iou(a, b, bound=(SIZE, SIZE))
    np.testing.assert_allclose(ours[inside], polygons[inside], atol=1e-6)
    assert np.abs(ours[~inside] - polygons[~inside]).max() > 0.1
    assert (ours[:100] > 0).mean() > 0.5


def test_iou_by_hand():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    others = np.array([[5.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 5.0, 5.0]])
    np.testing.assert_allclose(iou(boxes, others), [50 / 150, 1.0, 0.0])
    # Clipping to a 12 x 12 image: the second box loses its part beyond x = 12 (5..12 wide 7).
    np.testing.assert_allclose(clip_boxes(others[:1], (12, 12)), [[5.0, 0.0, 7.0, 10.0]])
    # As the toolkit does, a box starting left of the image moves to x = 0 with its width kept.
    np.testing.assert_allclose(clip_boxes(np.array([[-5.0, -2.0, 10.0, 20.0]]), (12, 12)), [[0.0, 0.0, 10.0, 12.0]])


def test_first_frame_and_hidden_frames_do_not_count():
    gt = np.array([[10.0, 10.0, 20.0, 20.0]] * 5)
    pred = gt.copy()
    pred[2] = [40.0, 40.0, 10.0, 10.0]  # IoU 0
    visible = np.array([True, True, True, False, True])
    ious = sequence_ious(pred, gt, visible, (64, 64))
    np.testing.assert_allclose(ious, [1.0, 0.0, 1.0])
    moved_first = pred.copy()
    moved_first[0] = [0.0, 0.0, 1.0, 1.0]
    moved_hidden = pred.copy()
    moved_hidden[3] = [0.0, 0.0, 1.0, 1.0]
    for changed in (moved_first, moved_hidden):
        np.testing.assert_array_equal(sequence_ious(changed, gt, visible, (64, 64)), ious)
    scores = got10k_scores([(pred, gt, visible, (64, 64))])
    assert scores["ao"] == pytest.approx(2 / 3)
    assert scores["curve"][0] == pytest.approx(2 / 3)  # success is IoU strictly above the threshold
    assert len(scores["curve"]) == 101 and np.array_equal(THRESHOLDS, np.linspace(0, 1, 101))
    assert "speed_fps" not in scores


def test_frames_are_pooled_not_sequences_averaged():
    gt_long = np.array([[0.0, 0.0, 10.0, 10.0]] * 9)
    gt_short = np.array([[0.0, 0.0, 10.0, 10.0]] * 3)
    miss = np.array([[30.0, 30.0, 10.0, 10.0]])
    long_entry = (gt_long.copy(), gt_long, np.ones(9, bool), (64, 64))  # 8 frames of IoU 1
    short_entry = (np.vstack([gt_short[:1], miss, miss]), gt_short, np.ones(3, bool), (64, 64))  # 2 of 0
    scores = got10k_scores([long_entry, short_entry])
    assert scores["ao"] == pytest.approx(8 / 10)
    assert scores["sequence_ao"] == pytest.approx([1.0, 0.0])


def test_unscorable_input():
    gt = np.array([[0.0, 0.0, 10.0, 10.0], [np.nan] * 4])
    with pytest.raises(ValueError, match="ground truth is unknown"):
        sequence_ious(np.zeros((2, 4)), gt, np.ones(2, bool), (64, 64))
    with pytest.raises(ValueError, match="no visible frames"):
        got10k_scores([(np.zeros((2, 4)), np.zeros((2, 4)), np.array([True, False]), (64, 64))])
    with pytest.raises(ValueError, match="must both be"):
        sequence_ious(np.zeros((3, 4)), np.zeros((2, 4)), np.ones(2, bool), (64, 64))


def test_results_round_trip_and_bad_files(tmp_path):
    boxes = np.array([[1.25, 2.5, 30.0, 40.125], [3.0, 4.0, 5.0, 6.0]])
    times = np.array([0.01, 0.02])
    path = write_results(tmp_path, "seq", boxes, times)
    assert path == tmp_path / "seq" / "seq_001.txt"
    assert path.read_text().splitlines()[0] == "1.250,2.500,30.000,40.125"
    read_boxes, read_times = read_results(tmp_path, "seq")
    np.testing.assert_allclose(read_boxes, boxes, atol=1e-3)
    np.testing.assert_allclose(read_times, times)
    path.write_text("1,2,3\n")
    with pytest.raises(UserError, match="seq_001.txt line 1: expected 4 values"):
        read_results(tmp_path, "seq")
    path.write_text("1,2,x,4\n")
    with pytest.raises(UserError, match="is not a row of numbers"):
        read_results(tmp_path, "seq")
    with pytest.raises(UserError, match="is missing"):
        read_results(tmp_path, "other")
