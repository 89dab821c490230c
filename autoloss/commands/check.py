"""``autoloss check EXPR``: a loss expression through the cheap gates, with its formulas."""

from __future__ import annotations

import argparse

from autoloss.commands.options import finite_positive


def add_parser(commands) -> argparse.ArgumentParser:
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
    check.add_argument("--timeout", type=finite_positive("--timeout", 3600.0), default=20.0,
                       help="seconds sympy may take, at most 3600 (default: 20)")
    check.add_argument("--whole-gradient", action="store_true",
                       help="softmax mode: also require the derivative in the negative score to vanish, along "
                            "x_neg = -x_pos (an extension of the paper's condition, which asks it of the "
                            "positive score only; off by default)")
    check.set_defaults(handler=run_check)
    return check


def run_check(args: argparse.Namespace) -> int:
    # heavy: the loss package imports torch and sympy, which `autoloss --help` need not load
    from autoloss.loss.fingerprint import training_fingerprint
    from autoloss.loss.gates.convergence import check_one
    from autoloss.loss.gates.validity import ValidityGate
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

    verdicts = [ValidityGate(space).check(node)]
    if verdicts[0].passed:
        verdicts.append(check_one(space, node, symbolic=args.symbolic, timeout=args.timeout,
                                  whole_gradient=args.whole_gradient))
    for verdict in verdicts:
        print(f"{verdict.gate + ':':<14}{'pass' if verdict.passed else 'REJECT'}  {verdict.reason}")
    key = training_fingerprint(space, node)
    if key is not None:
        # The ready losses of the space name a candidate that trains exactly like one of them.
        ready = {name: genotype.parse(text) for name, text in space.losses.items()}
        itself = [name for name, loss in ready.items() if str(loss) == str(node)]
        same = [name for name, loss in ready.items() if name not in itself and training_fingerprint(space, loss) == key]
        label = (f" (the ready loss {', '.join(itself)})" if itself else
                 f" (trains like the ready loss {', '.join(same)})" if same else "")
        print(f"{'equivalence:':<14}fingerprint {key}{label}")
    return 0 if all(v.passed for v in verdicts) else 1
