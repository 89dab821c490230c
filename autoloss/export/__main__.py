"""``python -m autoloss.export export ...``: the export command on its own, as ``autoloss export`` runs it."""

from __future__ import annotations

import argparse
import sys

from autoloss.errors import UserError
from autoloss.export.cli import add_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoloss", description="Export discovered losses.")
    add_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"autoloss: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
