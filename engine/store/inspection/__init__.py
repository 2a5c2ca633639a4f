"""Inspection pages: ``expllm inspect DIR --html OUT [--compare DIR2]``.

One self-contained HTML file per run (``templates/report/inspect.html.j2``): provenance,
summary tiles, charts (class balance, shares per class, AU x emotion heatmaps, label vs AU
evidence, rejected reasons, words per CoT, AU intensities) and a sample browser over every
record with its face thumbnail, AU bars and CoT. With a second run, per-class deltas and the
records whose dominant emotion changed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from engine.aus import au_definitions
from engine.store.inspection import compare as compare_mod
from engine.store.inspection import page, payload
from engine.store.inspection.thumbs import dataset_root, thumbnails
from engine.store.shards import SHARD_SCHEMA
from engine.store.stats import load_run, run_rules

__all__ = ["write_html", "compare_text", "PAGE_SIZES"]

#: Choices of the sample browser's page size (the default comes from ``--html-samples``).
PAGE_SIZES = (12, 24, 48, 96)
#: Rejected records listed in a table at the foot of the page.
REJECTED_ROWS = 200


def write_html(
    out_dir: Path,
    target: Path,
    page_size: int = 24,
    compare: Path | None = None,
    with_thumbnails: bool = True,
) -> Path:
    """Write the inspection page of ``out_dir`` (compared with ``compare``) to ``target``."""
    out_dir, target = Path(out_dir), Path(target)
    for folder in (out_dir, compare):
        among_shards = folder is not None and target.resolve().parent == Path(folder).resolve()
        if among_shards and not target.name.startswith(("_", ".")):
            raise ValueError(
                f"{target} would sit among the shards and break pandas.read_parquet("
                f"{folder}); write it elsewhere or give it a name starting with '_'"
            )
    frame, rejected, manifest = _load(out_dir)
    rules = run_rules(frame)
    codes = payload.au_codes(frame)
    data = {
        "provenance": payload.provenance(out_dir, frame, manifest),
        "summary": payload.summary(frame, rejected, rules),
        "au_names": {c: d.name for c, d in au_definitions().items()},
        "page_size": page_size,
        "compare": None,
    }
    records = payload.records(frame, codes)
    prov_b = None
    if compare is not None:
        frame_b, _, manifest_b = _load(Path(compare))
        prov_b = payload.provenance(Path(compare), frame_b, manifest_b)
        result = compare_mod.comparison(frame, frame_b, rules.active_threshold)
        records.update(result.pop("records"))
        data["compare"] = result
    started = time.perf_counter()
    thumbs = (
        thumbnails(frame, dataset_root(manifest, out_dir)) if with_thumbnails else [""] * len(frame)
    )
    data["thumbnail_seconds"] = round(time.perf_counter() - started, 2)
    return page.render(
        "inspect.html.j2",
        target,
        prov=data["provenance"],
        prov_b=prov_b,
        summary=data["summary"],
        compare=data["compare"],
        emotions=data["summary"]["emotions"],
        au_names=data["au_names"],
        writers=records["writers"],
        page_sizes=sorted({*PAGE_SIZES, page_size}),
        engine_version=data["provenance"]["engine_version"] or "",
        rejected_rows=_rejected_rows(rejected),
        page_data=data,
        records_packed=page.safe(page.pack(records)),
        thumbs=page.safe(" ".join(thumbs)),
    )


def compare_text(out_dir: Path, other: Path) -> str:
    """The comparison ``expllm inspect DIR --compare DIR2`` prints."""
    a, _, _ = _load(Path(out_dir))
    b, _, _ = _load(Path(other))
    return compare_mod.compare_text(out_dir, other, a, b, run_rules(a).active_threshold)


def _load(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``load_run``, records in id order; a run without shards yet gives the schema's columns."""
    frame, rejected, manifest = load_run(out_dir)
    if "record_id" not in frame.columns:
        frame = SHARD_SCHEMA.empty_table().to_pandas()
    return frame.sort_values("record_id", kind="stable").reset_index(drop=True), rejected, manifest


def _rejected_rows(rejected: pd.DataFrame) -> list[dict]:
    if not len(rejected):
        return []
    columns = [c for c in ("record_id", "label", "stage", "reason") if c in rejected.columns]
    rows = rejected.sort_values("record_id")[columns].head(REJECTED_ROWS)
    return rows.astype(object).where(rows.notna(), None).to_dict("records")
