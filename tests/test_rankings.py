"""Seeded searches end as recorded (tests/golden/rankings.json, see tests/rankings.py), and the seeded
noisy-digits search of the duplicates issue evaluates no function twice."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import rankings

GOLDEN = json.loads((Path(__file__).parent / "golden" / "rankings.json").read_text())


@pytest.mark.slow
def test_seeded_noisy_digits_search_ends_as_recorded_and_evaluates_no_function_twice(tmp_path):
    rankings.assert_same_ranking(rankings.task_ranking(tmp_path), GOLDEN["noisy-digits"])
    con = sqlite3.connect(tmp_path / "task" / "run.sqlite")
    try:
        evaluated = con.execute(
            "SELECT DISTINCT c.id, c.fingerprint, c.genotype FROM candidates c JOIN verdicts v ON v.candidate_id = c.id"
            " WHERE v.gate IN ('mos', 'proxy')").fetchall()
        duplicates = con.execute("SELECT COUNT(*) FROM verdicts WHERE gate = 'equivalence' AND passed = 0").fetchone()[0]
    finally:
        con.close()
    prints = [fingerprint for _, fingerprint, _ in evaluated]
    assert None not in prints and len(prints) == len(set(prints)), evaluated
    clones = {"Neg(Dot(Y,Dot(Mul(Y,W),Log(Softmax(X)))))", "Neg(Dot(Y,Dot(Mul(Y,W),Add(Log(Softmax(X)),1))))",
              "Neg(Dot(Abs(Y),Log(Softmax(X))))", "Add(Neg(Dot(Y,Dot(Abs(Y),Log(Softmax(X))))),W)"}
    assert not clones & {genotype for _, _, genotype in evaluated if genotype != rankings.CEI}
    assert duplicates > 0
