"""``autoloss doctor``: the installed stack and a live check of each GPU code path, as a table for a bug report."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from autoloss.commands.options import bounded_int

DEVICES = ("cpu", "cuda", "all")


def add_parser(commands) -> argparse.ArgumentParser:
    from autoloss.doctor import CHECK_NAMES  # light: the checks import torch and mmdet when they run

    doctor = commands.add_parser(
        "doctor", help="check the installed stack and each device (CPU, every GPU) in under a minute",
        description="Print Python, torch and its CUDA, the GPUs torch sees, mmcv (and whether its ops were "
                    "compiled with CUDA), mmengine, mmdet, sympy, deap and ray; then on each device one training "
                    "step of faster_rcnn_small and fcos_small with searched losses and the IoU-aware heads, "
                    "mmcv's RoIAlign and NMS, one tracker step with a cell and one darts2 step. Each row says ok "
                    "(with its time) or the one-line reason and what to do. Exit 0 when everything this machine "
                    "has works, 1 otherwise; GPU rows are skipped, with the reason, where torch sees no GPU.")
    doctor.add_argument("--device", choices=DEVICES, default="all",
                        help="where the live checks run: cpu, cuda (every visible GPU) or all (default: all)")
    doctor.add_argument("--only", action="append", choices=CHECK_NAMES, metavar="CHECK",
                        help=f"run only this live check (repeatable): {', '.join(CHECK_NAMES)}")
    doctor.add_argument("--steps", type=bounded_int("--steps", 1, 1000), default=1,
                        help="training steps per training check; above 1, the first is a warm-up and the row "
                             "shows the median of the others (default: 1)")
    doctor.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    doctor.set_defaults(handler=run_doctor)
    return doctor


def run_doctor(args: argparse.Namespace) -> int:
    from autoloss.doctor import CHECK_NAMES, Row, Scratch, cuda_devices, failed, run_checks, stack_rows

    table = not args.json
    stack = stack_rows()
    if table:
        print("autoloss doctor: the installed stack")
        for row in stack:
            _print_stack(row)
        print("live checks")
    gpus, reason = cuda_devices()
    devices = (["cpu"] if args.device in ("cpu", "all") else []) + (gpus if args.device in ("cuda", "all") else [])
    skipped = [Row("check", "every check", "skipped", reason, "cuda")] if args.device != "cpu" and not gpus else []
    names = tuple(args.only) if args.only else CHECK_NAMES
    with tempfile.TemporaryDirectory(prefix="autoloss-doctor-") as scratch:
        rows = run_checks(devices, Scratch(scratch), names, args.steps, on_row=_print_check if table else None)
    for row in skipped:
        if table:
            _print_check(row)
    everything = stack + rows + skipped
    bad = failed(everything)
    if args.json:
        json.dump({"ok": not bad, "rows": [row.to_dict() for row in everything]}, sys.stdout, indent=1)
        print()
    else:
        ran = ", ".join(devices) or "no device"
        print(f"result: {'FAILED (see the FAIL rows)' if bad else 'everything works'} on {ran} "
              f"(exit {1 if bad else 0})")
    return 1 if bad else 0


def _print_stack(row) -> None:
    print(f"  {row.name:<10} {'' if row.status == 'info' else row.status:<5} {row.detail}", flush=True)


def _print_check(row) -> None:
    if row.status == "ok":
        timing = f"{row.seconds:.2f} s" if row.seconds is not None else ""
        if row.steps > 1:
            timing += f", step {row.step_seconds * 1000:.1f} ms (median of {row.steps})"
        detail = f"{timing}; {row.detail}"
    else:
        detail = row.detail
    print(f"  {row.name:<45} {row.device:<7} {row.status:<7} {detail}", flush=True)
