"""Shards stage: the versioned Parquet schema and an atomic, resumable shard store.

Layout of an output folder::

    shard-00000.parquet ...      accepted records, ``SHARD_SCHEMA``
    _rejected/shard-00000.parquet  failures with stage and reason, ``REJECTED_SCHEMA``
    _manifest.json               schema version, run config, one entry per finished shard
    _stats.json                  per-class counts, verification, faithfulness, words, speed
    _llm_cache/                  LLM responses keyed by model + prompt + parameters (LLM writers)

Files starting with ``_`` or ``.`` are skipped by Parquet dataset readers, so
``pandas.read_parquet(out_dir)`` reads exactly the accepted records. Each shard is written to a
hidden temporary file and renamed into place, and the manifest is rewritten the same way, so a
killed run never leaves a half-written shard and a rerun skips every shard already listed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.aus import au_definitions
from engine.types import EMOTIONS

SCHEMA_VERSION = "1.2"
MANIFEST = "_manifest.json"
STATS = "_stats.json"
REJECTED_DIR = "_rejected"
LLM_CACHE = "_llm_cache"
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK  # what a plain open() would have given
#: Temporary files are named ``.<target>.<host>-<pid>.<random>.tmp``: a rerun removes those of
#: dead processes on this host, and any other temporary file older than this many seconds.
STALE_TMP_SECONDS = 3600
_TMP_OWNER = re.compile(r"\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]*\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _tmp_prefix(target: str) -> str:
    return f".{target}.{_host()}-{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _is_stale(path: Path, now: float) -> bool:
    owner = _TMP_OWNER.search(path.name)
    if owner and owner["host"] == _host():
        return not _alive(int(owner["pid"]))
    try:
        return now - path.stat().st_mtime > STALE_TMP_SECONDS
    except OSError:
        return False


def _au_fields() -> list[pa.Field]:
    fields = []
    for code in au_definitions():
        fields += [
            pa.field(code, pa.float32()),
            pa.field(f"{code}_L", pa.float32()),
            pa.field(f"{code}_R", pa.float32()),
            pa.field(f"{code}_present", pa.bool_()),
        ]
    return fields


def _build_schema() -> pa.Schema:
    string, f32 = pa.string(), pa.float32()
    fields = [
        pa.field("record_id", string, nullable=False),
        pa.field("dataset", string, nullable=False),
        pa.field("split", string, nullable=False),
        pa.field("image_path", string, nullable=False),
        pa.field("image_bytes", pa.binary()),
        pa.field("label", string),
        *[pa.field(f"soft_{e}", f32) for e in EMOTIONS],
        pa.field("face_x", pa.int32()),
        pa.field("face_y", pa.int32()),
        pa.field("face_w", pa.int32()),
        pa.field("face_h", pa.int32()),
        pa.field("face_source", string),
        pa.field("face_score", f32),
        pa.field("pose_yaw", f32),
        pa.field("pose_pitch", f32),
        pa.field("pose_roll", f32),
        *_au_fields(),
        pa.field("au_backend", string),
        pa.field("au_model_version", string),
        pa.field("engine_version", string),
        *[pa.field(f"evidence_{e}", f32) for e in EMOTIONS],
        pa.field("active_aus", pa.list_(string)),
        pa.field("dominant_emotion", string),
        pa.field("secondary_emotion", string),
        pa.field("matched_prototypes", pa.list_(string)),
        pa.field("conflicts", pa.list_(string)),
        pa.field("au_supports_label", pa.bool_()),
        pa.field("cot_observations", string),
        pa.field("cot_interpretation", string),
        pa.field("cot_conclusion", string),
        pa.field("cot_text", string),
        pa.field("cot_words", pa.int32()),
        pa.field("template_id", string),
        pa.field("writer", string),
        pa.field("writer_model", string),
        pa.field("rounds", pa.int32()),
        pa.field("draft_failures", pa.list_(string)),
        pa.field("inferred_label", string),
        pa.field("verified", pa.bool_()),
        pa.field("faithfulness", f32),
        pa.field("complete", pa.bool_()),
        pa.field("mentioned_aus", pa.list_(string)),
        pa.field("rules_table", string),
        pa.field("seconds", f32),
    ]
    return pa.schema(fields, metadata={"expllm.schema_version": SCHEMA_VERSION})


SHARD_SCHEMA = _build_schema()
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string()),
        pa.field("split", pa.string()),
        pa.field("image_path", pa.string()),
        pa.field("label", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
    ],
    metadata={"expllm.schema_version": SCHEMA_VERSION},
)


class SchemaMismatchError(RuntimeError):
    """The output folder holds shards of another schema version or another run's config."""


@dataclass
class ShardStore:
    """An output folder of shards; ``config`` identifies the run (spec, back end, options)."""

    root: Path
    config: dict = field(default_factory=dict)
    swept: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # -- manifest ---------------------------------------------------------------------------
    def open(self) -> dict:
        """Create or reopen the folder; refuse one written with another schema or config."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.swept = self.sweep_temporary()
        manifest = self.manifest()
        if manifest is None:
            stray = sorted(p.name for p in self.root.glob("shard-*.parquet"))
            if stray:
                raise SchemaMismatchError(
                    f"{self.root} holds shards ({stray[0]} ...) but no {MANIFEST}; "
                    "choose an empty output folder"
                )
            manifest = {"schema_version": SCHEMA_VERSION, "config": self.config, "shards": {}}
            self._write_json(MANIFEST, manifest)
            return manifest
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise SchemaMismatchError(
                f"{self.root / MANIFEST} is schema {manifest.get('schema_version')!r}, this "
                f"expllm writes {SCHEMA_VERSION!r}; choose another output folder"
            )
        if manifest.get("config") != self.config:
            raise SchemaMismatchError(
                f"{self.root / MANIFEST} was written by a run with another configuration "
                f"({manifest.get('config')}); choose another output folder to avoid mixing runs"
            )
        return manifest

    def sweep_temporary(self) -> list[str]:
        """Remove temporary files left by killed writers (see ``STALE_TMP_SECONDS``); returns
        their names. Those of live processes (a concurrent run) are kept."""
        now, swept = time.time(), []
        for folder in (self.root, self.root / REJECTED_DIR):
            for path in sorted(folder.glob(".*.tmp")) if folder.is_dir() else []:
                if path.is_file() and _is_stale(path, now):
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        continue
                    swept.append(path.relative_to(self.root).as_posix())
        return swept

    def manifest(self) -> dict | None:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SchemaMismatchError(f"{path} is not valid JSON: {exc}") from exc

    def finished(self) -> dict[str, dict]:
        """Shard name -> manifest entry, for shards whose files are in place."""
        manifest = self.manifest() or {"shards": {}}
        return {
            name: entry
            for name, entry in manifest["shards"].items()
            if (self.root / f"{name}.parquet").exists()
        }

    # -- shards -----------------------------------------------------------------------------
    def write_shard(self, name: str, rows: list[dict], rejected: list[dict], entry: dict) -> None:
        """Write one shard and its rejected rows atomically, then record ``entry`` in the manifest.

        Only one process should call this for a given ``name``; different shards may be written
        concurrently by different processes (the manifest update is a locked read-modify-write).
        """
        table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
        bad = pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA)
        (self.root / REJECTED_DIR).mkdir(exist_ok=True)
        self._atomic_parquet(bad, self.root / REJECTED_DIR / f"{name}.parquet")
        self._atomic_parquet(table, self.root / f"{name}.parquet")
        with _Lock(self.root / ".manifest.lock"):
            manifest = self.manifest()
            manifest["shards"][name] = {**entry, "rows": len(rows), "rejected": len(rejected)}
            self._write_json(MANIFEST, manifest)

    def write_stats(self, stats: dict) -> None:
        self._write_json(STATS, stats)

    def _atomic_parquet(self, table: pa.Table, path: Path) -> None:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _write_json(self, name: str, payload: dict) -> None:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(name), suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(payload, fh, indent=1, sort_keys=True, default=str)
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, self.root / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class _Lock:
    """An exclusive ``fcntl`` lock on a file, for manifest updates from several processes."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        import fcntl

        self.fh = self.path.open("w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
