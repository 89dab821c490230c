"""Argument types that refuse what cannot be right, with one clear line (argparse exits 2)."""

from __future__ import annotations

import argparse
import math


def finite_positive(flag: str, maximum: float = 1e9):
    """A float in (0, maximum]: no zero, negative, NaN or infinity."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} needs a number, got {text[:40]!r}") from None
        if not (math.isfinite(value) and 0 < value <= maximum):
            raise argparse.ArgumentTypeError(f"{flag} must be a positive number of at most {maximum:g}, got {text[:40]}")
        return value

    return parse


def bounded_int(flag: str, minimum: int, maximum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} needs an integer, got {text[:40]!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{flag} must be between {minimum} and {maximum}, got {text[:40]}")
        return value

    return parse


def finite_float(flag: str, minimum: float = -math.inf, maximum: float = math.inf):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} needs a number, got {text[:40]!r}") from None
        if not (math.isfinite(value) and minimum <= value <= maximum):
            raise argparse.ArgumentTypeError(f"{flag} must be a finite number in [{minimum:g}, {maximum:g}], "
                                             f"got {text[:40]}")
        return value

    return parse

