"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


EXIT_USER_ERROR = 2  # a user error: one line on stderr
EXIT_DEVICE = 3  # `ablate run`: a worker's device broke; its trial is queued again


class UserError(Exception):
    """A problem with the user's input (a file, a field, a value). Printed as one line, exit 2."""


def close_match(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or '' when nothing is close."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def unknown(what: str, name: str, known: Iterable[str]) -> UserError:
    """The standard error for an unknown name: lists the known names and the closest one."""
    known = sorted(known)
    return UserError(
        f"unknown {what} {name!r}{close_match(name, known)}; known: {', '.join(known) or '(none)'}"
    )


def os_error_line(e: OSError) -> str:
    """An OS error as one line that names the path: '<path>: Permission denied'."""
    text = str(e).strip()
    what = e.strerror or (text.splitlines()[0] if text else type(e).__name__)
    if e.filename is None:
        return f"{what} ({type(e).__name__})"
    where = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
    return f"{where}: {what}"


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), shortened."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]
