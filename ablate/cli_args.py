"""Argument types for the command line: a value out of range is a usage error naming the option."""

from __future__ import annotations

import argparse
import math


def _number(kind: type, low: float, text: str, expected: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not (math.isfinite(value) and value >= low):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (0 is refused: it would silently mean 'none' or 'no limit')."""
    return int(_number(int, 1, text, "a positive integer"))


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(float, 0.0, text, "a positive number of seconds")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    return int(_number(int, 0, text, "an integer >= 0"))


def probability(text: str) -> float:
    """A significance level in (0, 1)."""
    value = _number(float, 0.0, text, "a number between 0 and 1")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def finite_float(text: str) -> float:
    return _number(float, -math.inf, text, "a finite number")
