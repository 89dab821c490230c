"""Step time of second- against first-order DARTS on the demo tracking supernet, measured in one process.

    python scripts/benchmark_darts_step.py RUN_DIR [--rounds 6] [--steps 4] [--markdown docs/benchmarks.md]

RUN_DIR is a differentiable demo search's run directory (``autoloss search --tracker dimp_small --demo
--strategy darts``; its data and baseline tracker are used, nothing in it is changed). Three searches
of that supernet, one thread each, take turns epoch by epoch (``--rounds`` epochs of ``--steps``
iterations, architecture steps from the first): ``darts`` (first order), ``darts2`` (second order,
one weight gradient shared by the virtual and the real step: four forward-backward passes) and
``darts2 --no-share-gradient`` (the real step's gradient computed apart: five passes). A step is one
architecture step plus one weight step, timed as the search records it. Taking turns in one process
keeps machine load and caches alike for all three, which two separate runs on a shared machine do
not (their step times differed by 30% from run to run). Its section (``darts-step``) of ``--markdown``
is replaced.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from benchmark_report import write_section  # noqa: E402

VARIANTS = (("darts", "darts", {}), ("darts2", "darts2", {"share_gradient": True}),
            ("darts2 --no-share-gradient", "darts2", {"share_gradient": False}))


def searches(run_dir: Path, rounds: int, steps: int):
    """(name, DifferentiableSearch) per variant, all from the run's task, seed 0, one thread."""
    from autoloss.differentiable.options import Darts2Options, DartsOptions
    from autoloss.differentiable.worker import EpochJob, build_search, supernet_sizes
    from autoloss.engine.runs import open_run
    from autoloss.tracking.problem import worker_settings
    from autoloss.tracking.supernet_model import build_supernet_search, supernet_search

    task = open_run(run_dir).config["task"]
    settings = dataclasses.replace(worker_settings(task), threads=1)
    splits = task.get("splits", {})
    built = []
    for name, method, extra in VARIANTS:
        cls = Darts2Options if method == "darts2" else DartsOptions
        options = cls(epochs=rounds, seeds=1, warmup=0.0, patience=None, steps_per_epoch=steps, holdout_batches=1,
                      eigenvalue=False, **extra)
        job = EpochJob(task, method, asdict(options), 0, 0, 0, str(run_dir / "unused.pt"), supernet_search)
        setup = build_supernet_search(settings, task["data_root"], task["baseline"], seed=job.seed_value,
                                      splits=splits, **supernet_sizes(job.options))
        built.append((name, build_search(job, setup)))
    return settings, built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    from autoloss.tracking.train import torch_threads

    settings, built = searches(args.run_dir, args.rounds, args.steps)
    per_step: dict[str, list[float]] = {name: [] for name, _ in built}
    started = time.perf_counter()
    with torch_threads(1):
        for epoch in range(args.rounds):
            for name, search in built:
                record = search.run_epoch(epoch)
                per_step[name].append((record["arch_seconds"] + record["weight_seconds"]) / record["arch_steps"])
            print(f"round {epoch + 1}: " + ", ".join(f"{n} {per_step[n][-1]:.3f} s" for n, _ in built), flush=True)
    rounds = {n: v[1:] or v for n, v in per_step.items()}  # the first round warms caches up
    median = {n: statistics.median(v) for n, v in rounds.items()}
    first = median["darts"]
    command = f"python scripts/benchmark_darts_step.py {args.run_dir} --rounds {args.rounds} --steps {args.steps}"
    lines = [f"On the dimp_small demo supernet (C = "
             f"{settings.channels}, {settings.crop_size} px crops, batch {settings.batch}, one thread): {args.rounds} "
             f"rounds of {args.steps} steps per variant, taking turns; the first round left out (warm-up); "
             f"{time.perf_counter() - started:.0f} s in all.", "",
             "| variant | passes per step | median step (s) | x darts | per round (s) |", "|---|---:|---:|---:|---|"]
    passes = {"darts": "2", "darts2": "4", "darts2 --no-share-gradient": "5"}
    for name, values in rounds.items():
        lines.append(f"| {name} | {passes[name]} | {median[name]:.3f} | {median[name] / first:.2f} | "
                     f"{', '.join(f'{v:.3f}' for v in values)} |")
    lines += ["", f"Second- against first-order step time: {median['darts2'] / first:.2f}x with the shared gradient "
              f"(the default), {median['darts2 --no-share-gradient'] / first:.2f}x without; target at most 2.3x "
              "(CHASE: 41 h / 18 h). A pass is a forward and backward pass of the supernet and classifier; "
              "first order's architecture pass needs no weight gradients."]
    body = "\n".join(lines)
    print(body)
    write_section(Path(args.markdown), "darts-step", "Second- against first-order DARTS step time (one process, "
                  "taking turns)", body, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
