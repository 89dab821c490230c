"""``autoloss evaluate``: the given losses against the baselines, same schedule and seeds, as a table."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mmdet")

from autoloss.detection.synthetic import make_synthetic_coco
from autoloss.detection.compare import Comparison, load_runs
from cli_helpers import assert_clean_error, autoloss

TINY = ["--seeds", "1", "--iters", "2", "--batch-size", "2", "--workers", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    make_synthetic_coco(root, num_train=8, num_val=4, seed=0)
    return root


def _rows(stdout: str) -> dict:
    """Table rows by loss name: the cells after it."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| losses"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_faster_rcnn_table_against_both_baselines_and_resume(data, tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate", "--detector", "faster_rcnn_small", "--data", data, "--out", out,
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


def test_fcos_with_a_sigmoid_loss(data, tmp_path):
    out = tmp_path / "eval"
    result = autoloss("evaluate", "--detector", "fcos_small", "--data", data, "--out", out,
                      "--loss-cls", "CSE-Autoloss-B_cls", *TINY, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(_rows(result.stdout)) == ["FL + GIoU (reference)", "searched"]  # no L1 baseline for FCOS
    comparison = Comparison.from_dict(json.loads((out / "comparison.json").read_text()))
    searched = comparison.variant("searched")
    assert searched.cls_loss["type"] == "SearchedSigmoidClsLoss" and searched.iou_aware
    assert searched.reg_loss is None  # the regression loss stays the config's GIoU
    assert len(load_runs(out / "runs.jsonl")) == 2


def test_variant_configs(data, tmp_path):
    comparison = Comparison.prepare("faster_rcnn_small", data, tmp_path, loss_cls="CEI", seeds=2, iters=5)
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
def test_bad_input(data, tmp_path, extra, words):
    assert_clean_error(autoloss("evaluate", "--detector", "faster_rcnn_small", "--data", data,
                                "--out", tmp_path / "eval", *extra), *words)


def test_needs_data_or_demo(tmp_path):
    assert_clean_error(autoloss("evaluate", "--detector", "fcos_small", "--loss-reg", "GIoU", "--out", tmp_path),
                       "--data DIR")
    assert_clean_error(autoloss("evaluate", "--detector", "fcos_small", "--loss-reg", "GIoU", "--out", tmp_path,
                                "--data", tmp_path / "nowhere"), "nowhere")
