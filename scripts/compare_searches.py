"""Three seeded searches through the command line, their stores reduced to genotypes and fitness.

    python scripts/compare_searches.py record OUT.json     # before a change (e.g. a refactoring)
    python scripts/compare_searches.py compare OUT.json    # after it: exit 1 when anything moved

The searches: a loss search on noisy-digits (cse), a cell search on the tracking demo (cse) and a
differentiable cell search (darts), each tiny and seeded. What is compared: every candidate's
genotype with each verdict's gate, pass/fail and fitness (rounded to 6 decimals), in store order.
Only the command line is used, so the script runs unchanged on both sides of a change of layout.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

TRACKER_TINY = {"channels": 8, "crop_size": 64, "baseline_steps": 3, "baseline_batch": 1, "steps": 4, "batch": 2,
                "pool": 2, "track_iterations": 3, "init_shifts": 1, "weights_sequences": 2,
                "holdout_sequences": 2, "test_sequences": 2, "verify_sequences": 2, "sequence_frames": 6,
                "frame_size": 64, "mos_steps": 2, "mos_sequences": 1}
TRACKER_OPTIONS = [arg for key, value in TRACKER_TINY.items() for arg in ("--tracker-option", f"{key}={value}")]
SEARCHES = {
    "loss-cse": ["--task", "noisy-digits", "--branch", "cls", "--population", "24", "--generations", "2",
                 "--seed", "7", "--workers", "1"],
    "cell-cse": ["--tracker", "dimp_small", "--demo", *TRACKER_OPTIONS, "--population", "4", "--generations",
                 "2", "--top-k", "2", "--parents", "2", "--seed", "1", "--workers", "1", "--mos-margin", "0.02"],
    "cell-darts": ["--tracker", "dimp_small", "--demo", *TRACKER_OPTIONS, "--strategy", "darts", "--epochs", "2",
                   "--seeds", "2", "--steps-per-epoch", "2", "--holdout-batches", "2", "--warmup", "0",
                   "--seed", "1", "--workers", "1"],
}


def contents(db: Path) -> list[list]:
    """[generation, index, genotype, gate, passed, fitness] of every verdict, in store order."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT c.generation, c.idx, c.genotype, v.gate, v.passed, v.metrics FROM verdicts v"
                           " JOIN candidates c ON c.id = v.candidate_id ORDER BY c.id, v.gate").fetchall()
    finally:
        con.close()
    out = []
    for generation, index, genotype, gate, passed, metrics in rows:
        fitness = json.loads(metrics or "{}").get("fitness")
        fitness = round(float(fitness), 6) if isinstance(fitness, (int, float)) else None
        out.append([generation, index, genotype, gate, bool(passed), fitness])
    return out


def run_all() -> dict:
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in SEARCHES.items():
            out = Path(tmp) / name
            command = [sys.executable, "-m", "autoloss.cli", "search", *options, "--out", str(out), "--quiet"]
            result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
            if result.returncode != 0:
                raise SystemExit(f"{name}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
            found[name] = contents(out / "run.sqlite")
            print(f"{name}: {len(found[name])} verdicts", flush=True)
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "compare"):
        print(__doc__.strip().splitlines()[0] + "\nusage: compare_searches.py record|compare FILE", file=sys.stderr)
        return 2
    mode, path = argv[0], Path(argv[1])
    found = run_all()
    if mode == "record":
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(found, indent=1) + "\n")
        tmp.replace(path)
        print(f"recorded {path}")
        return 0
    recorded = json.loads(path.read_text())
    moved = 0
    for name in SEARCHES:
        same = found[name] == recorded.get(name)
        moved += not same
        print(f"{name}: {'same store contents' if same else 'DIFFERENT'}")
        if not same:
            for before, after in zip(recorded.get(name, []), found[name]):
                if before != after:
                    print(f"  first difference: {before} -> {after}")
                    break
            print(f"  verdicts: {len(recorded.get(name, []))} recorded, {len(found[name])} now")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
