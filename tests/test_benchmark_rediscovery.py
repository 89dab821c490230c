"""scripts/benchmark_rediscovery.py: the focal-likeness measure, the space that starts from BCE, and the
whole pipeline (search, FL on the proxy, the held-out test split) end to end on a tiny setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import benchmark_rediscovery  # noqa: E402


def test_the_space_starts_from_bce_and_keeps_the_bundled_losses(tmp_path):
    from autoloss.loss.genotype import LossGenotype
    from autoloss.loss.space import load_space

    space = load_space(benchmark_rediscovery.write_space(tmp_path / "space.yaml"))
    assert space.initial == "BCE" and space.initial_expression == benchmark_rediscovery.BCE
    assert {"FL", "FLI", "CSE-Autoloss-B_cls"} <= set(space.losses)
    assert str(LossGenotype(space).initial()) == benchmark_rediscovery.BCE
    assert space.operators == load_space("cls_sigmoid").operators


def test_focal_likeness_reads_the_gradient_on_easy_and_hard_negatives(tmp_path):
    import math

    space = benchmark_rediscovery.write_space(tmp_path / "space.yaml")

    def focal(s: float, gamma: int) -> float:  # d/dx of -s^gamma log(1 - s) over BCE's s
        return (-gamma * s ** (gamma - 1) * (1 - s) * math.log(1 - s) + s ** gamma)

    fl = benchmark_rediscovery.negative_ratio(benchmark_rediscovery._fl(space), space)
    assert fl["easy"] == pytest.approx(focal(0.05, 2)) and fl["hard"] == pytest.approx(focal(0.5, 2))
    assert fl["quotient"] == pytest.approx(focal(0.05, 2) / focal(0.5, 2)) and fl["focal_like"]
    assert fl["quotient"] < 0.02
    bce = benchmark_rediscovery.negative_ratio(benchmark_rediscovery.BCE, space)
    assert bce["quotient"] == pytest.approx(1.0) and not bce["focal_like"]
    doubled = "Mul(2," + benchmark_rediscovery.BCE + ")"  # a scale is not a modulating factor
    assert benchmark_rediscovery.negative_ratio(doubled, space)["easy"] == pytest.approx(2.0)
    assert not benchmark_rediscovery.negative_ratio(doubled, space)["focal_like"]
    shifted = "Add(3," + benchmark_rediscovery.BCE + ")"  # nor is a constant
    assert benchmark_rediscovery.negative_ratio(shifted, space)["quotient"] == pytest.approx(1.0)
    linear = "Neg(Add(Mul(Y,Log(Sig(X))),Mul(Sub(1,Y),Mul(Sig(X),Log(Sub(1,Sig(X)))))))"  # gamma = 1
    assert benchmark_rediscovery.negative_ratio(linear, space)["quotient"] == pytest.approx(
        focal(0.05, 1) / focal(0.5, 1))
    softened = "Neg(Add(Mul(Y,Log(Sig(X))),Mul(Sub(1,Y),Log(Sub(3,Sig(X))))))"  # -log(3 - s): hard ones count less
    assert not benchmark_rediscovery.negative_ratio(softened, space)["focal_like"]


def test_the_summary_states_the_targets_from_the_test_split():
    found = {"found": benchmark_rediscovery.BCE.replace("Log(Sub(1,Sig(X)))", "Mul(Sig(X),Log(Sub(1,Sig(X))))"),
             "baseline": [0.1, 0.11, 0.12], "found_proxy": [0.2], "curve": [0.1, 0.2], "task": {},
             "proxy_evaluations": 2, "mos_evaluations": 4, "claim": "", "claimed_better": False}
    space = str(ROOT / "search_spaces" / "cls_sigmoid.yaml")
    better = benchmark_rediscovery.summarise(found, [0.2, 0.21], {"BCE": [0.10, 0.11, 0.12], "FL": [0.20, 0.21, 0.22],
                                                                   "found": [0.18, 0.19, 0.20]}, {"total": 600}, space)
    assert better["difference_in_sd"] == pytest.approx(8.0) and better["gap_closed"] == pytest.approx(0.8)
    assert all(better["targets"].values()) and better["negatives"]["found"]["focal_like"]
    noise = benchmark_rediscovery.summarise(found, [], {"BCE": [0.10, 0.15, 0.12], "FL": [0.2, 0.21, 0.22],
                                                        "found": [0.11, 0.16, 0.12]}, {"total": 3600}, space)
    assert not any(noise["targets"].values())


@pytest.mark.slow
def test_the_rediscovery_runs_end_to_end_on_a_tiny_setting(tmp_path):
    pytest.importorskip("mmdet")
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "scripts" / "benchmark_rediscovery.py"), "--tiny", "--pretrain",
               "--workers", "1", "--out", str(out), "--json", str(tmp_path / "result.json"), "--no-write"]
    first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["search"]["found"] and result["search"]["proxy_evaluations"] >= 1
    assert len(result["search"]["baseline"]) == 2 and len(result["fl_proxy"]) == 2
    assert {name: len(values) for name, values in result["test"].items()} == {"BCE": 2, "FL": 2, "found": 2}
    comparison = json.loads((out / "test" / "comparison.json").read_text())
    assert comparison["split"] == "test" and comparison["val_ann"].endswith("instances_test.json")
    assert comparison["seeds"] == [1000, 1001] and comparison["backbone_checkpoint"]
    assert "held-out test split" in first.stdout and "focal-like" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    # nothing trained twice: the backbone, the search, FL on the proxy and the test runs are all kept
    assert "pretraining a ResNet" not in again.stdout and "generation 1/1" not in again.stdout
    assert "['FL'" not in again.stdout and "test found seed" not in again.stdout
    assert "['FL'" in first.stdout and "test found seed 1001" in first.stdout
    assert json.loads((tmp_path / "result.json").read_text())["test"] == result["test"]
