"""scripts/benchmark_proxy.py: the proxy-reliability figures, and the panel pipeline end to end on a tiny setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import benchmark_proxy  # noqa: E402


def _rows(proxy: dict[str, list[float]], mos: dict[str, float] | None = None) -> dict:
    return {name: {"proxy": dict(enumerate(values)), "mos": {0: (mos or {}).get(name, 0.0)}, "errors": []}
            for name, values in proxy.items()}


def test_a_proxy_that_ranks_the_same_way_on_every_seed_scores_one():
    rows = _rows({"a": [0.1, 0.12, 0.11], "b": [0.2, 0.22, 0.21], "c": [0.3, 0.33, 0.31], "d": [0.4, 0.41, 0.42]},
                 mos={"a": 0.0, "b": 0.1, "c": 0.2, "d": 0.3})
    found = benchmark_proxy.panel_figures(rows, [0, 1, 2])
    assert found["seed_spearman_mean"] == pytest.approx(1.0) and found["pairs"] == 3
    assert found["mos_spearman"] == pytest.approx(1.0)
    assert found["spread"] == pytest.approx(0.41 - 0.11)
    assert found["median_sd"] == pytest.approx(0.01, abs=0.006)
    assert found["spread_over_sd"] > 20


def test_a_proxy_that_ranks_noise_has_a_low_seed_to_seed_spearman():
    rows = _rows({"a": [0.1, 0.4, 0.2], "b": [0.4, 0.1, 0.3], "c": [0.2, 0.3, 0.4], "d": [0.3, 0.2, 0.1]},
                 mos={"a": 0.3, "b": 0.2, "c": 0.1, "d": 0.0})
    found = benchmark_proxy.panel_figures(rows, [0, 1, 2])
    assert found["seed_spearman_mean"] < 0.2 and found["seed_spearman_min"] <= -0.5
    assert found["spread_over_sd"] < 1


def test_losses_that_learned_nothing_are_also_left_out_of_the_figures():
    rows = _rows({"a": [0.1, 0.4, 0.2], "b": [0.4, 0.1, 0.3], "c": [0.2, 0.3, 0.4], "dead": [0.0, 0.0, 0.0],
                  "dead too": [0.0, 0.0, 0.0]})
    found = benchmark_proxy.panel_figures(rows, [0, 1, 2])
    assert found["seed_spearman_mean"] > found["learned"]["seed_spearman_mean"]  # the dead ones lift it
    assert found["learned"]["losses"] == 3
    assert benchmark_proxy.panel_figures(_rows({"a": [0.1, 0.2], "b": [0.3, 0.4]}), [0, 1])["learned"] is None


def test_separation_is_the_difference_over_the_pooled_sd():
    rows = _rows({"BCE": [0.10, 0.12, 0.14], "FL": [0.20, 0.22, 0.24]})
    assert benchmark_proxy.separation(rows, "BCE", "FL") == pytest.approx(0.10 / 0.02)
    assert benchmark_proxy.separation(_rows({"BCE": [0.1]}), "BCE", "FL") is None


def test_the_panels_hold_the_issues_losses_and_valid_random_trees():
    from autoloss.loss.representation import LossRepresentation
    from autoloss.loss.space import load_space

    for head, named in (("softmax", ["CE", "CEI", "CSE-Autoloss-A_cls"]), ("sigmoid", ["BCE", "FL", "FLI"])):
        losses = benchmark_proxy.panel(head, 2)
        names = [name for name, _ in losses]
        assert set(named) <= set(names) and names[-2:] == ["random 1", "random 2"]
        representation = LossRepresentation(load_space(benchmark_proxy.HEADS[head]["space"]))
        nodes = [representation.parse(text) for _, text in losses]  # every expression parses in the space
        assert len({representation.key(n) for n in nodes}) == len(nodes)
        gates = representation.gates()
        try:
            for gate in gates:
                assert all(v.passed for v in gate.evaluate(nodes[-2:])), gate.name
        finally:
            for gate in gates:
                getattr(gate, "close", lambda: None)()
        assert benchmark_proxy.panel(head, 2) == losses  # seeded: the same panel every time


@pytest.mark.slow
def test_the_panel_runs_end_to_end_on_a_tiny_setting_and_resumes(tmp_path):
    pytest.importorskip("mmdet")
    command = [sys.executable, str(ROOT / "scripts" / "benchmark_proxy.py"), "--tiny", "--head", "sigmoid",
               "--first", "2", "--random", "1", "--seeds", "2", "--workers", "1", "--pretrain", "--out", str(tmp_path / "out"),
               "--json", str(tmp_path / "panel.json"), "--no-write"]
    first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "12 runs to go" in first.stdout  # 3 losses x 2 seeds x (MOS + proxy)
    result = json.loads((tmp_path / "panel.json").read_text())[0]
    assert list(result["rows"]) == ["BCE", "BCE x IoU", "random 1"]
    for row in result["rows"].values():
        assert len(row["proxy"]) + len([e for e in row["errors"] if e.startswith("proxy")]) == 2
    assert "seed-to-seed Spearman" in first.stdout and "FL - BCE" in first.stdout
    assert "backbone ResNet-18 pretrained on the training split's objects" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0 and "0 runs to go" in again.stdout  # every finished run is kept
