"""How the report pages write numbers: accuracies, differences, p-values, durations, config values."""

from __future__ import annotations

import math
from typing import Any

DASH = "–"


def acc(v: float | None) -> str:
    """An accuracy (or a difference of accuracies) with 4 decimals; '–' where missing."""
    return DASH if v is None or not math.isfinite(v) else f"{v:.4f}"


def signed(v: float | None) -> str:
    return DASH if v is None or not math.isfinite(v) else f"{v:+.4f}"


def pval(v: float | None) -> str:
    """A p-value with 3 significant digits; '–' where missing."""
    return DASH if v is None or not math.isfinite(v) else f"{v:.3g}"


def with_interval(v: float | None, low: float | None, high: float | None, fmt: Any = acc) -> str:
    """'v [low, high]'; without the brackets where there is no interval (fewer than 2 scores)."""
    if low is None and high is None:
        return fmt(v)
    return f"{fmt(v)} [{fmt(low)}, {fmt(high)}]"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return DASH
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def plain(v: Any) -> str:
    """A config value as it would be written in YAML."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return DASH
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
