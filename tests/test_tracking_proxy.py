"""The tracking proxy end to end: tracker API and OPE, the baseline's cache, the search regime, evaluate_neck."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from autoloss.errors import UserError
from autoloss.tracking.dataset import read_sequences
from autoloss.tracking.synthetic import generate_split
from autoloss.tracking.tracker import ProxyTracker, StaticTracker, run_sequence
from autoloss.tracking.train import (
    TrackingSettings,
    evaluate_neck,
    load_baseline,
    make_tracker,
    train_baseline,
    train_search,
)

DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5])"
)
TINY = TrackingSettings(
    channels=8,
    crop_size=64,
    baseline_steps=3,
    baseline_batch=1,
    steps=4,
    batch=2,
    pool=2,
    track_iterations=3,
    init_shifts=1,
    threads=1,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    generate_split(root, "weights", sequences=2, frames=8, size=64)
    generate_split(root, "holdout", sequences=2, frames=6, size=64)
    return root


@pytest.fixture(scope="module")
def baseline(data_root):
    return train_baseline(TINY, data_root, data_root / "baseline.pt")


def test_settings_round_trip_and_refuse_unknown_or_bad_knobs():
    assert TrackingSettings.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(UserError, match="unknown tracking settings"):
        TrackingSettings.from_dict({**TINY.to_dict(), "no_such_knob": 1})
    with pytest.raises(UserError, match="multiple of 16"):
        TrackingSettings(crop_size=100)


def test_the_tracker_api_on_a_short_synthetic_sequence(data_root, baseline):
    torch.set_num_threads(1)
    sequence = read_sequences(data_root, "holdout")[0]
    tracker = make_tracker(load_baseline(TINY, baseline), TINY)
    assert isinstance(tracker, ProxyTracker)
    frame = Image.open(sequence.frames[0])
    tracker.init(frame, sequence.boxes[0])
    box = tracker.update(np.asarray(Image.open(sequence.frames[1]).convert("RGB")))
    width, height = sequence.image_size
    assert box.shape == (4,) and np.all(np.isfinite(box)) and np.all(box[2:] >= 4)
    assert 0 <= box[0] + box[2] / 2 <= width and 0 <= box[1] + box[3] / 2 <= height
    boxes, times = run_sequence(tracker, sequence)
    assert boxes.shape == (len(sequence), 4) and times.shape == (len(sequence),)
    assert np.array_equal(boxes[0], sequence.boxes[0]) and np.all(times > 0)
    again, _ = run_sequence(tracker, sequence)
    assert np.array_equal(boxes, again)
    static, _ = run_sequence(StaticTracker(), sequence)
    assert np.all(static == sequence.boxes[0])


def test_the_baseline_is_cached_while_its_settings_match(data_root, baseline):
    stamp = baseline.stat().st_mtime_ns
    assert train_baseline(TINY, data_root, baseline) == baseline
    assert baseline.stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="other settings"):
        load_baseline(TrackingSettings(**{**TINY.to_dict(), "channels": 4}), baseline)


def test_the_search_regime_freezes_backbone_and_size_head(data_root, baseline):
    before = load_baseline(TINY, baseline)
    net, losses = train_search(TINY, data_root, baseline, DARTS_V2, seed=0)
    assert len(losses) == TINY.steps and all(np.isfinite(losses))
    for name, value in before.backbone.state_dict().items():
        assert torch.equal(value, net.backbone.state_dict()[name]), name
    for name, value in before.size_head.state_dict().items():
        assert torch.equal(value, net.size_head.state_dict()[name]), name
    assert type(net.neck).__name__ == "Cell"


def test_evaluate_neck_end_to_end_is_deterministic(data_root, baseline):
    first = evaluate_neck(TINY, data_root, baseline, "hand", split="holdout", seed=0)
    assert set(first) == {"fitness", "ao", "sr50", "sr75", "fps", "train_loss", "seconds"}
    assert 0 <= first["ao"] <= 1 and first["fitness"] == first["ao"] and first["fps"] > 0
    second = evaluate_neck(TINY, data_root, baseline, "hand", split="holdout", seed=0)
    for key in ("ao", "sr50", "sr75", "train_loss"):
        assert first[key] == second[key], key
    cell = evaluate_neck(TINY, data_root, baseline, DARTS_V2, split="holdout", seed=0)
    assert cell["train_loss"] != first["train_loss"]


def test_a_backbone_checkpoint_that_does_not_fit_stops_the_baseline_with_one_line(data_root, tmp_path):
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    settings = TrackingSettings(**{**TINY.to_dict(), "backbone_checkpoint": str(tmp_path / "bad.pth")})
    with pytest.raises(UserError) as error:
        train_baseline(settings, data_root, tmp_path / "baseline.pt")
    assert "does not fit" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "baseline.pt").exists()
