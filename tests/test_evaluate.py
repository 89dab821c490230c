"""``autoloss evaluate``: the given losses against the baselines, same schedule and seeds, as a table."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mmdet")

from autoloss.detection.compare import Comparison, load_runs
from cli_helpers import assert_clean_error, autoloss, run_cli

TINY = ["--seeds", "1", "--iters", "2", "--batch-size", "2", "--workers", "1"]


def _rows(stdout: str) -> dict:
    """Table rows by loss name: the cells after it."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| losses"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_faster_rcnn_table_against_both_baselines_and_resume(synthetic_coco, tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate", "--detector", "faster_rcnn_small", "--data", synthetic_coco, "--out", out,
            "--loss-cls", "CSE-Autoloss-A_cls", "--loss-reg", "CSE-Autoloss-A_reg", "--name", "CSE-A", *TINY]
    first = autoloss(*args, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    rows = _rows(first.stdout)
    assert list(rows) == ["CE + GIoU (reference)", "CE + L1", "CSE-A"]
    for name, cells in rows.items():
        assert cells[-1] == "1/1", (name, cells)  # every run finished
        ap = float(cells[0].split()[0])
        assert 0.0 <= ap <= 100.0
        if name != "CE + GIoU (reference)":  # the difference to the reference is shown
            assert "(" in cells[0] and ")" in cells[0]
    assert "- CSE-A: 1 and 1 finished seeds" in first.stdout and "so nothing can be claimed" in first.stdout
    markdown = (out / "evaluate.md").read_text()
    assert "| CSE-A |" in markdown and "Neg(Dot(Mul(Y,Add(1,Sin(W))),Log(Softmax(X))))" in markdown
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert sorted(r["variant"] for r in records) == ["CE + GIoU", "CE + L1", "CSE-A"]
    assert all(r["status"] == "ok" and 0.0 <= r["fitness"] <= 1.0 for r in records)
    assert {p.parent.name for p in (out / "work").glob("*/run.log")} == {"CE_GIoU-s0", "CE_L1-s0", "CSE-A-s0"}

    again = autoloss(*args, timeout=600)  # everything is done: nothing is trained again
    assert again.returncode == 0, again.stderr
    assert len((out / "runs.jsonl").read_text().splitlines()) == 3
    assert _rows(again.stdout) == rows

    changed = autoloss(*[a if a != "CSE-Autoloss-A_reg" else "GIoU" for a in args])
    assert_clean_error(changed, "holds another comparison")


@pytest.mark.slow
def test_fcos_with_a_sigmoid_loss(synthetic_coco, tmp_path):
    out = tmp_path / "eval"
    result = autoloss("evaluate", "--detector", "fcos_small", "--data", synthetic_coco, "--out", out,
                      "--loss-cls", "CSE-Autoloss-B_cls", *TINY, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(_rows(result.stdout)) == ["FL + GIoU (reference)", "searched"]  # no L1 baseline for FCOS
    comparison = Comparison.from_dict(json.loads((out / "comparison.json").read_text()))
    searched = comparison.variant("searched")
    assert searched.cls_loss["type"] == "SearchedSigmoidClsLoss" and searched.iou_aware
    assert searched.reg_loss is None  # the regression loss stays the config's GIoU
    assert len(load_runs(out / "runs.jsonl")) == 2


def test_the_table_states_welchs_verdict_against_the_reference():
    from autoloss.detection.compare import Variant

    variants = (Variant("CE + GIoU", baseline=True), Variant("CE + L1", baseline=True), Variant("CSE-A"))
    ap = {"CE + GIoU": (0.080, 0.060, 0.070), "CE + L1": (0.11, 0.05, 0.09), "CSE-A": (0.120, 0.110, 0.115)}
    runs = {(name, s): {"status": "ok", "fitness": v, "mAP_50": v, "mAP_75": v}
            for name, values in ap.items() for s, v in enumerate(values)}
    comparison = Comparison("faster_rcnn_small", "two_stage", "t", "v", "ti", "vi", (), "/nowhere", 200, None,
                            (0, 1, 2), variants)
    table = comparison.table(runs)
    assert "| CE + GIoU (reference) | 7.0 ± 1.0 |" in table and "| CSE-A | 11.5 ± 0.5 (+4.5) |" in table
    assert "- CSE-A: better than the baseline: +4.50 ± 0.65 over 3 seeds (Welch one-sided p = " in table
    assert "lower bound of the difference +" in table and "- CE + L1" not in table  # baselines are not claimed against
    two = Comparison("faster_rcnn_small", "two_stage", "t", "v", "ti", "vi", (), "/nowhere", 200, None, (0, 1), variants)
    assert "- CSE-A: 2 and 2 finished seeds (difference +4.50 AP): fewer than 3 seeds each, so nothing can be " \
           "claimed" in two.table(runs)


def test_variant_configs(synthetic_coco, tmp_path):
    comparison = Comparison.prepare("faster_rcnn_small", synthetic_coco, tmp_path, loss_cls="CEI", seeds=2, iters=5)
    assert comparison.seeds == (0, 1) and comparison.iters == 5
    head = lambda v: comparison.config(comparison.variant(v), 0, tmp_path / "w").model.roi_head.bbox_head  # noqa: E731
    assert head("CE + GIoU").loss_bbox.type == "GIoULoss" and head("CE + GIoU").reg_decoded_bbox
    assert head("CE + L1").loss_bbox.type == "L1Loss" and not head("CE + L1").reg_decoded_bbox
    searched = head("searched")
    assert searched.type == "IoUAwareShared2FCBBoxHead" and searched.loss_cls.expression == "Neg(Dot(Mul(Y,W),Log(Softmax(X))))"
    assert searched.loss_bbox.type == "GIoULoss"
    assert Comparison.from_dict(comparison.to_dict()) == comparison


@pytest.mark.parametrize("extra, words", [
    ([], ["--loss-cls EXPR and/or --loss-reg EXPR"]),
    (["--loss-cls", "Neg(Frobnicate(X))"], ["Frobnicate"]),
    (["--loss-reg", "CEI"], ["CEI"]),
    (["--loss-cls", "FLI", "--space-cls", "cls_sigmoid"], ["softmax scores"]),
    (["--loss-cls", "CEI", "--seeds", "0"], ["--seeds must be between 1"]),
    (["--loss-cls", "CEI", "--name", "CE + L1"], ["name of a baseline"]),
])
def test_bad_input(synthetic_coco, tmp_path, extra, words):
    assert_clean_error(run_cli("evaluate", "--detector", "faster_rcnn_small", "--data", synthetic_coco,
                               "--out", tmp_path / "eval", *extra), *words)


def test_needs_data_or_demo(tmp_path):
    assert_clean_error(run_cli("evaluate", "--detector", "fcos_small", "--loss-reg", "GIoU", "--out", tmp_path),
                       "--data DIR")
    assert_clean_error(run_cli("evaluate", "--detector", "fcos_small", "--loss-reg", "GIoU", "--out", tmp_path,
                               "--data", tmp_path / "nowhere"), "nowhere")


def test_the_held_out_test_split_and_a_backbone_checkpoint_reach_every_variant(tmp_path):
    import torch

    from autoloss.detection.synthetic import make_synthetic_coco

    made = make_synthetic_coco(tmp_path / "data", num_train=4, num_val=2, num_test=2)
    weights = tmp_path / "r18.pth"
    from mmdet.models.backbones import ResNet

    torch.save(ResNet(depth=18).state_dict(), weights)
    comparison = Comparison.prepare("fcos_small", made["out_dir"], tmp_path / "eval", loss_cls="FLI", seeds=1,
                                    iters=2, split="test", backbone_checkpoint=str(weights))
    assert comparison.split == "test" and comparison.val_ann == made["test_ann"]
    assert comparison.val_img_dir == made["test_img_dir"] and comparison.train_ann == made["train_ann"]
    for variant in comparison.variants:
        cfg = comparison.config(variant, 0, tmp_path / "w")
        assert cfg.test_dataloader.dataset.ann_file == made["test_ann"]
        assert cfg.model.backbone.init_cfg == {"type": "Pretrained", "checkpoint": str(weights.resolve())}
    assert Comparison.from_dict(comparison.to_dict()) == comparison
    plain = Comparison.prepare("fcos_small", made["out_dir"], tmp_path / "eval2", loss_cls="FLI", seeds=1, iters=2)
    assert plain.val_ann == made["val_ann"] and plain.backbone_checkpoint is None
    assert plain.config(plain.variants[0], 0, tmp_path / "w").model.backbone.get("init_cfg") is None


def test_a_comparison_written_before_the_split_option_still_resumes(synthetic_coco, tmp_path):
    comparison = Comparison.prepare("fcos_small", synthetic_coco, tmp_path, loss_cls="FLI", seeds=1, iters=2)
    old = comparison.to_dict()
    for key in ("split", "backbone_checkpoint", "backbone_prefix"):
        del old[key]
    (tmp_path / "comparison.json").write_text(json.dumps(old))
    comparison.claim_out_dir()  # the same comparison: no "holds another comparison"


def test_split_errors(synthetic_coco, tmp_path):
    assert_clean_error(run_cli("evaluate", "--detector", "fcos_small", "--data", synthetic_coco, "--loss-cls", "FLI",
                               "--split", "test", "--out", tmp_path / "a"), "no test split", "--split val")
    assert_clean_error(run_cli("evaluate", "--tracker", "dimp_small", "--demo", "--split", "test",
                               "--out", tmp_path / "b"), "--split applies to --detector")
    assert_clean_error(run_cli("evaluate", "--tracker", "dimp_small", "--demo", "--pretrain-backbone",
                               "--out", tmp_path / "c"), "--pretrain-backbone applies to --detector")
    assert_clean_error(run_cli("evaluate", "--detector", "fcos_small", "--data", synthetic_coco, "--loss-cls", "FLI",
                               "--backbone-checkpoint", tmp_path / "missing.pth", "--out", tmp_path / "d"),
                       "missing.pth")


def test_evaluate_demo_scores_on_the_held_out_test_split_with_the_pretrained_backbone(tmp_path, monkeypatch):
    """The demo's data have a test split and the demo search pretrains: evaluate --demo does both by default."""
    from autoloss.cli import build_parser
    from autoloss.commands import evaluate as command
    from autoloss.detection import synthetic
    from autoloss.errors import UserError

    seen = {}

    def prepare(cls, detector, data, out, **options):
        seen.update(options, detector=detector)
        raise UserError("stop here")

    monkeypatch.setattr(Comparison, "prepare", classmethod(prepare))
    monkeypatch.setattr(synthetic, "make_synthetic_coco", lambda data, **options: seen.update(data_options=options))
    for extra, split, pretrained in (([], "test", True), (["--split", "val", "--no-pretrain-backbone"], "val", False)):
        args = build_parser().parse_args(["evaluate", "--detector", "faster_rcnn", "--demo", "--loss-cls", "CEI",
                                          "--out", str(tmp_path / split), *extra])
        with pytest.raises(UserError, match="stop here"):
            command.run_evaluate(args)
        assert seen["detector"] == "faster_rcnn_small" and seen["split"] == split
        assert (seen["pretrain"] is not None) == pretrained
        assert seen["data_options"]["num_test"] > 0 and seen["data_options"]["distractors"] > 0
