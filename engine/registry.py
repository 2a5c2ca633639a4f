"""One registry helper for every pluggable family (AU back ends, writers' chat models, dataset
readers, model bases, predictors): register by name, list, look up with a clear error, build.

Entries may live in modules imported only when first needed: ``data/plugins.json``, the one
registration table, names them per family (name -> module), so listing a family never imports
torch, openai or py-feat.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Collection
from functools import cache
from typing import Generic, TypeVar

from engine.resources import data_file

T = TypeVar("T")


def unknown_choice(what: str, value: object, choices: Collection[str]) -> ValueError:
    """The error of a ``value`` of ``what`` that is not one of ``choices`` (naming them)."""
    return ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def check_choice(what: str, value: object, choices: Collection[str]) -> None:
    """``unknown_choice`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise unknown_choice(what, value, choices)


@cache
def _plugins() -> dict[str, dict[str, str]]:
    """``data/plugins.json``: family -> entry name -> the module registering it."""
    return json.loads(data_file("plugins.json").read_text())


class Registry(Generic[T]):
    """Named entries of one family (``what`` names the family in error messages and in
    ``data/plugins.json``, where its lazily imported entries are listed)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._modules = dict(_plugins().get(what, {}))
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
            raise unknown_choice(self.what, name, self.names())
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._modules

    def create(self, name: str, /, **options) -> object:
        """Build the entry ``name`` (a class or factory) with ``options``; a ValueError names
        the options it needs and was not given."""
        entry = self.get(name)
        missing = [
            p.name
            for p in inspect.signature(entry).parameters.values()  # type: ignore[arg-type]
            if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in options
        ]
        if missing:
            raise ValueError(f"{self.what} {name!r} needs the option(s) {missing}")
        return entry(**options)  # type: ignore[operator]
