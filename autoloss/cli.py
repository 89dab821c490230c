"""The ``autoloss`` command line: the subcommands of :mod:`autoloss.commands`, wired together.

Exit codes: 0 success, 1 a candidate was rejected by a gate (``check``) or a search could not compare
anything (its baseline failed, or every evaluation failed or diverged), 2 bad input (one clear line on
stderr, never a traceback; an echoed input cut to :data:`MAX_MESSAGE` characters), 130 when interrupted,
143 when terminated.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from autoloss import plugins  # noqa: F401  (registers the built-in strategies and representation kinds)
from autoloss.errors import UserError

COMMANDS = ("check", "search", "evaluate", "report", "export", "doctor")


MAX_MESSAGE = 1000  # characters of an error line; an echoed input beyond it is cut in the middle


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` on one line (whitespace runs become one space), at most ``limit`` characters: what an
    error echoes of a huge input (a 7.9 MB genotype, a million-digit number) is cut in the middle, with
    the count of characters left out, so that the line keeps its start and its end (the hint)."""
    text = " ".join(message.split())
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 4
    return f"{text[:head]} ...[{len(text) - head - tail} characters cut]... {text[-tail:]}"


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exit 2), like every other bad input."""

    def error(self, message: str):
        message = one_line(message)
        self.exit(2, f"autoloss: error: {self.prog.removeprefix('autoloss ')}: {message} (see --help)\n"
                  if self.prog != "autoloss" else f"autoloss: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="autoloss",
                    description="Evolutionary loss-function discovery for object detection (CSE-Autoloss).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"autoloss.commands.{name}").add_parser(commands)
    return parser


class Terminated(Exception):
    """SIGTERM, turned into an exception so that stores and workers close as on Ctrl+C."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"autoloss: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except KeyboardInterrupt:
        print("autoloss: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("autoloss: terminated", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
