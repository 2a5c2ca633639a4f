"""One registry helper for every pluggable family (AU back ends, writers' chat models, dataset
readers, model bases, predictors): register by name, list, look up with a clear error, build.

Entries may live in modules imported only when first needed (``modules``: name -> module), so
listing a family never imports torch, openai or py-feat.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one family (``what`` names the family in error messages)."""

    def __init__(self, what: str, modules: Mapping[str, str] | None = None) -> None:
        self.what = what
        self._modules = dict(modules or {})
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator adding an entry under ``name`` (default: the entry's ``name`` attribute)."""

        def decorate(entry: T) -> T:
            self._entries[name or entry.name] = entry  # type: ignore[attr-defined]
            return entry

        return decorate

    def names(self) -> list[str]:
        """Every known name, sorted (lazy ones included without importing them)."""
        return sorted(set(self._entries) | set(self._modules))

    def get(self, name: str) -> T:
        """The entry ``name``, importing its module on first use; ValueError naming the choices."""
        if name not in self._entries and name in self._modules:
            importlib.import_module(self._modules[name])
        if name not in self._entries:
            known = ", ".join(self.names())
            raise ValueError(f"unknown {self.what} {name!r}; choose one of {known}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._modules

    def create(self, name: str, /, **options) -> object:
        """Build the entry ``name`` (a class or factory) with ``options``."""
        return self.get(name)(**options)  # type: ignore[operator]
