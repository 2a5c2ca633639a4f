"""Read a labelled face dataset into ``FaceRecord`` s from a ``KIND:PATH`` spec.

Readers (``engine.data.readers``) are registered per kind in ``READERS``; each maps its labels
onto ``EMOTIONS`` through ``data/label_maps.json``. Spec-level problems (unknown kind, missing
root or label file, malformed label rows) raise ``ValueError`` / ``FileNotFoundError`` naming
the path; label rows whose image file is missing are kept (the image stage rejects them later).
"""

from __future__ import annotations

import inspect
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from engine.registry import Registry
from engine.resources import data_file
from engine.types import EMOTIONS, FaceRecord

SPLITS: tuple[str, ...] = ("train", "valid", "test", "unsplit")
#: ``read_dataset``'s split for scoring: the test split where the dataset has one, else every
#: record (a dataset of class folders without splits, such as CK+48).
TEST_OR_ALL = "test-or-all"
PROTOCOLS: tuple[str, ...] = ("majority", "plurality")


@dataclass(frozen=True)
class Dataset:
    """Records of one dataset and the label rows that were not turned into records.

    ``dropped`` counts, per split, the label rows left out by reason (ties, non-emotion
    codes, ...).
    """

    kind: str
    root: Path
    records: list[FaceRecord]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[FaceRecord]:
        return iter(self.records)


@dataclass(frozen=True)
class Reader:
    """How one dataset kind is read: ``read(root, protocol, **options) -> Dataset``;
    ``aligned`` says whether the kind's images are already face crops."""

    read: Callable[..., Dataset]
    aligned: bool


#: Readers by dataset kind, each in the module that registers it (``data/plugins.json``;
#: imported on first use).
READERS: Registry[Reader] = Registry("dataset kind")


def register_reader(kind: str, *, aligned: bool) -> Callable[[Callable[..., Dataset]], Any]:
    """Decorator registering ``fn(root, protocol, **options) -> Dataset`` in ``READERS``."""

    def decorate(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        READERS.register(kind)(Reader(fn, aligned))
        return fn

    return decorate


def dataset_kinds() -> list[str]:
    """Registered dataset kinds."""
    return READERS.names()


def is_aligned_kind(kind: str) -> bool:
    """Whether images of ``kind`` are face crops (False for unknown kinds)."""
    return kind in READERS and READERS.get(kind).aligned


def read_dataset(
    spec: str,
    split: str | None = None,
    protocol: str = "majority",
    limit: int | None = None,
    **options: Any,
) -> Dataset:
    """Read the dataset named by ``spec`` (``KIND:PATH``).

    ``split`` is one of ``SPLITS`` (synonyms such as ``val`` accepted), ``TEST_OR_ALL`` or None
    for all;
    ``protocol`` applies to vote-labelled kinds (``ferplus``) and is ignored elsewhere.
    ``limit`` keeps a deterministic stratified sample: records are grouped by (split, label),
    each group sorted by relpath, and the groups are interleaved round-robin before taking the
    first ``limit`` (so a smaller limit is a subset of a larger one); records come back sorted
    by (split, relpath).
    """
    kind, sep, path = spec.partition(":")
    if not sep or not kind or not path:
        raise ValueError(f"dataset spec {spec!r} is not KIND:PATH")
    reader = READERS.get(kind).read
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {list(PROTOCOLS)}")
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise FileNotFoundError(f"dataset root {root} does not exist (spec {spec!r})")
    accepted = [name for name in inspect.signature(reader).parameters if name not in ("root",)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for kind {kind!r}; accepted: {accepted}")
    wanted = None if split in (None, TEST_OR_ALL) else normalise_split(split)
    dataset = reader(root, protocol=protocol, **options)
    records = sorted(dataset.records, key=_order)
    present = sorted({record.split for record in records}, key=SPLITS.index)
    if split == TEST_OR_ALL and "test" in present:
        wanted = "test"
    if wanted is not None:
        if wanted not in present:
            raise ValueError(f"split {wanted!r} not found in {root}; splits present: {present}")
        records = [record for record in records if record.split == wanted]
        dropped = {s: c for s, c in dataset.dropped.items() if s == wanted}
    else:
        dropped = dataset.dropped
    if limit is not None:
        records = sorted(_stratified(records, limit), key=_order)
    return Dataset(dataset.kind, dataset.root, records, dropped)


def normalise_split(name: str) -> str:
    """Canonical split name of ``name`` (``val`` -> ``valid``, ...); ValueError if unknown."""
    synonyms = label_maps()["split_synonyms"]
    key = name.strip().lower()
    if key in SPLITS:
        return key
    if key not in synonyms:
        raise ValueError(f"unknown split {name!r}; known: {list(SPLITS)} or {sorted(synonyms)}")
    return synonyms[key]


def canonical_label(name: str) -> str | None:
    """Our class for a label name through the synonyms table (None when unknown)."""
    return label_maps()["synonyms"].get(name.strip().lower())


@cache
def label_maps() -> dict[str, Any]:
    """Contents of ``data/label_maps.json``."""
    with data_file("label_maps.json").open(encoding="utf-8") as handle:
        return json.load(handle)


def _order(record: FaceRecord) -> tuple[int, str]:
    return SPLITS.index(record.split), record.relpath


def _stratified(records: list[FaceRecord], limit: int) -> list[FaceRecord]:
    groups: dict[tuple[str, str | None], list[FaceRecord]] = defaultdict(list)
    for record in records:  # already sorted by (split, relpath)
        groups[(record.split, record.label)].append(record)
    keys = sorted(groups, key=lambda k: (SPLITS.index(k[0]), _label_rank(k[1])))
    picked: list[FaceRecord] = []
    depth = 0
    while len(picked) < limit and any(depth < len(groups[k]) for k in keys):
        picked.extend(groups[k][depth] for k in keys if depth < len(groups[k]))
        depth += 1
    return picked[:limit]


def _label_rank(label: str | None) -> int:
    return EMOTIONS.index(label) if label in EMOTIONS else len(EMOTIONS)
