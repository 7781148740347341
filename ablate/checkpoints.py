"""Named points in long operations where a test can stop the process, deterministically.

Tests of crash safety ("a rebuild killed after the frames are written leaves the old cache intact")
must kill a process at an exact point, not after a guessed delay that a busy machine changes. A
process started with

    ABLATE_STOP_AT=<point>[:<n>]   ABLATE_STOP_FILE=<path>

appends the point's name to <path> when it reaches <point> for the n-th time (default the first)
and then waits, doing nothing, until it is killed. Without ABLATE_STOP_AT every call is a no-op
costing one dictionary lookup.
"""

from __future__ import annotations

import os
import time

_counts: dict[str, int] = {}


def reached(point: str) -> None:
    """Mark that the process reached `point` (see the module docstring)."""
    spec = os.environ.get("ABLATE_STOP_AT")
    if not spec:
        return
    name, sep, nth = spec.rpartition(":")
    if not (sep and nth.isdigit()):  # no count given: the first time
        name, nth = spec, "1"
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != int(nth):
        return
    with open(os.environ["ABLATE_STOP_FILE"], "a", encoding="utf-8") as f:
        f.write(f"{point} {os.getpid()}\n")
    while True:  # wait to be killed; a signal handler may still raise here
        time.sleep(3600)
