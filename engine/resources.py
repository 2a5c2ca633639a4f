"""Locate the project's data files (``data/``) and Jinja templates (``templates/``).

From a checkout they sit beside ``engine/``; from an installed wheel they are packaged
inside ``engine/_resources/``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _locate(name: str) -> Path:
    for candidate in (_PACKAGE / "_resources" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"expllm resource folder {name!r} not found beside {_PACKAGE}")


@cache
def data_dir() -> Path:
    """Folder of rule tables, AU definitions and label maps."""
    return _locate("data")


@cache
def templates_dir() -> Path:
    """Folder of Jinja templates."""
    return _locate("templates")


def data_file(name: str) -> Path:
    """Path of one file in ``data/``; raises FileNotFoundError naming it when absent."""
    path = data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"expllm data file {path} is missing")
    return path
