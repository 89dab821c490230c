"""The ``export`` command: ``autoloss export RUN_DIR`` or ``autoloss export --expression EXPR``."""

from __future__ import annotations

import argparse

from autoloss.commands.options import bounded_int
from autoloss.engine import registry
from autoloss.engine.runs import open_run
from autoloss.errors import UserError


def add_parser(commands) -> argparse.ArgumentParser:
    """Add ``export`` to the subcommands of the ``autoloss`` parser (``commands``: its subparsers)."""
    export = commands.add_parser(
        "export", help="write discovered losses as a standalone MMDetection module and a config fragment",
        description="Write the best losses of a search run (or one expression) as plain torch functions in "
                    "MMDetection loss modules, in one Python file that needs only torch and mmdet, and the "
                    "config fragment that uses them beside it (<module>_config.py; also printed).")
    export.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                        help="a search's run directory (holds run.sqlite)")
    export.add_argument("--expression", metavar="EXPR",
                        help="export this expression (or ready loss name) instead of a run's losses")
    export.add_argument("--space", help="the search space of --expression: cls_softmax (default), cls_sigmoid, "
                                        "reg, or a search-space YAML file")
    export.add_argument("--top", type=bounded_int("--top", 1, 10000), default=1, metavar="N",
                        help="export the N best losses of the run by proxy score (default: 1)")
    export.add_argument("--out", metavar="FILE.py",
                        help="the module file (default: RUN_DIR/export/autoloss_<run name>.py, "
                             "or ./autoloss_loss.py for --expression)")
    export.add_argument("--name", help="the start of the class names (default: AutolossRun<run name>, "
                                       "or Autoloss<ready loss name>)")
    export.add_argument("--detector", help="the detector the config fragment is for: faster_rcnn, fcos, "
                                           "faster_rcnn_small, fcos_small or a config path (default: the run's; "
                                           "for --expression, a two-stage or one-stage head after the space)")
    export.add_argument("--include-worse", action="store_true",
                        help="also export losses (or cells) that did not beat the baseline on the proxy (each says so); "
                             "without it a run where nothing beat the baseline exports nothing (exit 1)")
    export.add_argument("--include-unconfirmed", action="store_true",
                        help="also export losses (or cells) above the baseline's mean that the confirmation did not "
                             "show better (fewer than 3 fresh seeds, or Welch's one-sided test not passed); each is "
                             "marked UNCONFIRMED in its docstring")
    export.set_defaults(handler=run_export)
    return export


def run_export(args: argparse.Namespace) -> int:
    if args.run_dir and not args.expression:  # runs of another representation kind export themselves
        record = open_run(args.run_dir)
        if record.kind != "loss":
            if args.space or args.detector:
                raise UserError(f"--space and --detector apply to loss runs; {args.run_dir} is a {record.kind} run")
            result = registry.kind(record.kind).export_run(args.run_dir, top=args.top, out=args.out, name=args.name,
                                                            include_worse=args.include_worse,
                                                            include_unconfirmed=args.include_unconfirmed)
            print(result.summary())
            return 0
    from autoloss.detection.export.exporter import export_expression, export_run  # heavy: torch
    from autoloss.loss.expression import to_infix  # heavy: torch, sympy

    if args.run_dir and args.expression:
        raise UserError("export a run (RUN_DIR) or one --expression, not both")
    if args.expression is not None:
        if args.top != 1:
            raise UserError("--top applies to a run; --expression exports one loss")
        result = export_expression(args.expression, args.space or "cls_softmax", out=args.out, name=args.name,
                                   detector=args.detector)
        source = "the expression"
    elif args.run_dir:
        if args.space:
            raise UserError("--space applies to --expression; a run's losses keep the run's space")
        result = export_run(args.run_dir, top=args.top, out=args.out, name=args.name, detector=args.detector,
                            include_worse=args.include_worse, include_unconfirmed=args.include_unconfirmed)
        source = f"run {args.run_dir}"
    else:
        raise UserError("nothing to export: give a run directory (RUN_DIR) or --expression EXPR")

    for note in result.notes:
        print(f"note: {note}")
    count = len(result.losses)
    print(f"wrote {result.module_path}: {count} loss{'es' if count > 1 else ''} from {source}")
    for loss in result.losses:
        print(f"  {loss.class_name}: {loss.title}\n      {to_infix(loss.node)}")
        if "UNCONFIRMED" in loss.title and "WORSE THAN THE BASELINE" not in loss.title:
            print(f"  warning: {loss.class_name} is not confirmed better than the baseline (see its docstring)")
        if "WORSE THAN THE BASELINE" in loss.title:
            print(f"  warning: {loss.class_name} scored below the baseline on the proxy; prefer the baseline")
    print(f"wrote {result.config_path}: the config fragment\n")
    print(result.snippet, end="")
    return 0
