#!/usr/bin/env python
"""Search efficiency as the paper's Table 5 measures it: what each strategy spends to reach the same quality.

On the cheap noisy-digits task (a share of its test split held out, see ``--holdout``):

1. Vanilla evolution runs its full budget (``--population`` x ``--generations``) for each seed; the
   quality target Q* is the median over seeds of its best proxy fitness at the end, and its proxy
   evaluations (the median over seeds) are the cap every strategy gets.
2. Random search and CSE-Autoloss run under that cap (``max_evaluations``); CSE breeds as many
   generations as it needs (at most ``--max-generations``). Both stop once their best reaches
   Q* - ``--tolerance`` (``--full-budget`` runs them to the cap).
3. For each run: proxy evaluations, MOS evaluations, compute (proxy evaluations plus each MOS run at
   its cost, MOS steps / proxy steps) and wall-clock (every gate included, from the store's
   timestamps) until its best reaches Q* - tolerance. A run that never gets there is "not reached":
   it shows its best and the share of vanilla's gain over the baseline (CE) that the best covers,
   its whole budget as a lower bound (">"), and no ratio is claimed from it. Duplicates are never
   counted (autoloss.bench.table5).
4. Gate quality: Spearman between MOS and proxy fitness over a uniform sample of the candidates CSE
   ran the MOS on (those the MOS stopped are trained on the proxy by this benchmark only), and over
   those it passed; recall: of vanilla's 10 best losses, how many pass CSE's cheap gates and the
   first MOS bar.
5. Held-out: every run's best loss, CE and MAE (-p of the label) retrained with fresh seeds and
   scored on the held-out split (mean, sd, Welch's test against CE).

Figures are printed and written to docs/benchmarks.md (search section) with docs/benchmark_search.png.

    python scripts/benchmark_search.py            # default settings (estimated 15 min on 2 idle cores)
    python scripts/benchmark_search.py --quick    # a small check of the whole pipeline
    python scripts/benchmark_search.py --recall-only  # only the recall table, through this checkout's gates
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # this checkout's autoloss, not an installed one

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import autoloss.plugins  # noqa: E402, F401  (registers the built-in strategies)
from autoloss.bench.table5 import Reach, best_curve, proxy_events, spearman, stage_events, time_to_quality  # noqa: E402
from autoloss.engine.executors import Job, LocalExecutor  # noqa: E402
from autoloss.engine.registry import strategy as strategy_class  # noqa: E402
from autoloss.engine.schedulers import run_search  # noqa: E402
from autoloss.engine.evidence import compare  # noqa: E402
from autoloss.engine.store import BASELINE_GENERATION, RunStore  # noqa: E402
from autoloss.files import write_atomic  # noqa: E402
from autoloss.loss.representation import LossGateOptions  # noqa: E402
from autoloss.loss.space import load_space  # noqa: E402
from autoloss.strategies.cse import CseOptions  # noqa: E402
from autoloss.tasks.noisy_digits import evaluate  # noqa: E402
from autoloss.tasks.problem import task_problem  # noqa: E402
from benchmark_report import write_section  # noqa: E402

STRATEGIES = ("random", "vanilla", "cse")
CE = "Neg(Dot(Y,Log(Softmax(X))))"
MAE = "Neg(Dot(Y,Softmax(X)))"
# The targets of the issue (docs/benchmarks.md): against vanilla, proxy evaluations (milestone, goal), compute
# and wall-clock; the gates' quality.
TARGETS = {"vanilla_evals": (5, 20), "vanilla_compute": (3,), "vanilla_seconds": (3,), "spearman": 0.7, "recall": 7}
HELD_OUT_ALPHA = 0.05  # Welch's one-sided test of a found loss against CE on the held-out split
CSE_OPTIONS = ("top_k", "mos_margin", "max_mos", "mos_threshold", "mos_quantile", "distinct")


def until(cls, target: float):
    """``cls`` that also stops once its best ranking-stage fitness reaches ``target``."""

    class Until(cls):
        def finished(self, study) -> bool:
            best = study.hall_of_fame(1, searched_only=True)
            return super().finished(study) or bool(best and best[0].fitness >= target)

    Until.__name__ = f"{cls.__name__}Until"
    return Until


def task_params(args) -> dict:
    params = {"noise": args.noise, "steps": args.steps, "mos_steps": args.mos_steps, "holdout": args.holdout,
              "verify_per_class": args.verify_per_class}
    if args.mos_lr is not None:
        params["mos_lr"] = args.mos_lr
    return params


def mos_cost(args) -> float:
    """What one MOS run costs in proxy evaluations: its steps over the proxy's."""
    return args.mos_steps / args.steps


def benchmark_problem(args):
    return task_problem("noisy-digits", load_space("cls_softmax"), task_params(args),
                        LossGateOptions(cpv_timeout=args.cpv_timeout))


def one_run(name: str, seed: int, args, problem, executor, cap: int | None, target: float | None) -> dict:
    cls = strategy_class(name)
    options = {"population": args.population, "parents": args.parents}
    if name == "vanilla":
        options["generations"] = args.generations
    else:
        options.update(generations=args.max_generations, max_evaluations=cap)
    if name == "cse":
        options.update({key: getattr(args, key) for key in CSE_OPTIONS}, parents=args.cse_parents)
    if target is not None and not args.full_budget and name != "vanilla":
        cls = until(cls, target)
    path = Path(args.out) / f"{name}-{seed}.sqlite"
    if path.exists():
        path.unlink()
    store = RunStore(path)
    start = time.time()
    result = run_search(problem, cls(cls.Options(**options)), store, executor, seed=seed)
    seconds = time.time() - start
    events = proxy_events(store)
    best = max((e for e in events if e.fitness is not None), key=lambda e: e.fitness, default=None)
    run = {"strategy": name, "seed": seed, "path": str(path), "seconds": seconds,
           "evaluations": len(events), "mos": len(stage_events(store, "mos")),
           "bred": sum(1 for row in store.candidates() if row.generation != BASELINE_GENERATION),
           "best": best.fitness if best else None, "best_loss": best.genotype if best else None,
           "baseline": result.baseline.fitness if result.baseline else None}
    store.close()
    print(f"  {name:>7} seed {seed}: {run['bred']} bred, {run['evaluations']} proxy and {run['mos']} MOS evaluations, "
          f"best {run['best']}, {seconds:.0f} s", flush=True)
    return run


def measure(run: dict, target: float, cap: int, args) -> Reach:
    """The run's time to ``target``; random and CSE within the cap (vanilla's budget is its own)."""
    with RunStore(run["path"], readonly=True) as store:
        return time_to_quality(store, target, cap=None if run["strategy"] == "vanilla" else cap, mos_cost=mos_cost(args))


def evaluate_many(executor, task: dict, items: list[tuple[str, str, int]], timeout: float) -> list[float | None]:
    """(genotype, stage, seed) -> fitness (None when it failed), run on the executor's workers."""
    jobs = [Job(evaluate, task, genotype, stage, seed) for genotype, stage, seed in items]
    results: list[float | None] = [None] * len(jobs)
    for index, _, outcome in executor.stream(iter(jobs), timeout):
        if outcome.ok and isinstance(outcome.value, dict):
            results[index] = outcome.value.get("fitness")
    return results


def gate_quality(runs: list[dict], args, problem, executor, task: dict) -> dict:
    """MOS-to-proxy Spearman over a uniform sample of CSE's MOS-run candidates (and over those it passed),
    and the recall of vanilla's top 10."""
    passed_pairs, evaluated = [], []
    for run in (r for r in runs if r["strategy"] == "cse"):
        with RunStore(run["path"], readonly=True) as store:
            proxy = {e.candidate_id: e.fitness for e in proxy_events(store)}
            for event in stage_events(store, "mos"):
                if event.fitness is None:
                    continue
                known = proxy.get(event.candidate_id)
                if known is not None:
                    passed_pairs.append((event.fitness, known))
                evaluated.append((event.fitness, event.genotype, run["seed"], known))
    sample = random.Random(0).sample(evaluated, min(args.spearman_sample, len(evaluated)))
    missing = [(g, "proxy", seed) for _, g, seed, known in sample if known is None]
    trained = iter(evaluate_many(executor, task, missing, 600.0))
    sample_pairs = []
    for mos, _, _, known in sample:
        fit = known if known is not None else next(trained)
        if fit is not None:
            sample_pairs.append((mos, fit))

    # recall: vanilla's 10 best distinct losses (pooled over seeds) through CSE's cheap gates and MOS bar
    best: dict[str, tuple[float, str, int]] = {}
    for run in (r for r in runs if r["strategy"] == "vanilla"):
        with RunStore(run["path"], readonly=True) as store:
            fingerprints = {row.id: row.fingerprint for row in store.candidates()}
            for event in proxy_events(store):
                key = fingerprints.get(event.candidate_id) or event.genotype
                if event.fitness is not None and (key not in best or best[key][0] < event.fitness):
                    best[key] = (event.fitness, event.genotype, run["seed"])
    top = sorted(best.values(), key=lambda b: -b[0])[:10]
    representation = problem.representation
    gates = representation.gates()
    cheap_ok = []
    for _, genotype, _ in top:
        node = representation.parse(genotype)
        cheap_ok.append(all(gate.evaluate([node])[0].passed for gate in gates))
    for gate in gates:
        close = getattr(gate, "close", None)
        if close:
            close()
    seeds = sorted({seed for _, _, seed in top})
    bars = dict(zip(seeds, evaluate_many(executor, task, [(CE, "mos", s) for s in seeds], 600.0)))
    mos = evaluate_many(executor, task, [(g, "mos", s) for _, g, s in top], 600.0)
    recalled = [ok and m is not None and bars[s] is not None and m >= bars[s] - args.mos_margin
                for ok, m, (_, _, s) in zip(cheap_ok, mos, top)]
    return {"passed_pairs": len(passed_pairs), "sample_pairs": len(sample_pairs), "mos_evaluated": len(evaluated),
            "sample_trained": len(missing),
            "rho_passed": spearman(*zip(*passed_pairs)) if len(passed_pairs) > 1 else float("nan"),
            "rho_all": spearman(*zip(*sample_pairs)) if len(sample_pairs) > 1 else float("nan"),
            "top": [{"loss": g, "proxy": f, "cheap": ok, "mos": m, "bar": bars[s], "recalled": r}
                    for (f, g, s), ok, m, r in zip(top, cheap_ok, mos, recalled)],
            "recall": sum(recalled), "cheap_recall": sum(cheap_ok)}


RECALL_ROW = re.compile(r"^\| `(?P<loss>[^`]+)` \| (?P<proxy>[^|]+) \| (?P<cheap>pass|reject) \| "
                        r"(?P<mos>[^|]+) \| (?P<bar>[^|]+) \| (?P<passes>yes|no) \|$")
RECALL_LINE = re.compile(r"^- Gate recall: .*$", re.M)
RECALL_NOTE = re.compile(r"^- Recall rerun .*$\n", re.M)


def recall_only(args) -> int:
    """Recompute the cheap-gate recall of the losses listed in docs/benchmarks.md's recall table through
    this checkout's cheap gates (validity and convergence, as CSE's first generation runs them), keeping
    the recorded MOS scores and bar (the MOS does not depend on the gates): nothing is trained."""
    path = Path(args.docs) / "benchmarks.md"
    text = path.read_text()
    begin, end = text.index("<!-- search:begin -->"), text.index("<!-- search:end -->")
    section = text[begin:end]
    lines = section.split("\n")
    rows = [(i, RECALL_ROW.match(line)) for i, line in enumerate(lines)]
    rows = [(i, m) for i, m in rows if m]
    if not rows:
        raise SystemExit(f"no recall table in the search section of {path}")
    problem = benchmark_problem(args)
    representation = problem.representation
    gates = representation.gates()
    before = {"cheap": sum(m["cheap"] == "pass" for _, m in rows), "recall": sum(m["passes"] == "yes" for _, m in rows)}
    cheap_recall = recall = 0
    try:
        for i, m in rows:
            node = representation.parse(m["loss"])
            verdicts = [gate.evaluate([node])[0] for gate in gates]
            cheap = all(v.passed for v in verdicts)
            mos, bar = float(m["mos"]), float(m["bar"])
            recalled = cheap and mos >= bar - args.mos_margin
            cheap_recall += cheap
            recall += recalled
            failed = next((v for v in verdicts if not v.passed), None)
            print(f"  {'pass' if cheap else 'reject'} {m['loss']}" + (f"  ({failed})" if failed else ""))
            lines[i] = (f"| `{m['loss']}` | {m['proxy']} | {'pass' if cheap else 'reject'} | {m['mos']} | {m['bar']} | "
                        f"{'yes' if recalled else 'no'} |")
    finally:
        for gate in gates:
            close = getattr(gate, "close", None)
            if close:
                close()
    section = "\n".join(lines)
    line = (f"- Gate recall: of vanilla's 10 best losses (pooled over seeds, distinct by fingerprint), "
            f"**{recall}** pass CSE's cheap gates and the first generation's MOS bar (CE's MOS score minus the "
            f"margin); {cheap_recall} pass the cheap gates (target >= {TARGETS['recall']}: "
            f"{'met' if recall >= TARGETS['recall'] else 'not met'}).")
    note = (f"- Recall rerun {datetime.date.today().isoformat()} with `python scripts/benchmark_search.py "
            f"--recall-only`: the {len(rows)} losses of the table below through this checkout's cheap gates, "
            f"with the MOS scores and bar of the run above (nothing retrained); before the rerun "
            f"{before['recall']} passed the gates and the bar, {before['cheap']} the cheap gates.")
    section = RECALL_NOTE.sub("", section)
    section = RECALL_LINE.sub(lambda _: line + "\n" + note, section, count=1)
    print(line + "\n" + note)
    if not args.no_report:
        path.write_text(text[:begin] + section + text[end:])
        print(f"written to {path}")
    return 0


def held_out(runs: list[dict], args, executor, task: dict) -> list[dict]:
    """Each run's best loss, CE and MAE retrained with fresh seeds, scored on the held-out split."""
    entries = [("CE", CE), ("MAE", MAE)] + [(f"{r['strategy']}/{r['seed']}", r["best_loss"]) for r in runs
                                            if r["best_loss"]]
    items = [(loss, "test", seed) for _, loss in entries for seed in args.heldout_seeds]
    scores = evaluate_many(executor, task, items, 600.0)
    n = len(args.heldout_seeds)
    table = []
    for i, (name, loss) in enumerate(entries):
        values = scores[i * n:(i + 1) * n]
        table.append({"name": name, "loss": loss, "scores": values})
    ce = [v for v in table[0]["scores"] if v is not None]
    for row in table:
        values = [v for v in row["scores"] if v is not None]
        ok = len(values) == n
        row["mean"] = statistics.mean(values) if ok else float("nan")
        row["sd"] = statistics.stdev(values) if ok and len(values) > 1 else float("nan")
        row["margin"] = row["mean"] - statistics.mean(ce) if ok and len(ce) == n else float("nan")
        test = compare(values, ce) if ok and len(ce) == n else None
        row["p"] = test.p if test is not None else None
        row["beats"] = bool(row["p"] is not None and row["p"] < HELD_OUT_ALPHA)
    return table


def ratio(numerator: list[Reach], denominator: list[Reach], field: str) -> tuple[float, bool]:
    """Median of ``field`` over ``numerator`` / over ``denominator``; whether it is a lower bound (a
    numerator run that never reached the target, and no denominator run that did not)."""
    top = statistics.median(getattr(r, field) for r in numerator)
    bottom = statistics.median(getattr(r, field) for r in denominator)
    bound = any(r.lower_bound for r in numerator) and not any(r.lower_bound for r in denominator)
    return (top / bottom if bottom > 0 else float("inf")), bound


def gain_share(best: float | None, baseline: float | None, q_star: float) -> float | None:
    """The share of vanilla's gain over the baseline (Q* - baseline) that ``best`` covers."""
    if best is None or baseline is None or q_star <= baseline:
        return None
    return (best - baseline) / (q_star - baseline)


def comparison_line(other: str, by: dict, field: str, what: str, key: str | None) -> str:
    """CSE against ``other`` on ``field`` (medians over seeds), or "not reached" when a CSE run missed the target."""
    cse = by["cse"]
    missed = [r for r in cse if not r.reached]
    targets = TARGETS.get(key, ()) if key else ()
    if missed:
        return (f"- CSE vs {other}, {what}: **not reached** in {len(missed)} of {len(cse)} CSE runs, so no ratio "
                f"(the table shows how far each run got)" + (f"; target >= {' / '.join(f'{t}x' for t in targets)}: "
                                                               "not met" if targets else "") + ".")
    value, bound = ratio(by[other], cse, field)
    shown = f"{'more than ' if bound else ''}{value:.1f}x"
    names = ("milestone", "goal") if len(targets) == 2 else ("target",)
    verdicts = "; ".join(f"{name} >= {t}x: {'met' if value >= t else 'not met'}" for name, t in zip(names, targets))
    return f"- CSE vs {other}: **{shown}** {what} to reach the target (medians over seeds" + \
        (f"; {verdicts}" if verdicts else "") + ")."


def plot(runs: list[dict], target: float, path: Path, cost: float) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    colors = {"random": "tab:gray", "vanilla": "tab:blue", "cse": "tab:orange"}
    styles = ["-", "--", ":", "-."]
    seeds = sorted({r["seed"] for r in runs})
    for run in runs:
        with RunStore(run["path"], readonly=True) as store:
            curve = best_curve(store, mos_cost=cost)
        if not curve:
            continue
        counts, seconds, best, compute = zip(*curve)
        style = dict(color=colors[run["strategy"]], linestyle=styles[seeds.index(run["seed"]) % len(styles)],
                     where="post", label=f"{run['strategy']} seed {run['seed']}")
        for ax, x in zip(axes, (counts, compute, seconds)):
            ax.step(x, best, **style)
    labels = ("proxy evaluations", f"compute (proxy evaluations + {cost:g} per MOS run)",
              "wall-clock seconds (every gate included)")
    for ax, label in zip(axes, labels):
        ax.axhline(target, color="black", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(label)
    axes[0].set_ylim(bottom=max(0.0, target - 0.15))  # where the strategies differ; lower curves leave the frame
    axes[0].set_ylabel("best proxy fitness so far (clean accuracy)")
    axes[0].text(1, target, " Q* - tolerance", va="bottom", fontsize=8)
    axes[2].legend(fontsize=7, ncol=3, loc="lower right")
    fig.suptitle("Time to quality on noisy-digits: random vs vanilla evolution vs CSE-Autoloss")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def fmt(value, digits=3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def report(args, runs, reaches, q_star, target, cap, quality, heldout, wall, load) -> str:
    mode = "quick" if args.quick else "default"
    cost = mos_cost(args)
    cse = ", ".join(f"{key.replace('_', '-')} {getattr(args, key)}" for key in CSE_OPTIONS)
    lines = [
        f"Settings ({mode}): noisy-digits, {args.noise:.0%} symmetric label noise, proxy {args.steps} steps, "
        f"MOS {args.mos_steps} steps (lr {args.mos_lr or 'as the proxy'}) on {args.verify_per_class} noisy images per "
        f"class, {args.holdout:.0%} of the test split held out; population {args.population}, P={args.parents} "
        f"(vanilla, random); CSE: P={args.cse_parents}, {cse}; sympy at most {args.cpv_timeout:g} s per candidate in the convergence gate; seeds {args.seeds}; "
        f"{args.workers} local workers on {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"the whole benchmark took {fmt(wall / 60, 1)} min (load average {fmt(load, 1)} at its end).",
        "",
        f"- **Q\\* = {q_star:.4f}**: the median over seeds of vanilla evolution's best proxy fitness after its full "
        f"budget ({args.generations} generations of {args.population}); target Q\\* - {args.tolerance} = {target:.4f}. "
        f"The cap for every strategy: {cap} proxy evaluations (vanilla's median). "
        + ("Random and CSE stop once they reach the target. " if not args.full_budget else "")
        + f"Compute counts a MOS run as {cost:g} of a proxy evaluation (its {args.mos_steps} steps over the proxy's "
        f"{args.steps}). A run that misses the target shows its best, the share of vanilla's gain over CE (Q\\* minus "
        "CE's proxy fitness at the run's seed) that the best covers, and its whole budget as a lower bound (\">\").",
        "",
        "| strategy | seed | bred | proxy evaluations (total) | best proxy fitness | share of vanilla's gain over CE | "
        "reaches target | proxy evaluations to target | MOS evaluations to target | compute to target | seconds to target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for run, reach in zip(runs, reaches):
        share = gain_share(run["best"], run["baseline"], q_star)
        lines.append(f"| {run['strategy']} | {run['seed']} | {run['bred']} | {run['evaluations']} | {fmt(run['best'], 4)} | "
                     f"{fmt(share, 2)} | {reach.reached_text} | {reach.shown('proxy_evaluations')} | "
                     f"{reach.shown('mos_evaluations')} | {reach.shown('compute', 1)} | {reach.shown('seconds', 1)} |")
    lines.append("")
    by = {s: [r for run, r in zip(runs, reaches) if run["strategy"] == s] for s in STRATEGIES}
    lines += [comparison_line("vanilla", by, "proxy_evaluations", "fewer proxy evaluations", "vanilla_evals"),
              comparison_line("vanilla", by, "compute", "less compute (MOS runs counted)", "vanilla_compute"),
              comparison_line("vanilla", by, "seconds", "less wall-clock", "vanilla_seconds"),
              comparison_line("random", by, "proxy_evaluations", "fewer proxy evaluations", None)]
    lines += [
        f"- Gate quality: MOS-to-proxy Spearman **{fmt(quality['rho_all'])}** over a uniform sample of "
        f"{quality['sample_pairs']} of the {quality['mos_evaluated']} candidates CSE ran the MOS on ({quality['sample_trained']} "
        f"that the MOS stopped were trained on the proxy by this benchmark only); {fmt(quality['rho_passed'])} over the "
        f"{quality['passed_pairs']} it sent to the proxy, which are all from the top of the MOS ranking "
        f"(target >= {TARGETS['spearman']}: {'met' if quality['rho_all'] >= TARGETS['spearman'] else 'not met'}).",
        f"- Gate recall: of vanilla's 10 best losses (pooled over seeds, distinct by fingerprint), "
        f"**{quality['recall']}** pass CSE's cheap gates and the first generation's MOS bar (CE's MOS score minus the "
        f"margin); {quality['cheap_recall']} pass the cheap gates (target >= {TARGETS['recall']}: "
        f"{'met' if quality['recall'] >= TARGETS['recall'] else 'not met'}).",
        "",
        "| vanilla's top 10 | proxy | cheap gates | MOS | MOS bar | passes |",
        "| --- | ---: | --- | ---: | ---: | --- |",
    ]
    for row in quality["top"]:
        lines.append(f"| `{row['loss']}` | {fmt(row['proxy'], 4)} | {'pass' if row['cheap'] else 'reject'} | "
                     f"{fmt(row['mos'])} | {fmt(row['bar'])} | {'yes' if row['recalled'] else 'no'} |")
    lines += ["", f"Held-out: each loss retrained on the noisy training split with seeds {args.heldout_seeds} (never "
              "used by a search) and scored on the held-out split, which no search stage saw. \"Beats CE\": Welch's "
              f"one-sided test of its mean against CE's, p < {HELD_OUT_ALPHA}.", "",
              "| loss | from | held-out accuracy, mean | sd | difference to CE | Welch p | beats CE |",
              "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for row in heldout:
        lines.append(f"| `{row['loss']}` | {row['name']} | {fmt(row['mean'], 4)} | {fmt(row['sd'], 4)} | "
                     f"{fmt(row['margin'], 4)} | {fmt(row.get('p'), 4)} | "
                     f"{'-' if row['name'] == 'CE' else 'yes' if row['beats'] else 'no'} |")
    cse_rows = [row for row in heldout if row["name"].startswith("cse/")]
    lines += ["", f"- Held-out: CSE's found losses beat CE (Welch p < {HELD_OUT_ALPHA}, {len(args.heldout_seeds)} "
              f"seeds each) in **{sum(r['beats'] for r in cse_rows)} of {len(cse_rows)}** runs.",
              versus_vanilla(heldout), "",
              "![best proxy fitness against proxy evaluations, compute and wall-clock](benchmark_search.png)"]
    return "\n".join(lines)


def versus_vanilla(heldout: list[dict]) -> str:
    """CSE's found loss against vanilla's of the same seed on the held-out split (Welch's one-sided tests)."""
    rows = {row["name"]: row for row in heldout}
    parts = []
    for name in sorted(n for n in rows if n.startswith("cse/")):
        seed = name.split("/", 1)[1]
        cse, vanilla = rows[name], rows.get(f"vanilla/{seed}")
        values = [[v for v in r["scores"] if v is not None] for r in (cse, vanilla)] if vanilla else None
        if not values or min(len(v) for v in values) < 2:
            continue
        test = compare(values[0], values[1])
        if test.p is None:
            continue
        verdict = ("CSE's above" if test.p < HELD_OUT_ALPHA else "vanilla's above" if test.p_worse < HELD_OUT_ALPHA
                   else "not told apart")
        parts.append(f"seed {seed}: {fmt(cse['mean'], 4)} against {fmt(vanilla['mean'], 4)}, {verdict} "
                     f"(p = {fmt(test.p, 3)} / {fmt(test.p_worse, 3)})")
    return ("- The same seed's found losses, CSE's against vanilla's, on the held-out split (Welch's one-sided tests, "
            f"p of CSE's above / below, level {HELD_OUT_ALPHA}): " + "; ".join(parts) + ".") if parts else ""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets: checks the whole pipeline in minutes")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--population", type=int, default=None)
    parser.add_argument("--generations", type=int, default=None, help="vanilla's generations (its full budget)")
    parser.add_argument("--max-generations", type=int, default=None, help="at most this many for random and CSE")
    parser.add_argument("--parents", type=int, default=5, help="P of vanilla evolution (the paper's)")
    defaults = CseOptions()  # CSE runs with the defaults of --strategy cse unless told otherwise
    parser.add_argument("--cse-parents", type=int, default=defaults.parents, help="P of CSE (its default)")
    parser.add_argument("--top-k", type=int, default=3, help="K of CSE: 3 of a population of 100 (--strategy cse's "
                        "default is 10, the paper's)")
    parser.add_argument("--mos-margin", type=float, default=defaults.mos_margin)
    parser.add_argument("--max-mos", type=int, default=defaults.max_mos)
    parser.add_argument("--mos-threshold", choices=("previous-best", "reference"), default=defaults.mos_threshold)
    parser.add_argument("--mos-quantile", type=float, default=defaults.mos_quantile)
    parser.add_argument("--distinct", action=argparse.BooleanOptionalAction, default=defaults.distinct,
                        help="CSE sends no near-clone of a proxy-evaluated candidate on; parents of distinct behaviour")
    parser.add_argument("--cpv-timeout", type=float, default=1.0,
                        help="seconds sympy may take per candidate in the convergence gate (a proxy run here takes "
                             "about one)")
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--steps", type=int, default=1000, help="proxy training steps")
    parser.add_argument("--mos-steps", type=int, default=80)
    parser.add_argument("--mos-lr", type=float, default=0.02,
                        help="the MOS's learning rate (0.02: the MOS then memorises the noise as the proxy does)")
    parser.add_argument("--verify-per-class", type=int, default=20)
    parser.add_argument("--holdout", type=float, default=0.4, help="share of the test split held out")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--spearman-sample", type=int, default=None,
                        help="candidates CSE ran the MOS on, drawn uniformly, for the MOS-to-proxy Spearman")
    parser.add_argument("--heldout-seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("--full-budget", action="store_true", help="run random and CSE to the cap")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmark_search"), help="where the run stores go")
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    parser.add_argument("--no-report", action="store_true", help="print only; docs/ untouched")
    parser.add_argument("--recall-only", action="store_true", help="only recompute the recall table of "
                        "docs/benchmarks.md (its listed losses through this checkout's cheap gates; the recorded "
                        "MOS scores and bar are kept); nothing is trained")
    parser.add_argument("--render", metavar="OUT", help="only rewrite the report and plot from OUT/summary.json "
                        "and OUT's run stores (a finished benchmark); nothing is trained")
    args = parser.parse_args(argv)
    quick = {"seeds": [0, 1], "population": 30, "generations": 2, "max_generations": 20, "spearman_sample": 12}
    default = {"seeds": [0, 1, 2], "population": 100, "generations": 5, "max_generations": 60, "spearman_sample": 40}
    for key, value in (quick if args.quick else default).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def render(args) -> int:
    """Rewrite the report from a finished benchmark's summary and stores."""
    summary = json.loads(Path(args.render, "summary.json").read_text())
    for key, value in summary["args"].items():
        if key not in ("render", "docs", "no_report"):
            setattr(args, key, value)
    runs, q_star, cap = summary["runs"], summary["q_star"], summary["cap"]
    target = q_star - args.tolerance
    reaches = [measure(run, target, cap, args) for run in runs]
    finish(args, runs, reaches, q_star, target, cap, summary["quality"], summary["heldout"], summary["wall"],
           summary["load"])
    return 0


def finish(args, runs, reaches, q_star, target, cap, quality, heldout, wall, load=None) -> None:
    load = os.getloadavg()[0] if load is None else load
    text = report(args, runs, reaches, q_star, target, cap, quality, heldout, wall, load)
    print("\n" + text)
    Path(args.out, "summary.json").write_text(json.dumps(
        {"args": vars(args), "runs": runs, "reaches": [r.__dict__ for r in reaches], "q_star": q_star, "cap": cap,
         "quality": quality, "heldout": heldout, "wall": wall, "load": load}, indent=1, default=str))
    if not args.no_report:
        docs = Path(args.docs)
        docs.mkdir(parents=True, exist_ok=True)
        plot(runs, target, docs / "benchmark_search.png", mos_cost(args))
        command = "python scripts/benchmark_search.py" + (" --quick" if args.quick else "")
        write_section(docs / "benchmarks.md", "search", "Search efficiency: time to quality (the paper's Table 5)",
                      text, command=command)
        print(f"\nwritten to {docs / 'benchmarks.md'} and {docs / 'benchmark_search.png'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.recall_only:
        return recall_only(args)
    if args.render:
        args.out = args.render
        return render(args)
    began = time.time()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    problem = benchmark_problem(args)
    task = problem.task
    executor = LocalExecutor(workers=args.workers)
    try:
        print("vanilla evolution, full budget:", flush=True)
        runs = [one_run("vanilla", seed, args, problem, executor, None, None) for seed in args.seeds]
        q_star = statistics.median(r["best"] for r in runs)
        target = q_star - args.tolerance
        cap = int(statistics.median(r["evaluations"] for r in runs))
        print(f"Q* = {q_star:.4f}, target {target:.4f}, cap {cap} proxy evaluations", flush=True)
        for name in ("random", "cse"):
            print(f"{name}:", flush=True)
            runs += [one_run(name, seed, args, problem, executor, cap, target) for seed in args.seeds]
        runs.sort(key=lambda r: (STRATEGIES.index(r["strategy"]), r["seed"]))
        reaches = [measure(run, target, cap, args) for run in runs]
        print("gate quality ...", flush=True)
        quality = gate_quality(runs, args, problem, executor, task)
        print("held-out ...", flush=True)
        heldout = held_out(runs, args, executor, task)
    finally:
        executor.close()
    finish(args, runs, reaches, q_star, target, cap, quality, heldout, time.time() - began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
