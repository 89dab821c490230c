"""The ``autoloss`` command line.

Exit codes: 0 success, 1 a candidate was rejected by a gate, 2 bad input (one clear message, no traceback).
"""

from __future__ import annotations

import argparse
import sys

from autoloss.errors import UserError


def _cmd_check(args: argparse.Namespace) -> int:
    from autoloss.gates.convergence import check_one
    from autoloss.gates.equivalence import EquivalenceGate
    from autoloss.gates.validity import ValidityGate
    from autoloss.loss.genotype import LossGenotype
    from autoloss.loss.space import load_space

    space = load_space(args.space)
    genotype = LossGenotype(space)
    node = genotype.parse(args.expression)
    described = genotype.describe(node)
    print(f"space:      {space.name} ({space.mode})")
    print(f"expression: {described['expression']}")
    print(f"infix:      {described['infix']}")
    print(f"latex:      {described['latex']}")
    print(f"size:       {node.size} nodes, height {node.height}"
          + ("" if node.size <= space.max_size and node.height <= space.max_height
             else f" (over the space's limits {space.max_size}/{space.max_height}: read, but not bred)"))

    # The ready losses of the space seed the equivalence gate, so a rewrite of CE is named as such.
    known = EquivalenceGate(space)
    names = {}
    for name, text in space.losses.items():
        ready = genotype.parse(text)
        known.check(ready)
        names[str(ready)] = name

    verdicts = [ValidityGate(space).check(node)]
    if verdicts[0].passed:
        verdicts.append(check_one(space, node, symbolic=args.symbolic, timeout=args.timeout))
    equivalence = known.check(node)
    duplicate = equivalence.metrics.get("duplicate_of")
    for verdict in verdicts:
        print(f"{verdict.gate + ':':<14}{'pass' if verdict.passed else 'REJECT'}  {verdict.reason}")
    if duplicate and duplicate != str(node):
        print(f"{'equivalence:':<14}same function as the ready loss {names.get(duplicate, duplicate)}")
    elif "fingerprint" in equivalence.metrics:
        label = f" (the ready loss {names[str(node)]})" if str(node) in names else ""
        print(f"{'equivalence:':<14}fingerprint {equivalence.metrics['fingerprint']}{label}")
    return 0 if all(v.passed for v in verdicts) else 1


# Evolution defaults (the paper's Algorithm 1 at a modest size), and the small budget of --demo.
SEARCH_DEFAULTS = {"population": 100, "generations": 5, "top_k": 10, "parents": 5, "max_mos": None,
                   "mos_iters": 30, "proxy_iters": None}
DEMO_DEFAULTS = {"population": 24, "generations": 2, "top_k": 2, "parents": 2, "max_mos": 4,
                 "mos_iters": 30, "proxy_iters": 200}
# Seconds per evaluation: a detector's proxy is an epoch of its training set (hours on COCO).
DETECTOR_TIMEOUTS = {"mos_timeout": 3600.0, "proxy_timeout": 24 * 3600.0}
TASK_TIMEOUTS = {"mos_timeout": 600.0, "proxy_timeout": 3600.0}
DEMO_DETECTORS = {"faster_rcnn": "faster_rcnn_small", "fcos": "fcos_small"}


def _resolve_defaults(args: argparse.Namespace) -> None:
    """Fill the options left unset: the --demo budget when --demo, else the search defaults."""
    timeouts = DETECTOR_TIMEOUTS if args.detector else TASK_TIMEOUTS
    defaults = {**SEARCH_DEFAULTS, **timeouts, **(DEMO_DEFAULTS if args.demo else {})}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("proxy_iters", "mos_iters", "batch_size", "steps"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise UserError(f"--{key.replace('_', '-')} must be a positive integer, got {value}")


def _cmd_search(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autoloss.engine.evolution import Evolution, SearchConfig
    from autoloss.engine.executors import make_executor
    from autoloss.engine.progress import Progress
    from autoloss.engine.store import RunStore

    if args.detector and args.task:
        raise UserError("choose one of --task and --detector")
    if args.demo and not args.detector:
        raise UserError("--demo runs a detector search: add --detector faster_rcnn (or fcos)")
    if not (args.task or args.detector):
        raise UserError("choose what to search on: --detector faster_rcnn|fcos|CONFIG (with --data DIR or "
                        "--demo), or the cheap --task noisy-digits")
    _resolve_defaults(args)
    name = Path(args.detector).stem if args.detector else args.task
    prefix = "demo-" if args.demo else ""
    out = Path(args.out or f"runs/{prefix}{name}-{args.branch}-{args.strategy}-seed{args.seed}")
    db = out / "run.sqlite"
    if db.exists() and not args.resume:
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    if args.resume and not db.exists():
        raise UserError(f"nothing to resume: {db} does not exist")
    try:
        config = SearchConfig(strategy=args.strategy, mode=args.mode, population=args.population,
                              generations=args.generations, top_k=args.top_k, parents=args.parents,
                              crossover=args.crossover, mutation=args.mutation, seed=args.seed,
                              mos_margin=args.mos_margin, max_mos=args.max_mos,
                              mos_timeout=args.mos_timeout, proxy_timeout=args.proxy_timeout)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    if args.detector:
        problem, extra = _detection_problem(args, out)
    else:
        problem, extra = _task_problem(args)
    store = RunStore(db)
    executor = make_executor(args.executor, workers=args.workers, address=args.address,
                             start_method=problem.start_method)
    try:
        try:
            evolution = Evolution(problem, config, store, executor, Progress(enabled=not args.quiet, metric=problem.metric),
                                  extra_config=extra)
        except ValueError as exc:  # the stored config differs from these options
            raise UserError(f"cannot resume {out} with different options: {exc}") from None
        result = evolution.run()
        _print_result(result, problem, store, db)
    finally:
        executor.close()
        store.close()
    return 0


def _task_problem(args: argparse.Namespace):
    from autoloss.loss.space import load_space
    from autoloss.problems import task_problem

    for option in ("data", "proxy_iters", "batch_size"):
        if getattr(args, option) not in (None, SEARCH_DEFAULTS.get(option)):
            raise UserError(f"--{option.replace('_', '-')} applies to detector searches, not to --task")
    space = load_space(args.space or {"cls": "cls_softmax", "reg": "reg"}[args.branch])
    if space.branch != args.branch:
        raise UserError(f"space '{space.name}' is a {space.branch} space, not {args.branch}")
    params = {key: value for key, value in (("steps", args.steps), ("iou", args.iou)) if value is not None}
    problem = task_problem(args.task, space, params or None)
    return problem, {"task_name": args.task, "space": space.name}


def _detection_problem(args: argparse.Namespace, out):
    from pathlib import Path

    from autoloss.problems import detection_problem
    from autoloss.tasks.detection import prepare_task

    if args.steps is not None:
        raise UserError("--steps applies to --task; a detector search takes --proxy-iters and --mos-iters")
    if args.iou is not None:
        raise UserError("--iou applies to --task; a detector computes the IoU of its own boxes")
    detector = args.detector
    if args.demo:
        from autoloss.data.synthetic import make_synthetic_coco

        if args.data:
            raise UserError("--demo generates its own synthetic dataset: drop --data, or drop --demo")
        detector = DEMO_DETECTORS.get(detector, detector)
        args.data = str(out / "data")
        made = make_synthetic_coco(args.data)
        if not args.quiet:
            print(f"demo: synthetic COCO dataset in {args.data} ({made['num_train']} train / "
                  f"{made['num_val']} val images, {len(made['categories'])} categories); detector {detector}")
    elif not args.data:
        raise UserError("a detector search needs --data DIR (a COCO-format dataset), or --demo")
    task, summary = prepare_task(detector, args.branch, args.data, out, space=args.space,
                                 proxy_iters=args.proxy_iters, mos_iters=args.mos_iters,
                                 batch_size=args.batch_size, seed=args.seed)
    if not args.quiet:
        print(f"detector {Path(summary['config']).name} ({summary['kind']}), branch {args.branch}, "
              f"space {summary['space']}; train {summary['train_images']} / val {summary['val_images']} images"
              f"{' (val carved out of train)' if summary['carved_val'] else ''}, {summary['categories']} "
              f"categories, D_verify {summary['verify_images']} images; proxy {summary['proxy_iters']} "
              f"iterations, MOS {summary['mos_iters']} (batch {summary['batch_size']})")
        for note in summary["notes"]:
            print(f"note: {note}")
    return detection_problem(task), {"detector": detector, "space": summary["space"]}


def _print_result(result, problem, store, db) -> None:
    genotype, metric = problem.genotype, problem.metric
    base = result.baseline.fitness if result.baseline else None
    print(f"\nbest losses by {metric} ({result.proxy_evaluations} proxy evaluations this session; store: {db})")
    if base is not None:
        print(f"  baseline {metric} {base:.4f}  {result.baseline.genotype}")
    else:
        print(f"  baseline: no {metric} ({_baseline_failure(store)})")
    found = [b for b in result.best if b.generation >= 0][:5]
    if not found:
        print("  no candidate finished its proxy evaluation")
    elif base is not None and found[0].fitness <= base:
        print("  (no candidate beat the baseline within this budget; a larger --population and more "
              "--generations search further)")
    for rank, item in enumerate(found, 1):
        delta = f" ({item.fitness - base:+.4f})" if base is not None else ""
        infix = genotype.describe(genotype.parse(item.genotype))["infix"]
        print(f"  {rank}. {metric} {item.fitness:.4f}{delta}  gen {item.generation + 1}  {item.genotype}\n       {infix}")


def _baseline_failure(store) -> str:
    from autoloss.engine.evolution import BASELINE_GENERATION

    for row in store.candidates():
        if row.generation == BASELINE_GENERATION:
            for stage in ("proxy", "mos"):
                verdict = store.verdict(row.id, stage)
                if verdict is not None and not verdict.passed:
                    return f"{stage} failed: {verdict.reason}"
    return "not evaluated"


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autoloss.engine.executors import make_executor
    from autoloss.evaluate import Comparison, write_markdown

    detector = args.detector
    out = Path(args.out or f"runs/evaluate-{'demo-' if args.demo else ''}{Path(detector).stem}")
    if args.demo:
        from autoloss.data.synthetic import make_synthetic_coco

        if args.data:
            raise UserError("--demo generates its own synthetic dataset: drop --data, or drop --demo")
        detector = DEMO_DETECTORS.get(detector, detector)
        args.data = str(out / "data")
        make_synthetic_coco(args.data)
        if args.iters is None:
            args.iters = DEMO_DEFAULTS["proxy_iters"]
    elif not args.data:
        raise UserError("evaluate needs --data DIR (a COCO-format dataset), or --demo")
    comparison = Comparison.prepare(detector, args.data, out, loss_cls=args.loss_cls, loss_reg=args.loss_reg,
                                    seeds=args.seeds, iters=args.iters, batch_size=args.batch_size,
                                    name=args.name, space_cls=args.space_cls)
    comparison.claim_out_dir()
    total = len(comparison.variants) * len(comparison.seeds)
    if not args.quiet:
        print(f"evaluate: {Path(comparison.detector).name}, {len(comparison.variants)} loss settings x "
              f"{len(comparison.seeds)} seed(s), {comparison.iters} iterations each; logs in {out / 'work'}")

    def report(record: dict) -> None:
        if not args.quiet:
            state = (f"AP {100 * record['fitness']:.1f}" if record["status"] == "ok"
                     else f"failed: {record.get('error', record['status'])}")
            print(f"  {record['variant']} seed {record['seed']}: {state} ({record['seconds']:.0f} s)", flush=True)

    executor = make_executor(args.executor, workers=args.workers, address=args.address, start_method="spawn")
    try:
        runs = comparison.run(executor, timeout=args.timeout, on_result=report)
    finally:
        executor.close()
    write_markdown(comparison, runs, out / "evaluate.md")
    print()
    print(comparison.table(runs))
    print(f"\n{sum(1 for r in runs.values() if r.get('status') == 'ok')}/{total} runs finished; "
          f"table written to {out / 'evaluate.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoloss", description="Evolutionary loss-function discovery for object detection (CSE-Autoloss).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check", help="run a loss expression through the cheap gates (validity, convergence properties)",
        description="Print a loss expression's formula and each cheap gate's verdict. "
                    "Exit 0 if it passes, 1 if a gate rejects it, 2 if it is malformed.")
    check.add_argument("expression", help="DEAP prefix expression, e.g. 'Neg(Dot(Mul(Y,W),Log(Softmax(X))))', "
                                          "or a ready loss name of the space (CE, CEI, FL, FLI, IoU, GIoU, ...)")
    check.add_argument("--space", default="cls_softmax",
                       help="cls_softmax, cls_sigmoid, reg, or a search-space YAML file (default: cls_softmax)")
    check.add_argument("--symbolic", choices=["always", "ambiguous", "never"], default="always",
                       help="when sympy decides the convergence properties (default: always)")
    check.add_argument("--timeout", type=float, default=20.0, help="seconds sympy may take (default: 20)")
    check.set_defaults(handler=_cmd_check)

    search = commands.add_parser(
        "search", help="evolve losses (CSE-Autoloss, or the random / vanilla-evolution baselines)",
        description="Evolve loss functions. Every candidate and verdict goes to RUN_DIR/run.sqlite as soon "
                    "as it is known; --resume continues a killed run where it stopped.")
    target = search.add_argument_group("what to search")
    target.add_argument("--detector", help="an MMDetection proxy detector: faster_rcnn, fcos (R50-FPN, as in "
                                           "the paper), faster_rcnn_small, fcos_small (ResNet-18, 128 px, for "
                                           "CPUs), or the path of your own MMDetection config")
    target.add_argument("--branch", choices=["cls", "reg"], default="cls",
                        help="the loss to search; the other keeps the config's (GIoU; CE or FL) (default: cls)")
    target.add_argument("--data", help="COCO-format dataset: annotations/instances_{train,val}*.json and the "
                                       "image folders (without a val split, one is carved out of train)")
    target.add_argument("--demo", action="store_true",
                        help="generate a synthetic dataset and run a small search on the CPU variant of "
                             "--detector (about 10 minutes on 2 cores)")
    target.add_argument("--task", choices=["noisy-digits"], help="a cheap built-in proxy task instead of a detector")
    target.add_argument("--space", help="search space name or YAML file (default: cls_softmax or cls_sigmoid "
                                        "after the detector's head, reg)")
    target.add_argument("--proxy-iters", type=int,
                        help="proxy training iterations (default: one epoch of the training split)")
    target.add_argument("--mos-iters", type=int, help="model optimisation simulation iterations on D_verify "
                                                     "(default: 30)")
    target.add_argument("--batch-size", type=int, help="training images per iteration (default: the config's)")
    target.add_argument("--steps", type=int, help="--task only: proxy training steps (task default if omitted)")
    target.add_argument("--iou", choices=["one", "confidence"],
                        help="--task only: the IoU stand-in W, 1 for every sample or the model's detached "
                             "probability of the label (default: one)")
    evo = search.add_argument_group("evolution (the paper's Algorithm 1)")
    evo.add_argument("--strategy", choices=["cse", "vanilla", "random"], default="cse")
    evo.add_argument("--mode", choices=["generational", "steady-state"], default="generational")
    evo.add_argument("--population", type=int, help="N, candidates per generation (default: 100)")
    evo.add_argument("--generations", type=int, help="E (default: 5)")
    evo.add_argument("--top-k", type=int, help="K, MOS survivors sent to the proxy (default: 10)")
    evo.add_argument("--parents", type=int, help="P, parents of the next generation (default: 5)")
    evo.add_argument("--crossover", type=float, default=0.5, help="p1")
    evo.add_argument("--mutation", type=float, default=0.8, help="p2")
    evo.add_argument("--mos-margin", type=float, default=0.0, help="pass MOS at >= threshold - margin")
    evo.add_argument("--max-mos", type=int, help="at most this many MOS runs per generation (default: all)")
    evo.add_argument("--seed", type=int, default=0)
    run = search.add_argument_group("running")
    run.add_argument("--executor", choices=["local", "ray"], default="local")
    run.add_argument("--workers", type=int, help="parallel evaluations (default: one per GPU, else 1)")
    run.add_argument("--address", help="Ray cluster address (default: start a local one)")
    run.add_argument("--mos-timeout", type=float, help="seconds per MOS evaluation (default: 1 hour for a "
                                                       "detector, 600 for --task)")
    run.add_argument("--proxy-timeout", type=float, help="seconds per proxy evaluation (default: 24 hours for a "
                                                         "detector, whose proxy is an epoch; 3600 for --task)")
    run.add_argument("--out", help="run directory (default: runs/[demo-]<detector or task>-<branch>-<strategy>-seed<seed>)")
    run.add_argument("--resume", action="store_true", help="continue the run stored in --out")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    search.set_defaults(handler=_cmd_search)
    evaluate = commands.add_parser(
        "evaluate", help="train a detector with given losses and with the baselines; AP table as the paper's",
        description="Train the detector with the given losses and with the baselines (CE/FL + GIoU, and CE + "
                    "L1 for two-stage detectors) under the same schedule and seeds; print COCO AP, AP50 and "
                    "AP75 with the difference to the baseline, and write the table to OUT/evaluate.md. "
                    "Finished runs are kept in OUT/runs.jsonl: rerunning redoes only the missing ones.")
    evaluate.add_argument("--detector", required=True, help="faster_rcnn, fcos, faster_rcnn_small, fcos_small, "
                                                            "or the path of your own MMDetection config")
    evaluate.add_argument("--data", help="COCO-format dataset (as for search)")
    evaluate.add_argument("--demo", action="store_true", help="generate the synthetic dataset and use the small "
                                                              "CPU variant of --detector (200 iterations)")
    evaluate.add_argument("--loss-cls", help="classification loss: an expression or ready name "
                                             "(e.g. CSE-Autoloss-A_cls); the IoU-aware head is used with it")
    evaluate.add_argument("--loss-reg", help="regression loss: an expression or ready name (e.g. CSE-Autoloss-A_reg)")
    evaluate.add_argument("--space-cls", help="search space of --loss-cls (default: cls_softmax or cls_sigmoid "
                                              "after the head)")
    evaluate.add_argument("--name", default="searched", help="the row name of the given losses (default: searched)")
    evaluate.add_argument("--seeds", type=int, default=3, help="seeds per loss setting (default: 3)")
    evaluate.add_argument("--iters", type=int, help="training iterations (default: the config's schedule)")
    evaluate.add_argument("--batch-size", type=int, help="training images per iteration (default: the config's)")
    evaluate.add_argument("--executor", choices=["local", "ray"], default="local")
    evaluate.add_argument("--workers", type=int, help="parallel trainings (default: one per GPU, else 1)")
    evaluate.add_argument("--address", help="Ray cluster address (default: start a local one)")
    evaluate.add_argument("--timeout", type=float, default=24 * 3600.0, help="seconds per training run")
    evaluate.add_argument("--out", help="output directory (default: runs/evaluate-<detector>)")
    evaluate.add_argument("--quiet", action="store_true", help="only the final table")
    evaluate.set_defaults(handler=_cmd_evaluate)
    from autoloss.export.cli import add_parser as add_export_parser
    from autoloss.report import add_parser as add_report_parser

    add_report_parser(commands)
    add_export_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"autoloss: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except KeyboardInterrupt:
        print("autoloss: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
