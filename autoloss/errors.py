"""Errors that reach the user as one clear message and a non-zero exit code, never a traceback."""


class UserError(Exception):
    """Bad input from the user (a path, an expression, a file): exit code 2 at the CLI."""

    exit_code = 2


class ExpressionError(UserError):
    """A loss expression that cannot be parsed in the given search space."""


class NothingBetter(UserError):
    """No searched candidate beat the baseline: nothing worth exporting unless asked (exit 1)."""

    exit_code = 1
