"""The names a config or command can choose from, each mapped to the object it names.

Tasks, objectives, methods, data formats, record kinds, catalog models, sweep presets and example
corpora each own one `Choices` table; a module adds itself with a decorator (`@TASKS.register("x")`),
and looking up an unknown name fails naming the closest one. (The model registry, where trained runs
become versions promoted through gated stages, is `workspace/registry.py`; nothing else says
"registry".)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from tunelab.errors import TunelabError

T = TypeVar("T")


def closest(name: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The registered name most similar to `name`, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


class Choices(Generic[T]):
    """A name -> object mapping with helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            hint = closest(name, self.names())
            fix = f"did you mean {hint!r}?" if hint else f"choose one of: {', '.join(self.names())}"
            raise TunelabError(f"unknown {self.kind} {name!r}", fix=fix)
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]
