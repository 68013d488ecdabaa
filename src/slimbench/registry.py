"""A small name -> builder registry, shaped like torchvision.models._api."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to builders. One instance per kind of thing (datasets, models, methods).

    Args:
        kind: what the registry holds, used in error messages ("dataset", "model", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; a duplicate name raises ValueError."""

        def wrap(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return wrap

    def list(self, include: str | Iterable[str] | None = None,
             exclude: str | Iterable[str] | None = None) -> list[str]:
        """Sorted names, filtered by shell-style wildcards."""
        names = sorted(self._entries)
        if include is not None:
            pats = [include] if isinstance(include, str) else list(include)
            names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in pats)]
        if exclude is not None:
            pats = [exclude] if isinstance(exclude, str) else list(exclude)
            names = [n for n in names if not any(fnmatch.fnmatch(n, p) for p in pats)]
        return names

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name lists the valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self.list())
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries
