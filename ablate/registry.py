"""The one Registry class: components are chosen by short lowercase names.

A builder is a plain function whose parameters are all keyword-only. Those without defaults are
*context* that the caller supplies (an input width, a class count, the weights to optimise), by
name, from the context names its registry declares; those with defaults are the component's own
*params*, which configuration files and search spaces may set by name. The caller passes every
context value it has and each builder receives the ones it names, so a new kind of context (say,
a feature set's point layout for a graph model) is one more name in the registry's declaration,
not a change to every builder and every call.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ablate.errors import UserError, close_match, unknown

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Entry:
    """One registered component with its metadata."""

    name: str
    builder: Callable[..., Any]
    description: str
    params: dict[str, Any]  # param name -> default value
    types: dict[str, Any]  # param name -> annotated type (resolved), where annotated
    tags: frozenset[str] = field(default_factory=frozenset)
    context: tuple[str, ...] = ()  # the context names the builder takes

    def check_params(self, params: Mapping[str, Any], where: str = "") -> None:
        """Raise a UserError naming the first unknown parameter, with a close match."""
        for key in params:
            if key not in self.params:
                at = f"{where}: " if where else ""
                raise UserError(
                    f"{at}unknown parameter {key!r} for {self.name!r}{close_match(str(key), self.params)}; "
                    f"known: {', '.join(sorted(self.params)) or '(none)'}"
                )


class Registry:
    """Named builders of one kind (feature sets, models, losses, ...)."""

    def __init__(self, kind: str, context: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.context = context  # the context names callers supply to this kind's builders
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, *, tags: tuple[str, ...] = (), description: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: register `builder` under `name`; duplicate names are refused."""
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be short lowercase [a-z0-9_]")

        def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"duplicate {self.kind} name {name!r}")
            doc = description or (inspect.getdoc(builder) or "").strip().splitlines()
            desc = doc if isinstance(doc, str) else (doc[0] if doc else "")
            sig = inspect.signature(builder)
            positional = [p.name for p in sig.parameters.values() if p.kind != inspect.Parameter.KEYWORD_ONLY]
            if positional:
                raise ValueError(f"{self.kind} {name!r}: builders take keyword-only parameters (put `*` first), "
                                 f"not {', '.join(positional)}")
            context = tuple(p.name for p in sig.parameters.values() if p.default is inspect.Parameter.empty)
            strange = [c for c in context if c not in self.context]
            if strange:
                raise ValueError(f"{self.kind} {name!r}: context {', '.join(strange)} is not one of this registry's "
                                 f"({', '.join(self.context) or 'none'}); give it a default to make it a param")
            hints = typing.get_type_hints(builder)
            params = {p.name: p.default for p in sig.parameters.values() if p.default is not inspect.Parameter.empty}
            types = {k: hints[k] for k in params if k in hints}
            self._entries[name] = Entry(name, builder, desc, params, types, frozenset(tags), context)
            return builder

        return decorate

    def get(self, name: str) -> Entry:
        """The entry for `name`, or a UserError listing the known names and the closest one."""
        try:
            return self._entries[name]
        except KeyError:
            raise unknown(self.kind, name, self._entries) from None

    def build(self, name: str, params: Mapping[str, Any] | None = None, /, *, where: str = "", **context: Any) -> Any:
        """Build component `name` with the user's params; the builder takes the context it names."""
        entry = self.get(name)
        params = dict(params or {})
        entry.check_params(params, where)
        missing = [c for c in entry.context if c not in context]
        if missing:
            raise TypeError(f"building {self.kind} {name!r} needs context {', '.join(missing)}")
        return entry.builder(**{c: context[c] for c in entry.context}, **params)

    def names(self, pattern: str = "*", tag: str | None = None) -> list[str]:
        """Sorted names matching an fnmatch pattern (and carrying `tag`, if given)."""
        return sorted(
            n
            for n, e in self._entries.items()
            if fnmatch.fnmatch(n, pattern) and (tag is None or tag in e.tags)
        )

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(sorted(self._entries))})"
