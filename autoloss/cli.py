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
    for name, text in space.losses.items():
        known.check(genotype.parse(text))
    names = {str(genotype.parse(text)): name for name, text in space.losses.items()}

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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"autoloss: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("autoloss: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
