"""Seeded reference searches and their final rankings, to hold the engine to the same results.

    python tests/rankings.py tests/golden/rankings.json     # record (before an engine change)

``tests/test_rankings.py`` reruns the same searches and compares with the recorded file.
A ranking is every proxy-evaluated genotype of the run, best first (the baseline included), with
its fitness rounded to 6 decimals.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_helpers import autoloss  # noqa: E402

TASK_SEARCH = ["--task", "noisy-digits", "--branch", "cls", "--population", "24", "--generations", "3",
               "--seed", "7", "--workers", "1", "--quiet"]
DETECTOR_TINY = ["--population", "20", "--generations", "1", "--max-mos", "2", "--top-k", "1", "--parents", "1",
                 "--proxy-iters", "3", "--mos-iters", "2", "--batch-size", "2", "--workers", "1", "--quiet"]
CEI = "Neg(Dot(Mul(Y,W),Log(Softmax(X))))"
DETECTOR_RUNS = [("faster_rcnn_small", "cls"), ("faster_rcnn_small", "reg"), ("fcos_small", "cls"),
                 ("fcos_small", "reg")]


def ranking(db: Path) -> list[list]:
    """(genotype, fitness) of every ok proxy verdict, best first, one entry per genotype."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT c.genotype, v.metrics FROM verdicts v JOIN candidates c ON c.id = v.candidate_id"
            " WHERE v.gate = 'proxy' AND v.status = 'ok' ORDER BY c.id").fetchall()
    finally:
        con.close()
    best: dict[str, float] = {}
    for genotype, metrics in rows:
        fitness = json.loads(metrics).get("fitness")
        if isinstance(fitness, (int, float)):
            best[genotype] = max(best.get(genotype, -1e300), round(float(fitness), 6))
    return sorted(([g, f] for g, f in best.items()), key=lambda item: (-item[1], item[0]))


def assert_same_ranking(actual: list[list], golden: list[list], tolerance: float = 0.012) -> None:
    """The same genotypes were proxy-evaluated, each to within ``tolerance`` of its recorded fitness.

    CPU kernels differ between machines (AVX2 against AVX-512 builds of the same torch), which moves
    a validation accuracy by a sample or two (1/180 = 0.0056 on noisy-digits); the engine's choices,
    which genotypes reach the proxy, must not move.
    """
    assert sorted(g for g, _ in actual) == sorted(g for g, _ in golden), (actual, golden)
    recorded = dict((g, f) for g, f in golden)
    off = [(g, f, recorded[g]) for g, f in actual if abs(f - recorded[g]) > tolerance]
    assert not off, f"fitness moved beyond {tolerance}: {off}"


def task_ranking(work: Path) -> list[list]:
    out = work / "task"
    result = autoloss("search", *TASK_SEARCH, "--out", out, timeout=1800)
    assert result.returncode == 0, result.stderr
    return ranking(out / "run.sqlite")


def detector_ranking(work: Path, data: Path, detector: str, branch: str) -> list[list]:
    out = work / f"{detector}-{branch}"
    result = autoloss("search", "--detector", detector, "--branch", branch, "--data", data, "--out", out,
                      *DETECTOR_TINY, timeout=1800)
    assert result.returncode == 0, result.stderr
    return ranking(out / "run.sqlite")


def record(work: Path, detectors: bool = True) -> dict:
    rankings = {"noisy-digits": task_ranking(work)}
    if detectors:
        from autoloss.detection.synthetic import make_synthetic_coco

        data = work / "coco"
        make_synthetic_coco(data, num_train=8, num_val=4, seed=0)
        for detector, branch in DETECTOR_RUNS:
            rankings[f"{detector}/{branch}"] = detector_ranking(work, data, detector, branch)
    return rankings


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        recorded = record(Path(tmp))
    Path(sys.argv[1]).write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(json.dumps(recorded, indent=1))
