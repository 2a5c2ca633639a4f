"""Inspection of an output folder: the text summary (the HTML page: ``engine.store.inspection``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from engine.aus import au_definitions
from engine.cot.rules import RuleBook
from engine.store.shards import MANIFEST
from engine.store.stats import class_checks, read_rejected, read_shards
from engine.types import EMOTIONS


def load_run(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Accepted rows, rejected rows and the manifest of ``out_dir``."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"{out_dir} is not an expllm output folder (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{manifest_path}: not an expllm manifest (a JSON object expected)")
    _check_shard_files(out_dir)
    return read_shards(out_dir), read_rejected(out_dir), manifest


#: Columns ``expllm inspect`` needs in every shard (present in every schema version).
_NEEDED = ("record_id", "split", "label", "au_backend", "cot_text", "verified", "faithfulness")


def _check_shard_files(out_dir: Path) -> None:
    """ValueError naming the first ``shard-*.parquet`` that is not an expllm shard."""
    for path in sorted(out_dir.glob("shard-*.parquet")):
        try:
            names = pq.read_schema(path).names
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
        missing = [c for c in _NEEDED if c not in names]
        if missing:
            raise ValueError(
                f"{path}: not an expllm shard (no column(s) {missing}); move foreign Parquet "
                "files out of the output folder"
            )


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
    backends = sorted(frame["au_backend"].dropna().unique()) if len(frame) else []
    rules = RuleBook.for_backend(backends[0]) if len(backends) == 1 else RuleBook.load()
    threshold = rules.active_threshold
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
            f"label read back from the description alone (Des2Exp): "
            f"{(frame['inferred_label'] == frame['label']).mean():.1%}   "
            f"complete: {_share(frame, 'complete')}",
            *_support_lines(frame, rejected, manifest),
            f"faithfulness: mean {frame['faithfulness'].mean():.3f}, min "
            f"{frame['faithfulness'].min():.3f}   exact format: "
            f"{frame['cot_text'].map(_is_exact).mean():.1%}   CoTs speaking of annotations, "
            f"labels, datasets or ground truth: {frame['cot_text'].map(_speaks_meta).sum()}",
            f"words per CoT: mean {frame['cot_words'].mean():.1f} "
            f"(min {frame['cot_words'].min()}, max {frame['cot_words'].max()})   "
            f"seconds per image: {frame['seconds'].mean():.4f}",
            f"AU back end: {', '.join(sorted(frame['au_backend'].unique()))} "
            f"({', '.join(sorted(frame['au_model_version'].unique()))})   rule table: "
            + (
                ", ".join(sorted(frame["rules_table"].dropna().unique()))
                if "rules_table" in frame
                else "(not recorded)"
            ),
            f"AU model licence: {manifest.get('config', {}).get('au_licence', '(not recorded)')}",
            "",
            "per class: n, Des2Exp = label read back from the description alone, AU evidence "
            "supports the label, complete, mean faithfulness, verified:",
            _format_checks(class_checks(frame)),
            "",
            f"AU distribution (active = intensity >= {threshold} on 0-5, {rules.table_id}):",
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


def _share(frame: pd.DataFrame, column: str) -> str:
    if column not in frame or frame[column].isna().all():
        return "(not recorded)"
    return f"{frame[column].astype(float).mean():.1%}"


def _support_lines(frame: pd.DataFrame, rejected: pd.DataFrame, manifest: dict) -> list[str]:
    """Shares of records whose AU evidence supports the label and of those it does not, with
    what ``--keep`` did with the latter."""
    keep = manifest.get("config", {}).get("pipeline", {}).get("keep", "all")
    labelled = frame[frame["label"].notna()]
    dropped = int((rejected["stage"] == "keep").sum()) if len(rejected) else 0
    supported = int(labelled["au_supports_label"].astype(bool).sum())
    total = len(labelled) + dropped
    if not total:
        return []
    not_supported = total - supported
    where = (
        f"{dropped} left out by --keep supported (in _rejected)"
        if keep == "supported"
        else "kept (--keep all)"
    )
    return [
        f"AU evidence supports the label: {supported} of {total} ({supported / total:.1%})   "
        f"does not: {not_supported} ({not_supported / total:.1%}), {where}"
    ]


def _format_checks(checks: pd.DataFrame) -> str:
    shown = checks.copy()
    for column in ("des2exp", "au_supports_label", "complete", "verified"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "-" if pd.isna(v) else f"{v:.1%}")
    if "faithfulness" in shown:
        shown["faithfulness"] = shown["faithfulness"].map(lambda v: f"{v:.3f}")
    shown["n"] = shown["n"].astype(int)
    return shown.to_string()


def _speaks_meta(text: str) -> bool:
    from engine.cot.verify import meta_terms

    return bool(meta_terms(text))


def _is_exact(text: str) -> bool:
    from engine.cot.format import CoT

    return CoT.is_exact(text)


def _samples(frame: pd.DataFrame, count: int) -> pd.DataFrame:
    """Up to ``count`` rows spread over classes, deterministic."""
    if not count or not len(frame):
        return frame.head(0)
    ordered = frame.sort_values("record_id")
    ordered = ordered.assign(_rank=ordered.groupby("label", dropna=False).cumcount())
    return ordered.sort_values(["_rank", "label"]).head(count).drop(columns="_rank")
