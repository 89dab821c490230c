"""Scheduling of expensive evaluations: throughput and worker utilisation for W workers.

    python scripts/benchmark_scaling.py            # W = 1, 2, 4, 8; local and Ray; both schedulers

Evaluations are stubs that sleep for a random, heavy-tailed time (log-normal), so the figures say
what a server of W GPUs would get from the scheduling alone, on any machine. The search is the
engine's own (a one-stage evolutionary strategy over a stub representation, every evaluation
recorded in a run store), so the overhead of breeding, screening and recording is included.

Throughput is proxy evaluations per second of wall-clock, counted from the baseline's result (the
workers are up, the search proper begins) to the last result; utilisation is the time workers
spent in evaluations over W x that wall-clock. Target: steady-state at least 0.9 x W times the throughput of one
worker. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from autoloss.engine.executors import LocalExecutor, RayExecutor  # noqa: E402
from autoloss.engine.protocols import Proposal, Verdict  # noqa: E402
from autoloss.engine.schedulers import run_search  # noqa: E402
from autoloss.engine.store import RunStore  # noqa: E402
from autoloss.engine.study import Problem  # noqa: E402
from autoloss.strategies.vanilla import VanillaOptions, VanillaStrategy  # noqa: E402
from benchmark_report import write_section  # noqa: E402


class Serial:
    """A stub representation: genotypes are serial numbers, each a different function."""

    kind = "stub"

    def parse(self, text):
        return int(text)

    def key(self, genotype):
        return str(genotype)

    def describe(self, genotype):
        return {"expression": str(genotype)}

    def fingerprint(self, genotype):
        return str(genotype)

    def initial(self):
        return 0

    def gates(self):
        return [AlwaysValid()]


class AlwaysValid:
    name = "validity"

    def evaluate(self, candidates):
        return [Verdict(self.name, True, "ok") for _ in candidates]


class Counter:
    """Breeding hands out serial numbers 1, 2, 3...: no duplicates, so every candidate is evaluated, and
    every measured search sleeps through the same sequence of times whatever its scheduler and W."""

    def __init__(self):
        self.next = 0

    def _fresh(self, rng):
        self.next += 1
        return self.next

    def initial_population(self, size, rng):
        return [self._fresh(rng) for _ in range(size)]

    def random(self, rng):
        return self._fresh(rng)

    def mutate(self, genotype, rng):
        return self._fresh(rng)

    def crossover(self, a, b, rng):
        return self._fresh(rng), self._fresh(rng)


class NextSerials(VanillaStrategy):
    """Vanilla evolution's pipeline, proposing the next serial numbers: the same evaluations, in the
    same order, for every scheduler and W."""

    def propose(self, study, generation, count, rng):
        return [Proposal(study.operators._fresh(rng), (), "serial") for _ in range(count)]


def sleeping_evaluation(task: dict, genotype: str, stage: str, seed: int) -> dict:
    """Sleep a log-normal time (heavy-tailed: a few evaluations take several times the median)."""
    rng = random.Random(f"{genotype}-{stage}")
    seconds = task["median"] * math.exp(rng.gauss(0.0, task["sigma"]))
    time.sleep(min(seconds, task["median"] * 20))
    return {"fitness": rng.random(), "slept": seconds}


def measure(executor, workers: int, mode: str, evaluations: int, median: float, sigma: float) -> dict:
    problem = Problem(representation=Serial(), operators=Counter(), evaluate=sleeping_evaluation,
                      task={"median": median, "sigma": sigma}, metric="stub", timeouts={"proxy": 600.0})
    population = max(2 * workers, 4)
    generations = max(1, round(evaluations / population))
    strategy = NextSerials(VanillaOptions(population=population, generations=generations, parents=2))
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "run.sqlite")
        run_search(problem, strategy, store, executor, seed=0, mode=mode)
        verdicts = store.verdicts(gate="proxy")
        baseline = [v for v in verdicts if store.candidate(v.candidate_id).generation < 0][0]
        verdicts = [v for v in verdicts if store.candidate(v.candidate_id).generation >= 0]
        # from the baseline's result (workers started, the search begins) to the last result
        wall = max(v.created for v in verdicts) - baseline.created
        busy = sum(v.seconds for v in verdicts)
        store.close()
    return {"evaluations": len(verdicts), "wall": wall, "throughput": len(verdicts) / wall,
            "utilisation": busy / (workers * wall)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--evaluations", type=int, default=160, help="proxy evaluations per measured search")
    parser.add_argument("--median", type=float, default=0.25, help="median seconds of one stub evaluation")
    parser.add_argument("--sigma", type=float, default=0.8, help="log-normal sigma (the tail)")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--report", default=str(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"))
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    kinds = ["local"] + ([] if args.no_ray else ["ray"])
    rows, base = [], {}
    for kind in kinds:
        if kind == "ray":
            try:
                import ray
            except ImportError:
                print("ray is not installed: skipping the Ray executor")
                continue
            ray.init(num_cpus=max(counts), include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        for workers in counts:
            for mode in ("generational", "steady-state"):
                executor = (LocalExecutor(workers=workers) if kind == "local"
                            else RayExecutor(num_gpus=0, num_cpus=1, retries=0, max_in_flight=workers))
                try:
                    result = measure(executor, workers, mode, args.evaluations, args.median, args.sigma)
                finally:
                    executor.close()
                base.setdefault((kind, mode), result["throughput"] if workers == 1 else None)
                one = base[(kind, mode)]
                speedup = result["throughput"] / one if one else float("nan")
                rows.append((kind, mode, workers, result, speedup))
                print(f"{kind:5} {mode:13} W={workers}: {result['evaluations']} evaluations in {result['wall']:.1f} s, "
                      f"{result['throughput']:.2f}/s, utilisation {result['utilisation']:.0%}, "
                      f"{speedup:.2f}x one worker", flush=True)
        if kind == "ray":
            ray.shutdown()
    lines = [f"Stub evaluations sleeping a log-normal time (median {args.median} s, sigma {args.sigma}: heavy-tailed), "
             f"about {args.evaluations} proxy evaluations per search, vanilla pipeline proposing serial numbers (every candidate evaluated, the same sleeps in the same order for every row), "
             "population 2W (at least 4); wall-clock from the baseline's result to the last result. Throughput relative to the same executor and scheduler with one worker; "
             "target: steady-state at least 0.9 x W.", "",
             "| executor | scheduler | W | evaluations | wall s | evaluations/s | utilisation | x one worker | 0.9 W |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for kind, mode, workers, result, speedup in rows:
        meets = "" if mode != "steady-state" else ("yes" if speedup >= 0.9 * workers else "no")
        lines.append(f"| {kind} | {mode} | {workers} | {result['evaluations']} | {result['wall']:.1f} | "
                     f"{result['throughput']:.2f} | {result['utilisation']:.0%} | {speedup:.2f} | {meets} |")
    lines += ["", "Generational scheduling waits for the slowest evaluation of each generation (the heavy tail), "
              "steady-state dispatches the next candidate the moment a worker falls idle. Real evaluations: local "
              "workers now get an equal share of the CPU threads (cores // W each, and one GPU each where there "
              "are GPUs), so two workers no longer both run torch on every core."]
    text = "\n".join(lines)
    print(text)
    if not args.no_report:
        write_section(Path(args.report), "scaling", "Scheduling: throughput and utilisation for W workers", text,
                      command="python scripts/benchmark_scaling.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
