"""Locate the project's data files (``data/``) and Jinja templates (``templates/``).

From a checkout they sit beside ``engine/``; from an installed wheel they are packaged
inside ``engine/_resources/``.
"""

from __future__ import annotations

import hashlib
import os
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


def shared_dir() -> Path:
    """The read-only ``shared/`` folder of datasets and reference files: ``$EXPLLM_SHARED``, else
    ``../shared`` beside the checkout."""
    return Path(os.environ.get("EXPLLM_SHARED") or _PACKAGE.parent.parent / "shared")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
