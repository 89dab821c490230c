"""``autoloss evaluate``: a detector trained with given losses and with the baselines, the AP table; or a
tracker's neck cells against the hand-designed neck and a random cell, the AO table
(:func:`autoloss.commands.tracker.run_evaluate`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from autoloss.commands import tracker
from autoloss.commands.options import bounded_int, finite_positive
from autoloss.commands.search import DEMO_DATA, DEMO_DETECTORS, DEMO_ITERS, pretrains
from autoloss.engine.executors import make_executor
from autoloss.errors import UserError
from autoloss.files import writable_dir


def add_parser(commands) -> argparse.ArgumentParser:
    evaluate = commands.add_parser(
        "evaluate", help="train a detector with given losses and with the baselines; AP table as the paper's",
        description="Train the detector with the given losses and with the baselines (CE/FL + GIoU, and CE + "
                    "L1 for two-stage detectors) under the same schedule and seeds; print COCO AP, AP50 and "
                    "AP75 with the difference to the baseline, and write the table to OUT/evaluate.md. "
                    "Finished runs are kept in OUT/runs.jsonl: rerunning redoes only the missing ones.")
    evaluate.add_argument("--detector", help="faster_rcnn, fcos, faster_rcnn_small, fcos_small, "
                                             "or the path of your own MMDetection config")
    evaluate.add_argument("--tracker", choices=["dimp_small", "dimp_r50"],
                          help="evaluate neck cells of this tracker instead: the hand-designed neck, a random cell "
                               "and the found cells, retrained with the same budget and seeds; AO / SR0.5 / SR0.75 "
                               "on the test split")
    evaluate.add_argument("--data", help="COCO-format dataset (as for search); for --tracker the GOT-10k-layout "
                                         "root (as for search)")
    evaluate.add_argument("--demo", action="store_true", help="generate the synthetic dataset and use the small "
                                                              "CPU variant of --detector (200 iterations); with "
                                                              "--tracker dimp_small the synthetic sequences (the "
                                                              "demo search's data and baseline when they match)")
    evaluate.add_argument("--split", choices=["val", "test"],
                          help="--detector: score on the validation split (which a search ranks candidates on) or on "
                               "the held-out test split, annotations/instances_test*.json, that no search stage "
                               "reads (default: test with --demo, val otherwise)")
    evaluate.add_argument("--run", metavar="RUN_DIR", help="--tracker: the cell search whose best --top cells to "
                                                           "evaluate (--demo default: runs/demo-dimp_small-cse-seed0)")
    evaluate.add_argument("--cell", action="append", metavar="GENOTYPE",
                          help="--tracker: a cell to evaluate, in the DARTS Genotype(normal=[...], ...) form; "
                               "repeatable")
    evaluate.add_argument("--top", type=bounded_int("--top", 1, 100), default=1,
                          help="--tracker: how many of the run's best cells (default: 1)")
    evaluate.add_argument("--backbone-checkpoint", metavar="FILE",
                          help="ResNet weights the backbone starts from, as for search (--tracker dimp_r50: required)")
    evaluate.add_argument("--pretrain-backbone", action=argparse.BooleanOptionalAction,
                          help="--detector: start the backbone from a ResNet pretrained on the training split's "
                               "objects, as search --pretrain-backbone (cached in OUT; default: on for --demo "
                               "without --backbone-checkpoint, as the demo search)")
    evaluate.add_argument("--tracker-option", action="append", metavar="KEY=VALUE",
                          help="--tracker: override a tracking setting, as for search")
    evaluate.add_argument("--seed", type=bounded_int("--seed", 0, 2**32 - 1), default=0,
                          help="--tracker: the seed that draws the random cell (default: 0)")
    evaluate.add_argument("--loss-cls", help="classification loss: an expression or ready name "
                                             "(e.g. CSE-Autoloss-A_cls); the IoU-aware head is used with it")
    evaluate.add_argument("--loss-reg", help="regression loss: an expression or ready name (e.g. CSE-Autoloss-A_reg)")
    evaluate.add_argument("--space-cls", help="search space of --loss-cls (default: cls_softmax or cls_sigmoid "
                                              "after the head)")
    evaluate.add_argument("--name", default="searched", help="the row name of the given losses (default: searched)")
    evaluate.add_argument("--seeds", type=bounded_int("--seeds", 1, 1000), default=3, help="seeds per loss setting (default: 3)")
    evaluate.add_argument("--iters", type=bounded_int("--iters", 1, 10**9), help="training iterations (default: the config's schedule)")
    evaluate.add_argument("--batch-size", type=bounded_int("--batch-size", 1, 65536), help="training images per iteration (default: the config's)")
    evaluate.add_argument("--executor", choices=["local", "ray"], default="local")
    evaluate.add_argument("--workers", type=bounded_int("--workers", 1, 256), help="parallel trainings (default: one per GPU, else 1)")
    evaluate.add_argument("--address", help="Ray cluster address (default: start a local one)")
    evaluate.add_argument("--timeout", type=finite_positive("--timeout"),
                          help="seconds per training run (default: 24 hours for a detector, the tracker's own)")
    evaluate.add_argument("--out", help="output directory (default: runs/evaluate-<detector>)")
    evaluate.add_argument("--quiet", action="store_true", help="only the final table")
    evaluate.set_defaults(handler=run_evaluate)
    return evaluate


def run_evaluate(args: argparse.Namespace) -> int:
    if args.tracker:
        if args.split:
            raise UserError("--split applies to --detector (a tracker is always scored on its test split)")
        if args.pretrain_backbone is not None:
            raise UserError("--pretrain-backbone applies to --detector, not to --tracker")
        return tracker.run_evaluate(args)
    if not args.detector:
        raise UserError("choose what to evaluate: --detector faster_rcnn|fcos|... or --tracker dimp_small|dimp_r50")
    for option in ("run", "cell", "tracker_option"):
        if getattr(args, option):
            raise UserError(f"--{option.replace('_', '-')} applies to --tracker")
    from autoloss.detection.compare import Comparison, write_markdown  # heavy: torch
    from autoloss.detection.pretrain import PretrainSettings

    if args.backbone_checkpoint:  # before anything is written (the full check needs the config)
        from autoloss.detection.pretrain import read_state_dict

        read_state_dict(args.backbone_checkpoint)

    detector, data, iters = args.detector, args.data, args.iters
    out = writable_dir(Path(args.out or f"runs/evaluate-{'demo-' if args.demo else ''}{Path(detector).stem}"),
                       "output directory")
    if args.demo:
        from autoloss.detection.synthetic import make_synthetic_coco  # heavy: numpy, only for --demo

        if data:
            raise UserError("--demo generates its own synthetic dataset: drop --data, or drop --demo")
        detector = DEMO_DETECTORS.get(detector, detector)
        data = str(out / "data")
        make_synthetic_coco(data, **DEMO_DATA)
        if iters is None:
            iters = DEMO_ITERS["proxy_iters"]
    elif not data:
        raise UserError("evaluate needs --data DIR (a COCO-format dataset), or --demo")
    comparison = Comparison.prepare(detector, data, out, loss_cls=args.loss_cls, loss_reg=args.loss_reg,
                                    seeds=args.seeds, iters=iters, batch_size=args.batch_size,
                                    name=args.name, space_cls=args.space_cls,
                                    split=args.split or ("test" if args.demo else "val"),
                                    backbone_checkpoint=args.backbone_checkpoint,
                                    pretrain=PretrainSettings() if pretrains(args) else None,
                                    progress=None if args.quiet else print)
    comparison.claim_out_dir()
    total = len(comparison.variants) * len(comparison.seeds)
    if not args.quiet:
        print(f"evaluate: {Path(comparison.detector).name}, {len(comparison.variants)} loss settings x "
              f"{len(comparison.seeds)} seed(s), {comparison.iters} iterations each, scored on the "
              f"{'held-out test' if comparison.split == 'test' else 'validation'} split; logs in {out / 'work'}")

    def report(record: dict) -> None:
        if not args.quiet:
            state = (f"AP {100 * record['fitness']:.1f}" if record["status"] == "ok"
                     else f"failed: {record.get('error', record['status'])}")
            print(f"  {record['variant']} seed {record['seed']}: {state} ({record['seconds']:.0f} s)", flush=True)

    executor = make_executor(args.executor, workers=args.workers, address=args.address, start_method="spawn")
    try:
        runs = comparison.run(executor, timeout=args.timeout or 24 * 3600.0, on_result=report)
    finally:
        executor.close()
    write_markdown(comparison, runs, out / "evaluate.md")
    print()
    print(comparison.table(runs))
    print(f"\n{sum(1 for r in runs.values() if r.get('status') == 'ok')}/{total} runs finished; "
          f"table written to {out / 'evaluate.md'}")
    return 0
