#!/usr/bin/env python
"""Search efficiency: random search vs vanilla evolution vs CSE-Autoloss (the paper's Table 5).

The three strategies run in one process on the cheap noisy-digits task with equal budgets (the same
number of candidates bred per generation and of generations, the same proxy schedule, the same
executor) for several seeds. For each run it counts the proxy evaluations and the wall-clock until
the best fitness reaches the cross-entropy baseline's fitness, and the best fitness at the end. The
figures are printed, written to docs/benchmarks.md with a plot (docs/benchmark_search.png).

Besides the paper's targets it prints what bounds them on this task: the share of each strategy's
proxy evaluations that reach the baseline (its hit rate), and the ceiling any gate could show, since
even an oracle that only sends baseline-reaching candidates needs one evaluation. A strategy that
never reaches the baseline counts as "more than its whole budget".

    python scripts/benchmark_search.py [--seeds 0 1 2] [--population 120] [--generations 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from autoloss.engine.evolution import Evolution, SearchConfig  # noqa: E402
from autoloss.engine.executors import LocalExecutor  # noqa: E402
from autoloss.engine.store import RunStore  # noqa: E402
from autoloss.loss.space import load_space  # noqa: E402
from autoloss.problems import task_problem  # noqa: E402
from autoloss.tasks.noisy_digits import evaluate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_report import write_section  # noqa: E402

STRATEGIES = ("random", "vanilla", "cse")
CE = "Neg(Dot(Y,Log(Softmax(X))))"


def one_run(strategy: str, seed: int, args, directory: Path, baseline: float) -> dict:
    problem = task_problem("noisy-digits", load_space("cls_softmax"), {"steps": args.steps})
    config = SearchConfig(strategy=strategy, population=args.population, generations=args.generations,
                          top_k=args.top_k, parents=args.parents, seed=seed)
    store = RunStore(directory / f"{strategy}-{seed}.sqlite")
    executor = LocalExecutor(workers=args.workers)
    start = time.time()
    try:
        result = Evolution(problem, config, store, executor).run()
    finally:
        executor.close()
    # proxy evaluations in the order they finished (the baseline's own evaluation excluded)
    evaluations = sorted((v for v in store.verdicts(gate="proxy")
                          if store.candidate(v.candidate_id).generation >= 0 and v.seconds > 0),
                         key=lambda v: v.created)
    curve, best, reached, hits = [], float("-inf"), None, 0
    for count, verdict in enumerate(evaluations, 1):
        fitness = verdict.metrics.get("fitness")
        if isinstance(fitness, (int, float)):
            best = max(best, fitness)
            hits += fitness >= baseline
        curve.append(best)
        if reached is None and best >= baseline:
            reached = (count, verdict.created - start)
    store.close()
    return {"strategy": strategy, "seed": seed, "evaluations": len(evaluations), "curve": curve,
            "reached": reached, "hits": hits,
            "best": max((e.fitness for e in result.best if e.generation >= 0), default=float("nan")),
            "seconds": time.time() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--population", type=int, default=120)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--parents", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000, help="proxy training steps")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--docs", default=str(Path(__file__).resolve().parents[1] / "docs"))
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            task = {"space": "cls_softmax", "steps": args.steps}
            baseline = evaluate(task, CE, "proxy", seed)["fitness"]
            for strategy in STRATEGIES:
                run = one_run(strategy, seed, args, Path(tmp), baseline)
                run["baseline"] = baseline
                runs.append(run)
                print(f"seed {seed} {strategy:>7}: {run['evaluations']:4d} proxy evaluations, reached CE "
                      f"({baseline:.4f}) after {run['reached'][0] if run['reached'] else '-'}, best {run['best']:.4f}, "
                      f"{run['seconds']:.0f} s", flush=True)

    def summary(strategy):
        mine = [r for r in runs if r["strategy"] == strategy]
        reached = [r["reached"] for r in mine if r["reached"]]
        evals = statistics.mean(r[0] for r in reached) if reached else None
        secs = statistics.mean(r[1] for r in reached) if reached else None
        return mine, reached, evals, secs

    lines = [
        f"noisy-digits (40% symmetric label noise, {args.steps} proxy steps), population {args.population}, "
        f"{args.generations} generations, K={args.top_k}, P={args.parents}, seeds {args.seeds}, "
        f"{args.workers} local workers; {os.cpu_count()} cores, Python {platform.python_version()}.",
        "Equal budgets: every strategy breeds the same number of candidates; random search draws random trees, "
        "vanilla evolution sends every valid candidate to the proxy, CSE sends the top K after CPV and MOS. "
        "Hit rate: the share of a strategy's proxy evaluations that reach the CE baseline.",
        "",
        "| strategy | proxy evaluations (total) | hit rate | runs reaching CE | proxy evaluations to reach CE | "
        "seconds to reach CE | best fitness at the end | CE baseline |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    means, totals = {}, {}
    for strategy in STRATEGIES:
        mine, reached, evals, secs = summary(strategy)
        means[strategy] = evals
        totals[strategy] = statistics.mean(r["evaluations"] for r in mine)
        hit_rate = sum(r["hits"] for r in mine) / max(1, sum(r["evaluations"] for r in mine))
        lines.append(
            f"| {strategy} | {totals[strategy]:.0f} | {hit_rate:.0%} | {len(reached)}/{len(mine)} | "
            f"{'-' if evals is None else f'{evals:.1f}'} | {'-' if secs is None else f'{secs:.0f}'} | "
            f"{statistics.mean(r['best'] for r in mine):.4f} | {statistics.mean(r['baseline'] for r in mine):.4f} |")
    lines.append("")
    if means["cse"]:
        for other, target in (("vanilla", 20), ("random", 100)):
            mine = [r for r in runs if r["strategy"] == other]
            if all(r["reached"] for r in mine):
                ratio = means[other] / means["cse"]
                verdict = "met" if ratio >= target else "not met"
                lines.append(f"- To reach the CE baseline CSE needs **{ratio:.1f}x** fewer proxy evaluations than {other} "
                             f"(paper's target: {target}x, {verdict}).")
            else:
                # a run that never reached it needed more than its whole budget: a lower bound
                floor = statistics.mean(r["reached"][0] if r["reached"] else r["evaluations"] for r in mine)
                verdict = "met" if floor / means["cse"] >= target else "not shown"
                lines.append(f"- {other} did not reach the CE baseline in {sum(not r['reached'] for r in mine)} of "
                             f"{len(mine)} runs; counting those as their whole budget, CSE needs **more than "
                             f"{floor / means['cse']:.1f}x** fewer proxy evaluations (paper's target: {target}x, {verdict}).")
        if means["vanilla"]:
            lines.append(f"- Ceiling on this task: a perfect gate that only sends CE-reaching candidates needs 1 evaluation, "
                         f"so no gate can beat vanilla by more than {means['vanilla']:.1f}x here.")
        lines.append(f"- Over the whole budget (the paper's #Evaluated loss) vanilla ran {totals['vanilla'] / max(1, totals['cse']):.1f}x "
                     f"and random {totals['random'] / max(1, totals['cse']):.1f}x as many proxy evaluations as CSE.")
    else:
        lines.append("- CSE did not reach the CE baseline in any run.")
    per_seed = ", ".join(f"{r['strategy']}/{r['seed']}: {r['reached'][0] if r['reached'] else 'never'}" for r in runs)
    lines.append(f"- Per run, proxy evaluations to reach CE: {per_seed}.")
    lines.append("")
    lines.append("![best fitness against proxy evaluations](benchmark_search.png)")
    text = "\n".join(lines)
    print("\n" + text)

    if not args.no_report:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(7, 4))
        colors = {"random": "tab:gray", "vanilla": "tab:blue", "cse": "tab:orange"}
        for run in runs:
            ax.plot(range(1, len(run["curve"]) + 1), run["curve"], color=colors[run["strategy"]], alpha=0.8,
                    label=run["strategy"] if run["seed"] == args.seeds[0] else None)
        ax.axhline(statistics.mean(r["baseline"] for r in runs), color="black", linestyle="--", label="CE baseline")
        ax.set_xscale("log")
        ax.set_xlabel("proxy evaluations")
        ax.set_ylabel("best clean test accuracy so far")
        ax.set_title("Search efficiency on noisy-digits")
        ax.legend()
        fig.tight_layout()
        fig.savefig(docs / "benchmark_search.png", dpi=120)
        write_section(docs / "benchmarks.md", "search", "Search efficiency: random vs vanilla evolution vs CSE",
                      text, command="python scripts/benchmark_search.py")
        print(f"\nwritten to {docs / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
