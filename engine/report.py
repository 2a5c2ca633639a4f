"""Inspection of an output folder: a text summary and a self-contained HTML report."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from engine.aus import au_definitions
from engine.images import load_image
from engine.rules import RuleBook
from engine.shards import MANIFEST, STATS
from engine.stats import read_rejected, read_shards
from engine.types import EMOTIONS, StageError


def load_run(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Accepted rows, rejected rows and the manifest of ``out_dir``."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"{out_dir} is not an expllm output folder (no {MANIFEST})")
    return read_shards(out_dir), read_rejected(out_dir), json.loads(manifest_path.read_text())


def au_summary(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per AU: share of faces where it is active, mean and max intensity."""
    codes = [c for c in au_definitions() if c in frame.columns and frame[c].notna().any()]
    return pd.DataFrame(
        {
            "active_share": [(frame[c] >= threshold).mean() for c in codes],
            "mean": [frame[c].mean() for c in codes],
            "max": [frame[c].max() for c in codes],
        },
        index=codes,
    ).round(3)


def text_summary(out_dir: Path, samples: int = 3) -> str:
    """What ``expllm inspect`` prints."""
    frame, rejected, manifest = load_run(out_dir)
    threshold = RuleBook.load().active_threshold
    lines = [
        f"expllm output {out_dir} (schema {manifest.get('schema_version')}, "
        f"{len(manifest.get('shards', {}))} shards)",
        f"records: {len(frame)} accepted, {len(rejected)} rejected",
    ]
    if len(frame):
        table = pd.crosstab(
            frame["label"].fillna("(none)"), frame["split"], margins=True, margins_name="total"
        )
        order = [e for e in (*EMOTIONS, "(none)", "total") if e in table.index]
        lines += ["", "per class and split:", table.loc[order].to_string()]
        lines += [
            "",
            f"verified: {frame['verified'].mean():.1%}   "
            f"label read back from text = ground truth: "
            f"{(frame['inferred_label'] == frame['label']).mean():.1%}   "
            f"AU evidence supports label: {frame['au_supports_label'].astype(float).mean():.1%}",
            f"faithfulness: mean {frame['faithfulness'].mean():.3f}, min "
            f"{frame['faithfulness'].min():.3f}   exact format: "
            f"{frame['cot_text'].map(_is_exact).mean():.1%}",
            f"words per CoT: mean {frame['cot_words'].mean():.1f} "
            f"(min {frame['cot_words'].min()}, max {frame['cot_words'].max()})   "
            f"seconds per image: {frame['seconds'].mean():.4f}",
            f"AU back end: {', '.join(sorted(frame['au_backend'].unique()))} "
            f"({', '.join(sorted(frame['au_model_version'].unique()))})",
            "",
            f"AU distribution (active = intensity >= {threshold} on 0-5, data/rules.json):",
            au_summary(frame, threshold).to_string(),
        ]
        for _, row in _samples(frame, samples).iterrows():
            lines += [
                "",
                f"--- sample {row['record_id']} (label {row['label']}, {row['template_id']}) ---",
                row["cot_text"],
            ]
    if len(rejected):
        lines += [
            "",
            "rejected by stage and reason:",
            rejected.groupby(["stage", "reason"])
            .size()
            .sort_values(ascending=False)
            .head(10)
            .to_string(),
        ]
    return "\n".join(lines)


def write_html(out_dir: Path, target: Path, samples: int = 24) -> Path:
    """A self-contained HTML report: summary, then faces with an AU bar chart and their CoT."""
    out_dir, target = Path(out_dir), Path(target)
    inside = target.resolve().parent == out_dir.resolve()
    if inside and not target.name.startswith(("_", ".")):
        raise ValueError(
            f"{target} would sit among the shards and break pandas.read_parquet({out_dir}); "
            "write it elsewhere or give it a name starting with '_'"
        )
    frame, rejected, manifest = load_run(out_dir)
    root = _dataset_root(manifest)
    stats_path = out_dir / STATS
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    cards = []
    for _, row in _samples(frame, samples).iterrows():
        cards.append(
            "<div class='card'>"
            f"<div class='side'>{_face_img(row, root)}{_au_chart(row)}</div>"
            f"<div class='cot'><h3>{html.escape(row['record_id'])}</h3>"
            f"<p class='meta'>label <b>{html.escape(str(row['label']))}</b> · AU evidence "
            f"{html.escape(str(row['dominant_emotion']))} · verified {row['verified']} · "
            f"faithfulness {row['faithfulness']:.2f} · {html.escape(row['template_id'])}</p>"
            f"{_cot_html(row['cot_text'])}</div></div>"
        )
    summary = html.escape(text_summary(out_dir, samples=0))
    rejected_html = (
        rejected[["record_id", "stage", "reason"]].head(50).to_html(index=False, escape=True)
        if len(rejected)
        else "<p>none</p>"
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>expllm report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}pre{{background:#f6f6f6;padding:1em;
overflow:auto}}.card{{display:flex;gap:1.5em;border-top:1px solid #ddd;padding:1em 0}}
.side{{width:260px;flex:none}}
.side img{{width:160px;image-rendering:pixelated;border:1px solid #ccc}}
.meta{{color:#555;font-size:.9em}}.cot p{{margin:.4em 0}}</style></head><body>
<h1>expllm Exp-CoT report</h1><p>{html.escape(str(out_dir))} — run config:
<code>{html.escape(json.dumps(manifest.get("config", {})))}</code></p>
<h2>Summary</h2><pre>{summary}</pre>
<h2>Statistics</h2><pre>{html.escape(json.dumps(stats, indent=1))}</pre>
<h2>Samples</h2>{"".join(cards)}<h2>Rejected (first 50)</h2>{rejected_html}</body></html>"""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def _is_exact(text: str) -> bool:
    from engine.cot import CoT

    return CoT.is_exact(text)


def _samples(frame: pd.DataFrame, count: int) -> pd.DataFrame:
    """Up to ``count`` rows spread over classes, deterministic."""
    if not count or not len(frame):
        return frame.head(0)
    ordered = frame.sort_values("record_id")
    ordered = ordered.assign(_rank=ordered.groupby("label", dropna=False).cumcount())
    return ordered.sort_values(["_rank", "label"]).head(count).drop(columns="_rank")


def _dataset_root(manifest: dict) -> Path | None:
    spec = manifest.get("config", {}).get("spec", "")
    _, _, path = spec.partition(":")
    return Path(path).expanduser().resolve() if path else None


def _face_img(row: pd.Series, root: Path | None) -> str:
    data = row.get("image_bytes")
    if data is None or (isinstance(data, float) and np.isnan(data)):
        try:
            image = load_image(root / row["image_path"]) if root else None
        except StageError:
            image = None
        if image is None:
            return "<p>(image not available)</p>"
        x, y, w, h = (
            int(row[k]) if pd.notna(row[k]) else None
            for k in ("face_x", "face_y", "face_w", "face_h")
        )
        if None not in (x, y, w, h):
            image = cv2.rectangle(image.copy(), (x, y), (x + w - 1, y + h - 1), (0, 200, 0), 1)
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        data = encoded.tobytes()
        mime = "image/png"
    else:
        mime = "image/jpeg" if bytes(data[:3]) == b"\xff\xd8\xff" else "image/png"
    return f"<img alt='face' src='data:{mime};base64,{base64.b64encode(data).decode()}'>"


def _au_chart(row: pd.Series) -> str:
    bars = [(c, float(row[c])) for c in au_definitions() if c in row and pd.notna(row[c])]
    bars = [b for b in bars if b[1] >= 0.5] or bars[:0]
    if not bars:
        return "<p class='meta'>no AU at or above 0.5</p>"
    height = 14 * len(bars)
    parts = [
        f"<svg width='250' height='{height}' xmlns='http://www.w3.org/2000/svg' "
        "font-size='10' font-family='sans-serif'>"
    ]
    for i, (code, value) in enumerate(bars):
        color = "#2a7" if value >= 1.0 else "#bbb"
        parts.append(
            f"<text x='0' y='{i * 14 + 10}'>{code}</text><rect x='38' y='{i * 14 + 2}' "
            f"width='{value / 5 * 180:.1f}' height='10' fill='{color}'/>"
            f"<text x='{42 + value / 5 * 180:.1f}' y='{i * 14 + 10}'>{value:.1f}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _cot_html(text: str) -> str:
    paragraphs = []
    for block in text.split("\n\n"):
        escaped = html.escape(block)
        paragraphs.append("<p>" + re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped) + "</p>")
    return "".join(paragraphs)
