"""A tiny name -> factory registry shared by datasets, models, losses and methods.

No magic: a registry is a dict with a decorator and an error that lists the
known names, so a typo in a config says what would have been accepted.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T", bound=Callable)


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for plugins and tests that register something temporary)."""
        self._items.pop(name, None)

    def get(self, name: str) -> Callable:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ValueError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_submodules(package: str) -> None:
    """Import every module directly inside ``package`` (registration happens on import).

    This is how methods and models are discovered: dropping ``methods/foo.py``
    with an ``@METHODS.register("foo")`` class in it is enough; no list of
    modules is kept by hand. Modules whose name starts with ``_`` are skipped.
    """
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
