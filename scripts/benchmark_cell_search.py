"""Benchmark of the tracking-cell searches: evolution (cse) against darts, darts2 and ms-darts on the demo proxy.

    python scripts/benchmark_cell_search.py [--quick | --full] [--out runs/bench-cells] [--markdown docs/benchmarks.md]

Each differentiable strategy runs once through ``autoloss search --tracker dimp_small --demo`` with
``--seeds 3`` (each seed one worker); evolution runs ``--strategy cse --demo`` with
``--seed`` 0, 1 and 2. Measured from the stores: search wall-clock; the time of one search step (architecture
+ weight step) of second against first order (CHASE: 41 h / 18 h = 2.3x; target at most 2.3x); the
trajectory per epoch of the largest eigenvalue of the architecture loss's Hessian in alpha (exact, eval
mode; mean, last, slope: MS-DARTS claims lower and flatter than DARTS'); the chosen epoch of each seed
(never one of the warm-up's); skip connections in the chosen cells; and AO / SR0.5 / SR0.75 on the test
split of each chosen cell retrained (the proxy's ``test`` stage) against the hand-designed neck and a
random cell.
``--quick`` (default) takes about 25 minutes on 2 idle cores; its section (``cell-search``) of
``--markdown`` is replaced.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from benchmark_report import write_section  # noqa: E402

DIFFERENTIABLE = ("darts", "darts2", "ms-darts")
# --quick's 3 epochs would round CHASE's warm-up share (10/70) to 0 epochs; --warmup 0.34 keeps one warm-up
# epoch, so the rule that the warm-up never wins the epoch choice is exercised.
QUICK = {"epochs": 3, "steps_per_epoch": 5, "holdout_batches": 2, "eigenvalue_iterations": 5, "evolution_seeds": 3,
         "warmup": 0.34}
FULL = {"epochs": 6, "steps_per_epoch": 10, "holdout_batches": 4, "eigenvalue_iterations": 10, "evolution_seeds": 3}


def search(out: Path, strategy: str, seed: int, budget: dict, workers: int, baseline: Path | None = None,
           extra: tuple[str, ...] = ()) -> float:
    """One CLI search (resumed if its store exists); its wall-clock in seconds. ``baseline``: an earlier
    run's baseline tracker, copied in first (the search re-uses it only where it matches data and settings,
    so every search starts from the same trained network and none trains it again)."""
    if baseline is not None and baseline.is_file() and not (out / baseline.name).exists():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(baseline, out / baseline.name)
    command = [sys.executable, "-m", "autoloss.cli", "search", "--tracker", "dimp_small", "--demo", "--strategy",
               strategy, "--seed", str(seed), "--out", str(out), "--workers", str(workers), "--quiet"]
    if strategy in DIFFERENTIABLE:
        command += ["--seeds", "3", "--epochs", str(budget["epochs"]), "--steps-per-epoch",
                    str(budget["steps_per_epoch"]), "--holdout-batches", str(budget["holdout_batches"])]
        if "warmup" in budget:
            command += ["--warmup", str(budget["warmup"])]
    command += list(extra)
    resumed = (out / "run.sqlite").exists()
    if resumed:
        command.append("--resume")
    walls = out.parent / "walls.json"  # each search's wall-clock, summed over its sessions (a resume adds to it)
    try:
        kept = json.loads(walls.read_text())
    except (OSError, ValueError):
        kept = {}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    kept[out.name] = (kept.get(out.name, 0.0) if resumed else 0.0) + time.perf_counter() - start
    from autoloss.files import write_atomic

    write_atomic(walls, json.dumps(kept, indent=2))
    return kept[out.name]


def derived(run: Path) -> list[dict]:
    from autoloss.engine.runs import open_run

    record = open_run(run)
    rows = []
    for verdict in record.verdicts(gate="derived"):
        row = record.candidate(verdict.candidate_id)
        rows.append({"epoch": row.generation, "seed": row.index, "genotype": row.genotype, "chosen": verdict.passed,
                     **verdict.metrics})
    return sorted(rows, key=lambda r: (r["seed"], r["epoch"]))


def step_seconds(rows: list[dict]) -> float | None:
    """Mean seconds of one search step (architecture + weight step) over epochs with architecture steps."""
    steps = [(r["arch_seconds"] + r["weight_seconds"]) / r["arch_steps"] for r in rows if r.get("arch_steps")]
    return statistics.mean(steps) if steps else None


def eigen_trajectory(rows: list[dict]) -> dict:
    by_epoch: dict[int, list[float]] = {}
    for r in rows:
        if isinstance(r.get("eigenvalue"), (int, float)):
            by_epoch.setdefault(r["epoch"], []).append(r["eigenvalue"])
    means = [statistics.mean(by_epoch[e]) for e in sorted(by_epoch)]
    slope = (means[-1] - means[0]) / (len(means) - 1) if len(means) > 1 else None
    return {"per_epoch": means, "mean": statistics.mean(means) if means else None,
            "last": means[-1] if means else None, "slope": slope}


def test_scores(task: dict, necks: dict[str, str], seeds: int, workers: int) -> dict[str, dict]:
    """Each neck retrained with ``seeds`` seeds (the proxy's ``test`` stage, ``workers`` in parallel): per
    neck the AO / SR0.5 / SR0.75 of every seed, their means and the AO's standard deviation."""
    from autoloss.engine.executors import Job, make_executor
    from autoloss.tracking.problem import evaluate

    jobs = [(name, spec, seed) for name, spec in necks.items() for seed in range(seeds)]
    runs: dict[str, list[dict]] = {name: [] for name in necks}
    executor = make_executor("local", workers=workers, start_method="spawn")
    try:
        for index, _, outcome in executor.stream((Job(evaluate, task, spec, "test", seed) for _, spec, seed in jobs),
                                                 3600):
            name, _, seed = jobs[index]
            if not outcome.ok:
                raise SystemExit(f"retraining {name} seed {seed} failed: {outcome.error or outcome.status}")
            runs[name].append({"seed": seed, **{k: outcome.value[k] for k in ("ao", "sr50", "sr75")}})
            print(f"  test {name} seed {seed}: AO {outcome.value['ao']:.3f}", flush=True)
    finally:
        executor.close()
    scores = {}
    for name, rows in runs.items():
        rows.sort(key=lambda r: r["seed"])  # they arrive as they finish
        aos = [r["ao"] for r in rows]
        scores[name] = {k: statistics.mean(r[k] for r in rows) for k in ("ao", "sr50", "sr75")}
        scores[name].update(ao_sd=statistics.stdev(aos) if len(aos) > 1 else 0.0, ao_seeds=aos)
    return scores


def claim_lines(test: dict[str, dict], evolution) -> list[str]:
    """Each searched cell's test AO over its training seeds against the hand neck's and against the random
    cell's: Welch's one-sided test, Holm-adjusted over the necks compared (autoloss.engine.evidence)."""
    from autoloss.engine import evidence

    names = [n for n in test if n not in ("hand neck", "random cell")]
    lines = [f"Claims ({evidence.TEST} t-test on the AO of the training seeds, level {evidence.ALPHA:g}, p "
             "Holm-adjusted over the necks compared; ± one standard error of the difference):", ""]
    for reference, others in (("hand neck", ["random cell", *names]), ("random cell", names)):
        family = evidence.holm({n: evidence.compare(test[n]["ao_seeds"], test[reference]["ao_seeds"])
                                for n in others})
        better = [n for n in others if family[n].better]
        lines.append(f"- against the {reference}: {len(better)} of {len(others)} called better"
                     + (f" ({', '.join(better)})" if better else "") + "; "
                     + "; ".join(f"{n} {family[n].difference:+.3f} ± {family[n].se:.3f} "
                                 f"(p {family[n].p:.2g}, Holm {family[n].p_adjusted:.2g})"
                                 for n in others if family[n].se is not None) + ".")
    return lines


def cached_test_scores(out: Path, task: dict, necks: dict[str, str], seeds: int, workers: int) -> tuple[dict, float]:
    """:func:`test_scores`, with each neck's result kept in ``out/test_scores.json`` by its spec and seeds
    (a rerun retrains only what changed); and the seconds this call spent retraining."""
    path = out / "test_scores.json"
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = {}
    key = {name: json.dumps([spec, seeds, task.get("settings", task)], sort_keys=True, default=str)
           for name, spec in necks.items()}
    missing = {name: spec for name, spec in necks.items() if key[name] not in kept}
    started = time.perf_counter()
    if missing:
        for name, scores in test_scores(task, missing, seeds, workers).items():
            kept[key[name]] = scores
        from autoloss.files import write_atomic

        write_atomic(path, json.dumps(kept, indent=2))
    return {name: kept[key[name]] for name in necks}, time.perf_counter() - started


def _f(value, digits: int = 3) -> str:
    return "-" if not isinstance(value, (int, float)) or not math.isfinite(value) else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="about 25 minutes on 2 idle cores (default)")
    size.add_argument("--full", action="store_true", help="6 epochs of 10 steps, 3 evolution seeds")
    parser.add_argument("--out", default="runs/bench-cells")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--skip-evolution", action="store_true")
    parser.add_argument("--skip-separate", action="store_true",
                        help="leave out darts2 with separate weight gradients (--no-share-gradient)")
    parser.add_argument("--test-seeds", type=int, default=3, help="training seeds per retrained neck (default 3)")
    args = parser.parse_args()
    budget = FULL if args.full else QUICK
    out = Path(args.out)
    results, walls = {}, {}
    load = f"{os.getloadavg()[0]:.1f} (1-minute average, 2 cores)"
    shared = out / DIFFERENTIABLE[0] / "baseline_tracker.pt"
    for strategy in DIFFERENTIABLE:
        run = out / strategy
        walls[strategy] = search(run, strategy, 0, budget, args.workers, shared)
        results[strategy] = derived(run)
        print(f"{strategy}: {walls[strategy]:.0f} s", flush=True)
    separate = None
    if not args.skip_separate:  # darts2 as DARTS and CHASE step: a separate weight gradient for the real step
        wall = search(out / "darts2-separate", "darts2", 0, budget, args.workers, shared, ("--no-share-gradient",))
        separate = (wall, derived(out / "darts2-separate"))
        print(f"darts2 --no-share-gradient: {wall:.0f} s", flush=True)
    evolution = []
    if not args.skip_evolution:
        for seed in range(budget["evolution_seeds"]):
            run = out / f"cse-seed{seed}"
            evolution.append((run, search(run, "cse", seed, budget, args.workers, shared)))
            print(f"cse seed {seed}: {evolution[-1][1]:.0f} s", flush=True)

    from autoloss.cell.representation import CellRepresentation
    from autoloss.engine.runs import open_run

    task = open_run(out / "darts").config["task"]
    rep = CellRepresentation()
    necks = {"hand neck": "hand", "random cell": rep.key(rep.random(random.Random(0)))}
    chosen = {}
    for strategy, rows in results.items():
        for r in rows:
            if r["chosen"]:
                chosen[(strategy, r["seed"])] = r
                necks[f"{strategy} seed {r['seed']}"] = r["genotype"]
    for run, _ in evolution:
        best = open_run(run).best("proxy", 2)
        searched = [(c, v) for c, v in best if c.generation >= 0][:1]
        if searched:
            necks[f"cse {run.name}"] = searched[0][0].genotype
    test, retrain_seconds = cached_test_scores(out, task, necks, args.test_seeds, args.workers)

    from autoloss.differentiable.schedule import warmup_epochs

    stored = open_run(out / "darts").config["options"]
    warmup = warmup_epochs(stored["epochs"], stored["warmup"])
    first, second = step_seconds(results["darts"]), step_seconds(results["darts2"])
    ratio = second / first if first and second else None
    hand = test["hand neck"]["ao"]
    searches_seconds = sum(walls.values()) + (separate[0] if separate else 0) + sum(w for _, w in evolution)
    command = f"python scripts/benchmark_cell_search.py {'--full' if args.full else '--quick'}"
    lines = [f"On the dimp_small demo proxy (synthetic data, CPU, 2 workers): {budget['epochs']} epochs of "
             f"{budget['steps_per_epoch']} steps, "
             f"3 seeds per differentiable strategy; the searches took {searches_seconds:.0f} s in all (a resumed "
             f"search counts each session's time). The first search's wall-clock includes training the baseline "
             f"tracker; the others re-use it. Load average when this run of the script started: {load}.", "",
             "| search | wall-clock (s) | step (s) | eigenvalue mean | last | slope / epoch | skips in chosen cells |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for strategy in DIFFERENTIABLE:
        eig = eigen_trajectory(results[strategy])
        skips = [chosen[(strategy, s)]["skips"] for s in range(3) if (strategy, s) in chosen]
        lines.append(f"| {strategy} | {walls[strategy]:.0f} | {_f(step_seconds(results[strategy]))} | {_f(eig['mean'])} "
                     f"| {_f(eig['last'])} | {_f(eig['slope'])} | {skips} |")
    if separate is not None:
        eig = eigen_trajectory(separate[1])
        skips = [r["skips"] for r in separate[1] if r["chosen"]]
        lines.append(f"| darts2 --no-share-gradient | {separate[0]:.0f} | {_f(step_seconds(separate[1]))} | "
                     f"{_f(eig['mean'])} | {_f(eig['last'])} | {_f(eig['slope'])} | {skips} |")
    for run, wall in evolution:
        lines.append(f"| cse ({run.name}) | {wall:.0f} | - | - | - | - | - |")
    separate_ratio = step_seconds(separate[1]) / first if separate is not None and first else None
    lines += ["", f"Second- against first-order step time: {_f(ratio, 2)}x (target at most 2.3x); "
              f"{_f(separate_ratio, 2)}x with a separate weight gradient for the real step (`--no-share-gradient`: "
              "five forward-backward passes per iteration against four).", "",
              "Largest Hessian eigenvalue per epoch (mean over seeds): " + "; ".join(
                  f"{s}: {', '.join(_f(v) for v in eigen_trajectory(results[s])['per_epoch'])}" for s in DIFFERENTIABLE),
              "", f"Chosen epoch per seed (1-based; warm-up: {warmup} epoch(s), never eligible): " + "; ".join(
                  f"{s}: {[chosen[(s, seed)]['epoch'] + 1 for seed in range(3) if (s, seed) in chosen]}"
                  for s in DIFFERENTIABLE),
              "", f"Each neck retrained on `weights/` and tracked on `test/` with {args.test_seeds} training seed(s) "
              f"({retrain_seconds:.0f} s this run; kept in test_scores.json); AO, SR0.5 and SR0.75 are means over "
              "those seeds.", "",
              "| neck (retrained) | test AO (± sd) | SR0.5 | SR0.75 | AO vs hand neck | AO per training seed |",
              "|---|---:|---:|---:|---:|---|"]
    for name, scores in test.items():
        delta = f"{scores['ao'] - hand:+.3f}" if name != "hand neck" else ""
        lines.append(f"| {name} | {_f(scores['ao'])} ± {_f(scores['ao_sd'])} | {_f(scores['sr50'])} | "
                     f"{_f(scores['sr75'])} | {delta} | {', '.join(_f(v) for v in scores['ao_seeds'])} |")
    lines += ["", *claim_lines(test, evolution)]
    body = "\n".join(lines)
    print(body)
    (out / "benchmark.json").write_text(json.dumps({"walls": walls, "ratio": ratio, "separate_ratio": separate_ratio,
                                                    "test": test}, indent=2))
    write_section(Path(args.markdown), "cell-search", "Tracking-cell search: evolution vs darts vs darts2 vs ms-darts",
                  body, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
