"""The data of the report page, computed from a run: provenance, summary, charts, records.

Everything the page shows is computed here once; the page only draws it. Aggregates (tiles and
charts) are small and embedded as plain JSON; the per-record table (ids, labels, flags, AU
intensities, CoT text) is columnar and embedded gzip-compressed
(see ``engine.store.inspection.page``).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from engine.aus import MAX_INTENSITY, au_definitions
from engine.cot.format import CoT
from engine.cot.rules import RuleBook
from engine.cot.writers.template import TemplateWriter
from engine.types import EMOTIONS

#: Bins of the words-per-CoT and AU-intensity histograms.
WORD_BIN = 10
INTENSITY_BINS = np.linspace(0.0, MAX_INTENSITY, 21)
#: Rejected reasons shown one by one; the rest are summed as "other".
TOP_REASONS = 12
_IMAGE_NAME = re.compile(r"\S+\.(?:png|jpe?g|bmp|webp|tiff?|gif)\b|\S+\.csv#row=\d+", re.I)


def au_codes(frame: pd.DataFrame) -> list[str]:
    """AU columns the run measured (any non-null value), in table order."""
    return [c for c in au_definitions() if c in frame.columns and frame[c].notna().any()]


def provenance(out_dir: Path, frame: pd.DataFrame, manifest: dict) -> dict:
    """What made the run: the headline fields, then every manifest setting, flattened."""
    config = manifest.get("config", {}) or {}
    settings = _flatten({k: v for k, v in manifest.items() if k != "shards"})
    licence = [v for k, v in settings.items() if re.search(r"licen[cs]e", k, re.I)]
    backend = _first(settings, "au_backend") or _unique(frame, "au_backend")
    # A manifest names no writer when none uses a model: the model-free writer, the default.
    writer = _first(settings, "writer") or _unique(frame, "writer") or TemplateWriter.name
    return {
        "folder": str(out_dir),
        "spec": config.get("spec"),
        "split": config.get("split") or _unique(frame, "split"),
        "au_backend": backend,
        "au_licence": ", ".join(str(v) for v in licence) or None,
        "au_model": _unique(frame, "au_model_version"),
        "writer": writer,
        "writer_model": _unique(frame, "writer_model"),
        "engine_version": _unique(frame, "engine_version"),
        "schema": manifest.get("schema_version"),
        "shards": len(manifest.get("shards", {}) or {}),
        "settings": [[k, _text(v)] for k, v in settings.items()],
    }


def summary(frame: pd.DataFrame, rejected: pd.DataFrame, rules: RuleBook) -> dict:
    """Tiles and charts: class balance, shares per class, AU x emotion, reasons, histograms.

    ``threshold`` (an AU is active at or above it) and ``au_floor`` (the lowest FACS level: the
    sample browser draws AUs from there) come from the run's rule tables."""
    n, codes = len(frame), au_codes(frame)
    threshold = rules.active_threshold
    labels = frame["label"] if n else pd.Series(dtype=object)
    has_complete = "complete" in frame.columns
    per_class = {e: frame[labels == e] for e in EMOTIONS}
    active = {c: (frame[c] >= threshold) for c in codes}
    tiles = {
        "records": n,
        "rejected": len(rejected),
        "acceptance": n / (n + len(rejected)) if n + len(rejected) else None,
        "verified": _share(frame["verified"]) if n else None,
        "supported": _share(frame["au_supports_label"]) if n else None,
        "complete": _share(frame["complete"]) if n and has_complete else None,
        "agreement": float((frame["inferred_label"] == frame["label"]).mean()) if n else None,
        "exact_format": float(frame["cot_text"].map(CoT.is_exact).mean()) if n else None,
        "faithfulness": _mean(frame["faithfulness"]) if n else None,
        "words": _mean(frame["cot_words"]) if n else None,
        "seconds": _mean(frame["seconds"]) if n else None,
        "never_active": [c for c in codes if not active[c].any()],
    }
    rejected_labels = rejected["label"] if "label" in rejected.columns else pd.Series(dtype=object)
    words = frame["cot_words"].dropna().astype(int) if n else pd.Series(dtype=int)
    low = int(words.min() // WORD_BIN * WORD_BIN) if len(words) else 0
    high = int(words.max() // WORD_BIN * WORD_BIN + WORD_BIN) if len(words) else WORD_BIN
    word_edges = list(range(low, high + 1, WORD_BIN))
    return {
        "emotions": list(EMOTIONS),
        "threshold": threshold,
        "au_floor": rules.levels[0][1],
        "tiles": tiles,
        "has_complete": has_complete,
        "class_counts": {
            "accepted": [len(per_class[e]) for e in EMOTIONS],
            "rejected": [int((rejected_labels == e).sum()) for e in EMOTIONS],
        },
        "class_shares": {
            "verified": [_share(per_class[e]["verified"]) for e in EMOTIONS],
            "supported": [_share(per_class[e]["au_supports_label"]) for e in EMOTIONS],
            "complete": [_share(per_class[e]["complete"]) for e in EMOTIONS]
            if has_complete
            else None,
        },
        "heatmap": {
            "aus": codes,
            "names": [au_definitions()[c].name for c in codes],
            "mean": [[_mean(per_class[e][c]) for e in EMOTIONS] for c in codes],
            "active": [[_share(active[c][labels == e]) for e in EMOTIONS] for c in codes],
            "overall_active": [_share(active[c]) for c in codes],
        },
        "agreement": [
            [int(((labels == t) & (frame["dominant_emotion"] == p)).sum()) for p in EMOTIONS]
            for t in EMOTIONS
        ]
        if n
        else [],
        "reasons": rejected_reasons(rejected),
        "words": {"edges": word_edges, "counts": _histogram(words, word_edges)},
        "intensity": {
            "edges": [round(float(x), 3) for x in INTENSITY_BINS],
            "per_au": {c: _histogram(frame[c].dropna(), INTENSITY_BINS) for c in codes},
        },
    }


def rejected_reasons(rejected: pd.DataFrame) -> list[list]:
    """``[stage, reason, count]``, most frequent first; image names replaced by ``<image>``."""
    if not len(rejected):
        return []
    counts: Counter = Counter()
    for row in rejected.itertuples(index=False):
        reason = str(getattr(row, "reason", "") or "")
        for own in (getattr(row, "image_path", None), getattr(row, "record_id", None)):
            if own:
                reason = reason.replace(str(own), "<image>")
        counts[(str(getattr(row, "stage", "") or ""), _IMAGE_NAME.sub("<image>", reason))] += 1
    ranked = counts.most_common()
    result = [[stage, reason, count] for (stage, reason), count in ranked[:TOP_REASONS]]
    rest = sum(count for _, count in ranked[TOP_REASONS:])
    if rest:
        result.append(["", f"({len(ranked) - TOP_REASONS} other reasons)", rest])
    return result


def records(frame: pd.DataFrame, codes: list[str]) -> dict:
    """The per-record table, columnar: small integer codes for categories, AUs x 10."""
    index = {e: i for i, e in enumerate(EMOTIONS)}
    writers = sorted(frame["writer"].fillna("?").unique().tolist()) if len(frame) else []
    templates = sorted(frame["template_id"].fillna("?").unique().tolist()) if len(frame) else []
    failures = frame["draft_failures"].map(_join) if "draft_failures" in frame.columns else None
    table = {
        "n": len(frame),
        "writers": writers,
        "templates": templates,
        "id": frame["record_id"].tolist(),
        "path": frame["image_path"].tolist(),
        "label": _codes(frame["label"], index),
        "dom": _codes(frame["dominant_emotion"], index),
        "sec": _codes(frame["secondary_emotion"], index),
        "inf": _codes(frame["inferred_label"], index),
        "ver": _flags(frame["verified"]),
        "sup": _flags(frame["au_supports_label"]),
        "wr": _codes(frame["writer"].fillna("?"), {w: i for i, w in enumerate(writers)}),
        "tpl": _codes(frame["template_id"].fillna("?"), {t: i for i, t in enumerate(templates)}),
        "words": frame["cot_words"].fillna(0).astype(int).tolist(),
        "faith": (frame["faithfulness"].fillna(0) * 100).round().astype(int).tolist(),
        "rounds": frame["rounds"].fillna(1).astype(int).tolist(),
        "aus": {c: au_tenths(frame[c]) for c in codes},
        "cot": frame["cot_text"].fillna("").tolist(),
    }
    if "complete" in frame.columns:
        table["comp"] = _flags(frame["complete"])
    if failures is not None and failures.str.len().any():
        table["fail"] = failures.tolist()
    return table


def au_tenths(values: pd.Series) -> list[int]:
    """Intensities x 10 as integers (-1 where not measured): 0.1 steps, compact JSON."""
    return (values.astype(float) * 10).round().fillna(-1).astype(int).tolist()


def _codes(values: pd.Series, index: dict) -> list[int]:
    return [index.get(v, -1) for v in values.tolist()]


def _flags(values: pd.Series) -> list[int]:
    """1 / 0, and -1 for null."""
    return [-1 if v is None or v is pd.NA or v != v else int(bool(v)) for v in values.tolist()]


def _share(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.astype(float).mean()) if len(values) else None


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return round(float(values.mean()), 4) if len(values) else None


def _histogram(values: pd.Series, edges) -> list[int]:
    counts, _ = np.histogram(np.asarray(values, dtype=float), bins=np.asarray(edges, dtype=float))
    return counts.astype(int).tolist()


def _join(value) -> str:
    if value is None or isinstance(value, float):
        return ""
    return "; ".join(str(v) for v in value)


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out: dict = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _first(settings: dict, name: str):
    """The first setting called ``name`` (or ``name.name``, for a back end given as a dict)."""
    for key, value in settings.items():
        for wanted in (name, f"{name}.name"):
            if key == wanted or key.endswith(f".{wanted}"):
                return value
    return None


def _unique(frame: pd.DataFrame, column: str) -> str | None:
    if column not in frame.columns or not len(frame):
        return None
    values = sorted(str(v) for v in frame[column].dropna().unique())
    return ", ".join(values) or None


def _text(value) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) or "[]"
    return "null" if value is None else str(value)
