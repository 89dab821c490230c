"""Detector searches: the MMDetection proxy task, its two stages, and ``autoloss search --detector``.

The end-to-end searches are real but tiny: a few training iterations of the small CPU detectors on
an 8-image synthetic dataset, one generation of twenty candidates (most stop at the cheap gates).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("mmdet")

from autoloss.engine.store import BASELINE_GENERATION
from autoloss.engine.store import RunStore
from autoloss.errors import UserError
from autoloss.loss.genotype import LossGenotype
from autoloss.loss.space import load_space
from autoloss.detection.mmdet.detectors import detector_config_path
from autoloss.detection.task import DetectionTask, Diverged, _metric, loss_watch, prepare_task
from cli_helpers import assert_clean_error, autoloss, run_cli
from rankings import DETECTOR_TINY, assert_same_ranking, ranking

torch.set_num_threads(2)

TINY = DETECTOR_TINY


# ---------------------------------------------------------------------------- the task, in process


def test_metric_reads_coco_keys_and_treats_missing_as_zero():
    assert _metric({"coco/bbox_mAP": 0.25}, "bbox_mAP") == 0.25
    assert _metric({"bbox_mAP": 0.5}, "bbox_mAP") == 0.5
    assert _metric({}, "bbox_mAP") == 0.0  # CocoMetric returns nothing when the model detects nothing
    assert _metric({"coco/bbox_mAP": -1.0}, "bbox_mAP") == 0.0  # nothing to score
    assert _metric({"coco/bbox_mAP": float("nan")}, "bbox_mAP") == 0.0


def test_loss_watch_stops_on_a_non_finite_loss():
    class Runner:
        iter = 6

    watch = loss_watch()
    watch.after_train_iter(Runner(), 0, outputs={"loss": torch.tensor(1.5)})
    assert watch.last == 1.5
    watch.after_train_iter(Runner(), 0, outputs={})  # no loss reported: nothing to check
    with pytest.raises(Diverged, match="became nan at iteration 7"):
        watch.after_train_iter(Runner(), 0, outputs={"loss": torch.tensor(float("nan"))})
    with pytest.raises(Diverged, match="inf"):
        watch.after_train_iter(Runner(), 0, outputs={"loss": torch.tensor(float("inf"))})


def test_prepare_task_defaults_to_one_epoch_and_the_heads_space(synthetic_coco, tmp_path):
    task, summary = prepare_task("fcos_small", "cls", synthetic_coco, tmp_path, check_build=False)
    assert task.space == "cls_sigmoid"  # FCOS classifies with sigmoid scores
    assert summary["batch_size"] == 4 and task.proxy_iters == 2  # 8 training images, batch 4: one epoch
    verify = json.loads(Path(task.verify_ann).read_text())
    assert len(verify["images"]) == len(task.categories) == 4  # D_verify: one image per category
    task, summary = prepare_task("faster_rcnn_small", "cls", synthetic_coco, tmp_path, batch_size=2, check_build=False)
    assert task.space == "cls_softmax" and task.proxy_iters == 4
    task, _ = prepare_task("faster_rcnn_small", "reg", synthetic_coco, tmp_path, proxy_iters=7, check_build=False)
    assert task.space == "reg" and task.proxy_iters == 7
    assert DetectionTask.from_dict(task.to_dict()) == task


@pytest.mark.parametrize("detector, branch, space, message", [
    ("fcos_small", "cls", "cls_softmax", "classifies with sigmoid scores: use a sigmoid"),
    ("faster_rcnn_small", "cls", "cls_sigmoid", "classifies with softmax scores: use a softmax"),
    ("faster_rcnn_small", "reg", "cls_softmax", "the reg branch needs regression"),
    ("fcos_small", "cls", "reg", "the cls branch needs softmax or sigmoid"),
])
def test_prepare_task_rejects_a_space_of_the_wrong_kind(synthetic_coco, tmp_path, detector, branch, space, message):
    with pytest.raises(UserError, match=message):
        prepare_task(detector, branch, synthetic_coco, tmp_path, space=space, check_build=False)


def test_run_configs_of_the_two_stages(synthetic_coco, tmp_path):
    task, _ = prepare_task("faster_rcnn_small", "cls", synthetic_coco, tmp_path, proxy_iters=9, mos_iters=5,
                           check_build=False)
    mos = task.config("CEI", "mos", seed=3, work_dir=tmp_path / "w")
    assert mos.train_dataloader.dataset.ann_file == mos.test_dataloader.dataset.ann_file == task.verify_ann
    assert mos.train_cfg.max_iters == 5 and mos.randomness.seed == 3
    assert mos.train_dataloader.batch_size <= len(task.categories)
    proxy = task.config("CEI", "proxy", seed=0, work_dir=tmp_path / "w")
    assert proxy.train_dataloader.dataset.ann_file == task.train_ann
    assert proxy.test_dataloader.dataset.ann_file == task.val_ann
    assert proxy.train_cfg.max_iters == 9
    assert proxy.val_dataloader is None and proxy.default_hooks.checkpoint is None
    head = proxy.model.roi_head.bbox_head
    assert head.type == "IoUAwareShared2FCBBoxHead"  # the cls branch sees the IoU of each positive
    assert head.loss_cls.type == "SearchedSoftmaxClsLoss" and head.loss_cls.expression == "CEI"
    assert head.loss_bbox.type == "GIoULoss"  # the other branch keeps the config's loss
    assert mos.experiment_name != proxy.experiment_name

    reg, _ = prepare_task("fcos_small", "reg", synthetic_coco, tmp_path, check_build=False)
    cfg = reg.config("GIoU", "proxy", seed=0, work_dir=tmp_path / "w")
    assert cfg.model.bbox_head.type == "FCOSHead"  # stock head: the searched reg loss needs no IoU input
    assert cfg.model.bbox_head.loss_bbox.type == "SearchedIoULoss"
    assert cfg.model.bbox_head.loss_cls.type == "FocalLoss"
    with pytest.raises(ValueError, match="unknown stage"):
        reg.config("GIoU", "train", seed=0, work_dir=tmp_path / "w")


def test_evaluate_scores_a_short_run_and_logs_it(synthetic_coco, tmp_path):
    task, _ = prepare_task("fcos_small", "reg", synthetic_coco, tmp_path, proxy_iters=2, mos_iters=2, batch_size=2,
                           check_build=False)
    result = task.evaluate("GIoU", "mos", seed=0)
    assert result["stage"] == "mos" and result["iters"] == 2
    assert 0.0 <= result["fitness"] <= 1.0 and math.isfinite(result["final_loss"])
    assert (Path(result["work_dir"]) / "run.log").stat().st_size > 0


def test_a_diverging_regression_loss_raises_diverged(synthetic_coco, tmp_path):
    task, _ = prepare_task("fcos_small", "reg", synthetic_coco, tmp_path, proxy_iters=2, mos_iters=2, batch_size=2,
                           check_build=False)
    exploding = "Mul(Exp(Exp(Div(U,I))),Exp(Exp(Div(U,I))))"  # e^(2 e^(U/I)): overflows to inf
    with pytest.raises(Diverged, match="training loss became"):
        task.evaluate(exploding, "mos", seed=0)


# ---------------------------------------------------------------------------- the CLI, end to end


@pytest.fixture(scope="module")
def tiny_search(synthetic_coco, tmp_path_factory):
    """``tiny_search(detector, branch)`` -> (completed process, run dir); each search runs once per module."""
    done = {}

    def run(detector: str, branch: str):
        if (detector, branch) not in done:
            out = tmp_path_factory.mktemp(f"{detector}-{branch}") / "run"
            result = autoloss("search", "--detector", detector, "--branch", branch, "--data", synthetic_coco,
                              "--out", out, *TINY, timeout=600)
            done[detector, branch] = result, out
        return done[detector, branch]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("detector, branch", [
    ("faster_rcnn_small", "cls"), ("faster_rcnn_small", "reg"), ("fcos_small", "cls"), ("fcos_small", "reg"),
])
def test_tiny_search_runs_end_to_end(tiny_search, detector, branch):
    result, out = tiny_search(detector, branch)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "best losses by mAP" in result.stdout
    assert "baseline mAP " in result.stdout

    with RunStore(out / "run.sqlite") as store:
        config = store.load_config()
        assert config["detector"] == detector and config["task"]["branch"] == branch
        baseline = store.candidates(BASELINE_GENERATION)[0]
        initial = {"cls": "CEI" if detector.startswith("faster") else "FLI", "reg": "GIoU"}[branch]
        space = config["task"]["space"]
        assert baseline.genotype == str(LossGenotype(load_space(space)).parse(initial))  # the paper's initial loss
        verdict = store.verdict(baseline.id, "proxy")
        assert verdict.passed and 0.0 <= verdict.metrics["fitness"] <= 1.0, verdict
        assert verdict.metrics["iters"] == 3
        funnel = store.funnel(0)
        assert funnel["validity"]["in"] == 20, funnel  # the gate funnel of the generation is recorded
        assert 1 <= funnel["mos"]["in"] <= 2  # --max-mos 2
        proxied = store.verdicts(0, "proxy")
        assert len(proxied) == 1  # --top-k 1
        for v in proxied:
            assert (v.passed and 0.0 <= v.metrics["fitness"] <= 1.0) or (not v.passed and v.reason), v
        assert store.finished_generations() == [0]
    assert (out / "d_verify.json").is_file()
    # the same seeded search ends as recorded (tests/golden/rankings.json, tests/rankings.py)
    golden = json.loads((Path(__file__).parent / "golden" / "rankings.json").read_text())
    assert_same_ranking(ranking(out / "run.sqlite"), golden[f"{detector}/{branch}"], tolerance=0.01)
    logs = list((out / "work").glob("*/*/run.log"))
    assert {p.parent.parent.name for p in logs} == {"mos", "proxy"}


@pytest.mark.slow
def test_finished_detector_search_resumes_without_new_work(tiny_search, synthetic_coco):
    first, out = tiny_search("fcos_small", "reg")
    assert first.returncode == 0, first.stderr
    again = autoloss("search", "--detector", "fcos_small", "--branch", "reg", "--data", synthetic_coco, "--out", out,
                     "--resume", *TINY, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "(0 proxy evaluations this session" in again.stdout
    best = [line for line in first.stdout.splitlines() if line.strip().startswith("1. ")]
    assert best == [line for line in again.stdout.splitlines() if line.strip().startswith("1. ")]


# ---------------------------------------------------------------------------- clean errors


def test_missing_data_directory(tmp_path):
    assert_clean_error(run_cli("search", "--detector", "fcos_small", "--data", tmp_path / "nowhere",
                               "--out", tmp_path / "run"), "nowhere")


def test_data_directory_without_coco_layout(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"")
    assert_clean_error(run_cli("search", "--detector", "fcos_small", "--data", tmp_path / "photos",
                               "--out", tmp_path / "run"), "annotation")


def test_corrupt_annotation_file(synthetic_coco, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_coco, broken)
    (broken / "annotations" / "instances_train.json").write_text('{"images": [')
    assert_clean_error(run_cli("search", "--detector", "fcos_small", "--data", broken, "--out", tmp_path / "run"),
                       "instances_train.json")


def test_unknown_detector_name(synthetic_coco, tmp_path):
    assert_clean_error(run_cli("search", "--detector", "yolo9000", "--data", synthetic_coco, "--out", tmp_path / "run"),
                       "yolo9000")


def test_config_without_the_expected_head(synthetic_coco, tmp_path):
    config = tmp_path / "headless.py"
    config.write_text("model = dict(type='FasterRCNN', backbone=dict(type='ResNet', depth=18))\n")
    assert_clean_error(run_cli("search", "--detector", config, "--data", synthetic_coco, "--out", tmp_path / "run"),
                       "loss_cls")


def test_cls_branch_on_a_head_without_an_iou_aware_version(synthetic_coco, tmp_path):
    config = tmp_path / "atss.py"
    base = detector_config_path("fcos_small").resolve()
    config.write_text(f"_base_ = [{str(base)!r}]\nmodel = dict(bbox_head=dict(type='ATSSHead'))\n")
    assert_clean_error(run_cli("search", "--detector", config, "--branch", "cls", "--data", synthetic_coco,
                               "--out", tmp_path / "run"), "IoU-aware", "ATSSHead")


def test_unparsable_config_file(synthetic_coco, tmp_path):
    config = tmp_path / "broken.py"
    config.write_text("model = dict(type='FasterRCNN'\n")
    assert_clean_error(run_cli("search", "--detector", config, "--data", synthetic_coco, "--out", tmp_path / "run"),
                       "broken.py")


@pytest.mark.parametrize("args, words", [
    (["--detector", "fcos_small"], ["--data DIR", "--demo"]),
    (["--demo"], ["--detector"]),
    (["--detector", "fcos_small", "--task", "noisy-digits"], ["choose one of --task", "--detector"]),
    (["--detector", "fcos_small", "--demo", "--data", "somewhere"], ["drop --data"]),
    (["--task", "noisy-digits", "--proxy-iters", "5"], ["--proxy-iters applies to detector searches"]),
    (["--detector", "fcos_small", "--demo", "--steps", "5"], ["--steps applies to --task"]),
    (["--detector", "fcos_small", "--demo", "--iou", "confidence"], ["--iou applies to --task"]),
    (["--detector", "fcos_small", "--demo", "--proxy-iters", "0"], ["--proxy-iters must be between 1"]),
])
def test_inconsistent_options(tmp_path, args, words):
    assert_clean_error(run_cli("search", *args, "--out", tmp_path / "run"), *words)


def test_a_users_own_config_path_is_a_detector(synthetic_coco, tmp_path):
    """--detector also takes the path of the user's MMDetection config (here one that inherits FCOS)."""
    config = tmp_path / "my_fcos.py"
    base = detector_config_path("fcos_small").resolve()
    config.write_text(f"_base_ = [{str(base)!r}]\nmodel = dict(bbox_head=dict(stacked_convs=1))\n")
    task, summary = prepare_task(str(config), "cls", synthetic_coco, tmp_path / "run")  # builds the detector once
    assert task.detector == str(config.resolve()) and summary["kind"] == "one-stage"
    cfg = task.config("FLI", "proxy", seed=0, work_dir=tmp_path / "w")
    assert cfg.model.bbox_head.stacked_convs == 1 and cfg.model.bbox_head.type == "IoUAwareFCOSHead"


@pytest.mark.slow
def test_tiny_search_on_a_local_ray_cluster(synthetic_coco, tmp_path):
    """--executor ray: each MOS and proxy training is a Ray task (Ray is an extra; CI installs it)."""
    pytest.importorskip("ray")
    out = tmp_path / "run"
    result = autoloss("search", "--detector", "fcos_small", "--branch", "reg", "--data", synthetic_coco, "--out", out,
                      *TINY, "--executor", "ray", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    with RunStore(out / "run.sqlite") as store:
        proxied = store.verdicts(0, "proxy")
        assert len(proxied) == 1 and proxied[0].passed and 0.0 <= proxied[0].metrics["fitness"] <= 1.0
        assert store.finished_generations() == [0]
