"""Errors that reach the user as one clear message and a non-zero exit code, never a traceback."""

from dataclasses import fields


class UserError(Exception):
    """Bad input from the user (a path, an expression, a file): exit code 2 at the CLI."""

    exit_code = 2


class ExpressionError(UserError):
    """A loss expression that cannot be parsed in the given search space."""


class NothingBetter(UserError):
    """No searched candidate beat the baseline: nothing worth exporting unless asked (exit 1)."""

    exit_code = 1


def reject_unknown_fields(settings: type, data: dict, what: str) -> None:
    """Raise a :class:`UserError` naming the keys of the stored task ``data`` that are not fields of
    the dataclass ``settings`` (``"<what>: unknown task field(s) a, b"``)."""
    unknown = set(data) - {f.name for f in fields(settings)}
    if unknown:
        raise UserError(f"{what}: unknown task field(s) {', '.join(sorted(unknown))}")
