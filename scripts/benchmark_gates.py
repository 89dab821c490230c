#!/usr/bin/env python
"""Benchmark the cheap gates on one generation of the paper's classification population.

Mutates N candidates (default 10,000, the paper's classification population) from the initial loss
L_I of a space (CEI for cls_softmax), then screens them through validity, equivalence (functional
fingerprint) and convergence property verification (numeric screen, sympy where the grid cannot
decide), and reports candidates per second and each gate's pass rate. The figures are printed and
written to docs/benchmarks.md (between this benchmark's markers). Target: 10,000 candidates in at
most 30 s on a 2-core machine.

    python scripts/benchmark_gates.py [--candidates 10000] [--space cls_softmax] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

from autoloss.loss.gates.convergence import ConvergenceGate
from autoloss.engine.protocols import Verdict
from autoloss.loss.fingerprint import training_fingerprint
from autoloss.loss.gates.validity import ValidityGate
from autoloss.loss.genotype import LossGenotype
from autoloss.loss.space import load_space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_report import write_section  # noqa: E402


class FirstOfEachFingerprint:
    """The engine's duplicate check on one batch: the first candidate of each gradient fingerprint passes."""

    name = "equivalence"

    def __init__(self, space):
        self.space, self.seen = space, set()

    def evaluate(self, candidates):
        verdicts = []
        for node in candidates:
            key = training_fingerprint(self.space, node)
            new = key is not None and key not in self.seen
            self.seen.add(key)
            verdicts.append(Verdict(self.name, new, "new" if new else "duplicate"))
        return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--space", default="cls_softmax")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="sympy worker processes")
    parser.add_argument("--sympy-timeout", type=float, default=5.0)
    parser.add_argument("--symbolic", choices=["ambiguous", "always", "never"], default="ambiguous")
    parser.add_argument("--report", default=str(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"))
    parser.add_argument("--no-report", action="store_true", help="print only")
    args = parser.parse_args()

    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    space = load_space(args.space)
    genotype = LossGenotype(space)

    start = time.perf_counter()
    candidates = genotype.initial_population(args.candidates, random.Random(args.seed))
    breed_seconds = time.perf_counter() - start

    gates = [ValidityGate(space), FirstOfEachFingerprint(space),
             ConvergenceGate(space, symbolic=args.symbolic, timeout=args.sympy_timeout, workers=args.workers)]
    rows, survivors = [], candidates
    screen_start = time.perf_counter()
    for gate in gates:
        t0 = time.perf_counter()
        verdicts = gate.evaluate(survivors)
        seconds = time.perf_counter() - t0
        passed = [c for c, v in zip(survivors, verdicts) if v.passed]
        rows.append((gate.name, len(survivors), len(passed), seconds))
        survivors = passed
    screen_seconds = time.perf_counter() - screen_start
    cpv = gates[-1]
    cpv.close()

    rate = args.candidates / screen_seconds
    lines = [
        f"Space `{space.name}`, {args.candidates:,} candidates mutated (1-3 mutations) from L_I = {space.initial} "
        f"(seed {args.seed}); sympy mode `{args.symbolic}`, {args.workers} sympy workers, {args.sympy_timeout:g} s limit.",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}.",
        "",
        "| gate | candidates in | passed | pass rate | seconds |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, n_in, n_out, seconds in rows:
        lines.append(f"| {name} | {n_in:,} | {n_out:,} | {n_out / max(n_in, 1):.1%} | {seconds:.2f} |")
    lines += [
        "",
        f"- Screening time (all gates): **{screen_seconds:.1f} s** for {args.candidates:,} candidates = "
        f"**{rate:,.0f} candidates/s** (target: 10,000 in at most 30 s). Breeding them took {breed_seconds:.1f} s more.",
        f"- CPV: {cpv.stats['numeric']:,} numeric screens; {cpv.stats['symbolic']} candidates sent to sympy "
        f"({cpv.stats['symbolic_timeouts']} timed out, where the numeric verdict stands).",
        f"- Overall: {len(survivors):,} of {args.candidates:,} candidates ({len(survivors) / args.candidates:.1%}) reach "
        "the model-optimisation-simulation gate (the paper: 5e3 -> 7e2 after CPV, 14%).",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_report:
        write_section(Path(args.report), "gates", "Cheap gates: one generation of 10,000 candidates", text,
                      command="python scripts/benchmark_gates.py")
        print(f"\nwritten to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
