"""Whether two Exp-CoT output folders hold the same records, apart from provenance.

    .venv/bin/python benchmarks/shards_identity.py BEFORE AFTER [--ignore COLUMN ...]

Reads the accepted and the rejected records of both folders, matches them by ``record_id``
and compares every column value for value (floats exactly, NaN equal to NaN, lists element by
element). Prints the records found in one folder only, each column that differs (how many
records, the first example) and a verdict; exits 0 when identical, 1 when not.

Provenance, not compared: the shard columns ``engine_version`` (the code version that wrote
the row) and ``seconds`` (time spent on the image), the file hashes after ``@`` in
``template_id`` and ``rules_table`` (the names before it are compared; the text they produced
is compared in the ``cot_*`` columns), and the folders' ``_manifest.json`` (run config,
per-shard timings and LLM usage) and ``_stats.json`` (figures derived from the shards, plus
wall time). Run settings that differ between the two manifests are listed as notes.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.store.shards import MANIFEST
from engine.store.stats import read_rejected, read_shards

#: Shard columns that say how and when a row was written, not what it holds.
PROVENANCE = ("engine_version", "seconds")
#: Columns ``NAME@hash`` whose hash is of the template or rule files that produced the row (it
#: changes when those files are edited or reorganised): compared by NAME only.
VERSION_TAGGED = ("template_id", "rules_table")


@dataclass
class PartDiff:
    """Differences of one part (accepted or rejected records) of two folders."""

    part: str
    sizes: tuple[int, int]
    only_before: list[str] = field(default_factory=list)
    only_after: list[str] = field(default_factory=list)
    missing_columns: dict[str, str] = field(default_factory=dict)  # column -> where it lacks
    columns: dict[str, tuple[int, str]] = field(default_factory=dict)  # -> (records, example)
    rehashed: dict[str, str] = field(default_factory=dict)  # tagged column -> hashes seen

    @property
    def identical(self) -> bool:
        return not (self.only_before or self.only_after or self.missing_columns or self.columns)


def _canon(value: object, tagged: bool = False) -> object:
    """A hashable, exactly comparable form of one cell (NaN and None alike; ``tagged``: the
    ``@hash`` suffix dropped)."""
    if isinstance(value, np.ndarray | list | tuple):
        return tuple(_canon(v) for v in value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return _canon(value.item())
    if tagged and isinstance(value, str):
        return value.split("@", 1)[0]
    return value


def compare_frames(
    part: str, a: pd.DataFrame, b: pd.DataFrame, ignore: tuple[str, ...]
) -> PartDiff:
    """Record-by-record differences of two frames with a ``record_id`` column."""
    diff = PartDiff(part, (len(a), len(b)))
    a = a.sort_values("record_id").set_index("record_id")
    b = b.sort_values("record_id").set_index("record_id")
    diff.only_before = sorted(set(a.index) - set(b.index))
    diff.only_after = sorted(set(b.index) - set(a.index))
    common = a.index.intersection(b.index)
    for column in sorted((set(a.columns) | set(b.columns)) - set(ignore)):
        if column not in a.columns or column not in b.columns:
            diff.missing_columns[column] = "before" if column not in a.columns else "after"
            continue
        tagged = column in VERSION_TAGGED
        left = [_canon(v, tagged) for v in a.loc[common, column]]
        right = [_canon(v, tagged) for v in b.loc[common, column]]
        differs = [(rid, x, y) for rid, x, y in zip(common, left, right, strict=True) if x != y]
        if tagged:
            raw = zip(a.loc[common, column], b.loc[common, column], strict=True)
            pairs = {(x, y) for x, y in raw if x != y and _canon(x, True) == _canon(y, True)}
            changed = sorted(f"{x} -> {y}" for x, y in pairs)
            if changed:
                diff.rehashed[column] = ", ".join(changed)
        if differs:
            rid, x, y = differs[0]
            diff.columns[column] = (len(differs), f"{rid}: before {x!r}, after {y!r}")
    return diff


def compare_runs(before: Path, after: Path, ignore: tuple[str, ...] = PROVENANCE) -> list[PartDiff]:
    """Differences of the accepted and of the rejected records of two output folders."""
    return [
        compare_frames("accepted", read_shards(before), read_shards(after), ignore),
        compare_frames("rejected", read_rejected(before), read_rejected(after), ignore),
    ]


def config_notes(before: Path, after: Path) -> list[str]:
    """Run settings (manifest ``config``) that differ between the two folders."""

    def flat(path: Path) -> dict[str, object]:
        manifest = path / MANIFEST
        config = json.loads(manifest.read_text()).get("config", {}) if manifest.is_file() else {}
        return dict(pd.json_normalize(config, sep=".").iloc[0]) if config else {}

    a, b = flat(before), flat(after)
    return [
        f"config {key}: before {a.get(key)!r}, after {b.get(key)!r}"
        for key in sorted(set(a) | set(b))
        if _canon(a.get(key)) != _canon(b.get(key))
    ]


def report(diffs: list[PartDiff], ignore: tuple[str, ...], notes: list[str]) -> str:
    lines = [
        f"ignored as provenance: {', '.join(ignore)}; the @hash of {', '.join(VERSION_TAGGED)}; "
        "manifests and _stats.json"
    ]
    for diff in diffs:
        lines.append(f"{diff.part}: {diff.sizes[0]} records before, {diff.sizes[1]} after")
        for name, ids in (("before", diff.only_before), ("after", diff.only_after)):
            if ids:
                lines.append(f"  only {name}: {len(ids)} records, e.g. {', '.join(ids[:3])}")
        for column, where in diff.missing_columns.items():
            lines.append(f"  column {column}: absent {where}")
        for column, (count, example) in diff.columns.items():
            lines.append(f"  column {column}: {count} records differ, e.g. {example}")
        for column, changed in diff.rehashed.items():
            lines.append(f"  note: {column} file hash changed (provenance): {changed}")
    lines += [f"note: {note}" for note in notes]
    same = all(diff.identical for diff in diffs)
    differing = sorted({c for d in diffs for c in (*d.columns, *d.missing_columns)})
    lines.append(
        "verdict: IDENTICAL except provenance"
        if same
        else f"verdict: DIFFERENT ({', '.join(differing) or 'record sets'})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument(
        "--ignore", action="append", default=[], help="another column not to compare"
    )
    args = parser.parse_args(argv)
    ignore = (*PROVENANCE, *args.ignore)
    diffs = compare_runs(args.before, args.after, ignore)
    print(report(diffs, ignore, config_notes(args.before, args.after)))
    return 0 if all(diff.identical for diff in diffs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
