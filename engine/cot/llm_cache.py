"""A response cache on disk for LLM calls, keyed by model + prompt + decoding parameters.

One JSON file per response under ``<root>/<2 hex>/<sha256>.json``, written to a temporary file
and renamed, so several worker processes can share a cache and a killed run never leaves a
half-written entry. A rerun of the flow finds every finished call here and costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def cache_key(model: str, messages: list[dict], params: dict) -> str:
    """SHA-256 of the canonical JSON of ``model``, ``messages`` and ``params``."""
    payload = json.dumps(
        {"model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    """Cached completions (any JSON-serialisable dict) in folder ``root``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The cached value of ``key``; None when absent or unreadable (then it is recomputed)."""
        path = self._path(key)
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, value: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(value, fh, ensure_ascii=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
