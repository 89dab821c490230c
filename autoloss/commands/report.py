"""The ``autoloss report RUN_DIR`` subcommand: its arguments and its handler."""

from __future__ import annotations

import argparse

from autoloss.commands.options import bounded_int
from autoloss.report import write_report


def add_parser(commands) -> argparse.ArgumentParser:
    """Add ``report`` to the subparsers ``commands`` of the ``autoloss`` parser."""
    report = commands.add_parser(
        "report", help="write a search run's report: figures and report.md with the best losses as formulas",
        description="Read RUN_DIR/run.sqlite (a finished, stopped or running search) and write report.md with "
                    "the run's settings, the gate funnel and the proxy fitness per generation, the best losses "
                    "(prefix, infix and LaTeX) against the baseline and the failed evaluations, and three "
                    "figures: fitness_per_generation.png, gate_funnel.png and candidates_over_time.png.")
    report.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of an `autoloss search` run")
    report.add_argument("--out", metavar="DIR", help="where to write the report (default: RUN_DIR/report)")
    report.add_argument("--top", metavar="N", type=bounded_int("--top", 1, 10000), default=10, help="how many of the best losses to list "
                                                                          "(default: 10)")
    report.set_defaults(handler=run_report)
    return report


def run_report(args: argparse.Namespace) -> int:
    """Write the report and print the paths written (and what a partial run is missing)."""
    written = write_report(args.run_dir, args.out, top=args.top)
    print(f"report:  {written['report']}")
    for path in written["figures"].values():
        print(f"figure:  {path}")
    for note in written["notes"]:
        print(f"missing: {note}")
    return 0
