"""A detector backbone that does not start from scratch: pretrained on the data's objects and cached, or a user's weights."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("mmdet")

import torch  # noqa: E402

from autoloss.detection import pretrain  # noqa: E402
from autoloss.errors import UserError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = pretrain.PretrainSettings(steps=2, batch=4, crop=16)


@pytest.fixture
def data(synthetic_coco, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(synthetic_coco, copy)
    return copy


def _split(data):
    return data / "annotations" / "instances_train.json", data / "train"


def test_the_backbone_is_pretrained_once_cached_and_reused(data, tmp_path, monkeypatch):
    ann, images = _split(data)
    path = pretrain.pretrained_backbone(ann, images, tmp_path / "cache", TINY)
    weights, manifest = pretrain.cache_paths(tmp_path / "cache", 18)
    assert path == weights and weights.is_file()
    stored = json.loads(manifest.read_text())
    assert stored["generator"] == pretrain.GENERATOR and stored["settings"]["steps"] == 2
    state = torch.load(weights, weights_only=True)
    assert set(state) == set(pretrain.build_resnet(18).state_dict())  # the detector's backbone's names
    calls = []
    monkeypatch.setattr(pretrain, "train_backbone", lambda *a: calls.append(a) or ({}, 0.0))
    assert pretrain.pretrained_backbone(ann, images, tmp_path / "cache", TINY) == weights
    assert calls == []  # the same data and settings: the cache, no training


def test_the_cache_is_invalidated_when_the_data_or_the_settings_change(data, tmp_path, monkeypatch):
    ann, images = _split(data)
    before = pretrain.data_key(ann, images, TINY)
    assert pretrain.data_key(ann, images, pretrain.PretrainSettings(steps=3, batch=4, crop=16)) != before
    from PIL import Image

    image = sorted(images.iterdir())[0]
    with Image.open(image) as opened:
        changed = opened.convert("RGB")
    changed.putpixel((0, 0), (255, 0, 255))  # one pixel of one training image
    changed.save(image)
    assert pretrain.data_key(ann, images, TINY) != before
    pretrain.pretrained_backbone(ann, images, tmp_path / "cache", TINY)
    trained = []
    real = pretrain.train_backbone
    monkeypatch.setattr(pretrain, "train_backbone", lambda *a: trained.append(1) or real(*a))
    annotations = json.loads(ann.read_text())
    annotations["annotations"] = annotations["annotations"][:-1]  # one object less
    ann.write_text(json.dumps(annotations))
    pretrain.pretrained_backbone(ann, images, tmp_path / "cache", TINY)
    assert trained == [1]


def test_a_file_autoloss_did_not_write_is_never_replaced(data, tmp_path):
    ann, images = _split(data)
    weights, _ = pretrain.cache_paths(tmp_path, 18)
    weights.write_bytes(b"someone's weights")
    with pytest.raises(UserError, match="was not written by autoloss"):
        pretrain.pretrained_backbone(ann, images, tmp_path, TINY)
    assert weights.read_bytes() == b"someone's weights"


def test_a_users_checkpoint_is_checked_before_anything_trains(data, tmp_path):
    state = pretrain.build_resnet(18).state_dict()
    own = tmp_path / "r18.pth"
    torch.save(state, own)
    assert pretrain.checkpoint_prefix(own, 18) is None
    whole = tmp_path / "detector.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in state.items()}, "meta": {}}, whole)
    assert pretrain.checkpoint_prefix(whole, 18) == "backbone."
    with pytest.raises(UserError, match="weights of the detector's ResNet-50 backbone"):
        pretrain.checkpoint_prefix(own, 50)  # another depth
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(UserError, match="only 0 of the"):
        pretrain.checkpoint_prefix(other, 18)
    with pytest.raises(UserError, match="cannot read training image"):
        broken = tmp_path / "broken"
        shutil.copytree(data, broken)
        first = sorted((broken / "train").iterdir())[0]
        first.write_bytes(first.read_bytes()[:100])
        pretrain.pretrained_backbone(*_split(broken), tmp_path / "cache", TINY)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        pretrain.checkpoint_prefix(text, 18)
    with pytest.raises(UserError, match="no such file"):
        pretrain.checkpoint_prefix(tmp_path / "missing.pth", 18)
    with pytest.raises(UserError, match="not a regular file"):
        pretrain.checkpoint_prefix(tmp_path, 18)
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    with pytest.raises(UserError, match="never unpickles"):
        pretrain.checkpoint_prefix(evil, 18)
    assert not marker.exists()  # nothing in the file ran


def test_the_detector_starts_from_the_checkpoint(synthetic_coco, tmp_path):
    from autoloss.detection.mmdet.detectors import build_detector
    from autoloss.detection.task import prepare_task

    state = pretrain.build_resnet(18).state_dict()
    state = {k: (torch.full_like(v, 0.125) if k == "conv1.weight" else v) for k, v in state.items()}
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in state.items()}}, path)
    task, summary = prepare_task("faster_rcnn_small", "cls", synthetic_coco, tmp_path / "run", proxy_iters=2,
                                 backbone_checkpoint=path)
    assert task.backbone_prefix == "backbone." and str(path.resolve()) in summary["backbone"]
    cfg = task.config("Neg(Dot(Mul(Y,W),Log(Softmax(X))))", "proxy", 0, tmp_path / "work")
    assert cfg.model.backbone.init_cfg["type"] == "Pretrained"
    model = build_detector(cfg)
    model.init_weights()
    assert torch.all(model.backbone.conv1.weight == 0.125)
    with pytest.raises(UserError, match="exclude each other"):
        prepare_task("faster_rcnn_small", "cls", synthetic_coco, tmp_path / "run2", proxy_iters=2,
                     backbone_checkpoint=path, pretrain=TINY)


def test_the_options_are_one_clean_error_where_they_do_not_apply(tmp_path):
    from cli_helpers import assert_clean_error, run_cli

    found = run_cli("search", "--task", "noisy-digits", "--pretrain-backbone", "--out", tmp_path / "a")
    assert_clean_error(found, "--pretrain-backbone applies to detector searches")
    found = run_cli("search", "--task", "noisy-digits", "--backbone-checkpoint", "x.pth", "--out", tmp_path / "b")
    assert_clean_error(found, "--backbone-checkpoint applies to --tracker and --detector searches")
    found = run_cli("search", "--tracker", "dimp_small", "--demo", "--pretrain-backbone", "--out", tmp_path / "d")
    assert_clean_error(found, "--pretrain-backbone applies to detector searches")
    found = run_cli("search", "--detector", "faster_rcnn", "--demo", "--backbone-checkpoint",
                    tmp_path / "missing.pth", "--out", tmp_path / "c")
    assert_clean_error(found, "--backbone-checkpoint", "no such file")


def test_the_demo_pretrains_unless_told_otherwise_or_given_weights():
    from autoloss.cli import build_parser
    from autoloss.commands.search import pretrains

    parse = build_parser().parse_args
    assert pretrains(parse(["search", "--detector", "fcos", "--demo"]))
    assert not pretrains(parse(["search", "--detector", "fcos", "--demo", "--no-pretrain-backbone"]))
    assert not pretrains(parse(["search", "--detector", "fcos", "--demo", "--backbone-checkpoint", "r18.pth"]))
    assert not pretrains(parse(["search", "--detector", "fcos", "--data", "coco"]))
    assert pretrains(parse(["search", "--detector", "fcos", "--data", "coco", "--pretrain-backbone"]))
    assert pretrains(parse(["evaluate", "--detector", "fcos", "--demo", "--loss-cls", "FLI"]))
    assert not pretrains(parse(["evaluate", "--detector", "fcos", "--data", "coco", "--loss-cls", "FLI"]))
