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


def _cmd_search(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autoloss.engine.evolution import Evolution, SearchConfig
    from autoloss.engine.executors import make_executor
    from autoloss.engine.progress import Progress
    from autoloss.engine.store import RunStore
    from autoloss.loss.space import load_space
    from autoloss.problems import task_problem

    if args.detector:
        raise UserError("detector proxies (--detector) are not available in this version yet; "
                        "use --task noisy-digits")
    if not args.task:
        raise UserError("choose what to search on: --task noisy-digits")
    space_name = args.space or {"cls": "cls_softmax", "reg": "reg"}[args.branch]
    space = load_space(space_name)
    if space.branch != args.branch:
        raise UserError(f"space '{space.name}' is a {space.branch} space, not {args.branch}")
    out = Path(args.out or f"runs/{args.task}-{args.branch}-{args.strategy}-seed{args.seed}")
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
    problem = task_problem(args.task, space, {"steps": args.steps} if args.steps else None)
    out.mkdir(parents=True, exist_ok=True)
    store = RunStore(db)
    executor = make_executor(args.executor, workers=args.workers, address=args.address)
    try:
        try:
            evolution = Evolution(problem, config, store, executor, Progress(enabled=not args.quiet),
                                  extra_config={"task_name": args.task, "space": space.name})
        except ValueError as exc:  # the stored config differs from these options
            raise UserError(f"cannot resume {out} with different options: {exc}") from None
        result = evolution.run()
    finally:
        executor.close()
        store.close()
    _print_result(result, problem.genotype, db)
    return 0


def _print_result(result, genotype, db) -> None:
    base = result.baseline.fitness if result.baseline else None
    print(f"\nbest losses ({result.proxy_evaluations} proxy evaluations this session; store: {db})")
    if base is not None:
        print(f"  baseline {base:.4f}  {result.baseline.genotype}")
    for rank, item in enumerate([b for b in result.best if b.generation >= 0][:5], 1):
        delta = f" ({item.fitness - base:+.4f})" if base is not None else ""
        infix = genotype.describe(genotype.parse(item.genotype))["infix"]
        print(f"  {rank}. {item.fitness:.4f}{delta}  gen {item.generation}  {item.genotype}\n       {infix}")


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
    target.add_argument("--task", choices=["noisy-digits"], help="a cheap built-in proxy task")
    target.add_argument("--detector", help="an MMDetection proxy detector (not available in this version)")
    target.add_argument("--branch", choices=["cls", "reg"], default="cls")
    target.add_argument("--space", help="search space name or YAML file (default: cls_softmax / reg)")
    target.add_argument("--steps", type=int, help="proxy training steps (task default if omitted)")
    evo = search.add_argument_group("evolution (the paper's Algorithm 1)")
    evo.add_argument("--strategy", choices=["cse", "vanilla", "random"], default="cse")
    evo.add_argument("--mode", choices=["generational", "steady-state"], default="generational")
    evo.add_argument("--population", type=int, default=100, help="N, candidates per generation")
    evo.add_argument("--generations", type=int, default=5, help="E")
    evo.add_argument("--top-k", type=int, default=10, help="K, MOS survivors sent to the proxy")
    evo.add_argument("--parents", type=int, default=5, help="P, parents of the next generation")
    evo.add_argument("--crossover", type=float, default=0.5, help="p1")
    evo.add_argument("--mutation", type=float, default=0.8, help="p2")
    evo.add_argument("--mos-margin", type=float, default=0.0, help="pass MOS at >= threshold - margin")
    evo.add_argument("--max-mos", type=int, help="at most this many MOS runs per generation")
    evo.add_argument("--seed", type=int, default=0)
    run = search.add_argument_group("running")
    run.add_argument("--executor", choices=["local", "ray"], default="local")
    run.add_argument("--workers", type=int, help="parallel evaluations (default: one per GPU, else 1)")
    run.add_argument("--address", help="Ray cluster address (default: start a local one)")
    run.add_argument("--mos-timeout", type=float, default=600.0, help="seconds per MOS evaluation")
    run.add_argument("--proxy-timeout", type=float, default=3600.0, help="seconds per proxy evaluation")
    run.add_argument("--out", help="run directory (default: runs/<task>-<branch>-<strategy>-seed<seed>)")
    run.add_argument("--resume", action="store_true", help="continue the run stored in --out")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    search.set_defaults(handler=_cmd_search)
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
