"""Reading an output folder (``read_shards``: the one shard reader, ``load_run``) and the run
statistics written as ``_stats.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine.cot.rules import RuleBook
from engine.store.shards import MANIFEST, REJECTED_DIR
from engine.types import EMOTIONS

_COLUMNS = [
    "split",
    "label",
    "verified",
    "faithfulness",
    "cot_words",
    "seconds",
    "au_supports_label",
    "dominant_emotion",
    "inferred_label",
    "writer",
    "rounds",
    "complete",
]


def read_shards(
    out_dir: Path, columns: list[str] | None = None, required: Sequence[str] = ()
) -> pd.DataFrame:
    """Accepted records of ``out_dir`` (only ``columns`` when given; those an older schema
    lacks are left out). A shard file that is not Parquet, or lacks a ``required`` column, is
    refused with a ValueError naming it."""
    files = sorted(Path(out_dir).glob("shard-*.parquet"))
    if required:
        for path in files:
            _check_shard(path, required)
    if not files:
        return pd.DataFrame(columns=columns or [])
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    if columns is not None:
        columns = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=columns).to_pandas()


def _check_shard(path: Path, required: Sequence[str]) -> None:
    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in required if c not in names]
    if missing:
        raise ValueError(
            f"{path}: not an expllm shard (no column(s) {missing}); move foreign Parquet "
            "files out of the output folder"
        )


def class_checks(frame: pd.DataFrame) -> pd.DataFrame:
    """Per class (label) and in total: records, the description-only Des2Exp agreement (the
    label read back from Key Observations + Interpretation), ``au_supports_label``,
    completeness, mean faithfulness and the verified share."""
    frame = frame[frame["label"].notna()]
    columns = {
        "des2exp": lambda f: (f["inferred_label"] == f["label"]).mean(),
        "au_supports_label": lambda f: f["au_supports_label"].astype(float).mean(),
        "complete": lambda f: f["complete"].astype(float).mean() if "complete" in f else None,
        "faithfulness": lambda f: f["faithfulness"].mean(),
        "verified": lambda f: f["verified"].astype(float).mean(),
    }
    rows = {}
    groups = [(e, frame[frame["label"] == e]) for e in EMOTIONS] + [("total", frame)]
    for name, part in groups:
        if len(part):
            rows[name] = {"n": len(part), **{k: fn(part) for k, fn in columns.items()}}
    return pd.DataFrame.from_dict(rows, orient="index")


def read_rejected(out_dir: Path) -> pd.DataFrame:
    """Rejected records of ``out_dir`` with their stage and reason."""
    files = sorted((Path(out_dir) / REJECTED_DIR).glob("shard-*.parquet"))
    if not files:
        return pd.DataFrame(columns=["record_id", "stage", "reason"])
    return ds.dataset([str(f) for f in files], format="parquet").to_table().to_pandas()


#: Columns ``expllm inspect`` needs in every shard (present in every schema version).
_NEEDED = ("record_id", "split", "label", "au_backend", "cot_text", "verified", "faithfulness")


def load_run(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Accepted rows, rejected rows and the manifest of ``out_dir`` (for ``expllm inspect``)."""
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
    return read_shards(out_dir, required=_NEEDED), read_rejected(out_dir), manifest


def run_rules(frame: pd.DataFrame) -> RuleBook:
    """The rule tables of a run's records: those of its AU back end when it has one, else the
    hand-set ones (their ``active_threshold`` and levels are what its pages and summary show)."""
    backends = sorted(frame["au_backend"].dropna().unique()) if len(frame) else []
    return RuleBook.for_backend(backends[0]) if len(backends) == 1 else RuleBook.load()


def shard_stats(
    out_dir: Path, dropped: dict | None = None, wall_seconds: float | None = None
) -> dict:
    """Counts per class and split, verified share, faithfulness, words, seconds per image."""
    frame = read_shards(out_dir, _COLUMNS)
    rejected = read_rejected(out_dir)
    n = len(frame)
    kept_out = int((rejected["stage"] == "keep").sum()) if len(rejected) else 0
    per_class = {e: int((frame["label"] == e).sum()) for e in EMOTIONS} if n else {}
    stats = {
        "records": n,
        "rejected": len(rejected),
        "rejected_by_stage": rejected["stage"].value_counts().to_dict() if len(rejected) else {},
        "per_class": per_class,
        "per_split": frame["split"].value_counts().to_dict() if n else {},
        "verified_share": float(frame["verified"].mean()) if n else None,
        "label_agreement": float((frame["inferred_label"] == frame["label"]).mean()) if n else None,
        "au_supports_label_share": float(frame["au_supports_label"].astype(float).mean())
        if n
        else None,
        # over accepted records and those --keep supported left out (AUs favour another emotion)
        "au_supports_label_share_all": float(frame["au_supports_label"].astype(float).sum())
        / (n + kept_out)
        if n + kept_out
        else None,
        "not_supported_dropped": kept_out,
        "complete_share": float(frame["complete"].astype(float).mean())
        if n and "complete" in frame
        else None,
        "faithfulness_mean": float(frame["faithfulness"].mean()) if n else None,
        "faithfulness_min": float(frame["faithfulness"].min()) if n else None,
        "words_per_cot_mean": float(frame["cot_words"].mean()) if n else None,
        "words_per_cot_min": int(frame["cot_words"].min()) if n else None,
        "words_per_cot_max": int(frame["cot_words"].max()) if n else None,
        "seconds_per_image": float(frame["seconds"].mean()) if n else None,
        "dropped_by_dataset_protocol": dropped or {},
        "manifest": MANIFEST,
    }
    total = n + len(rejected)
    stats["acceptance"] = n / total if total else None
    stats["rounds_mean"] = float(frame["rounds"].mean()) if n else None
    stats["rounds_histogram"] = (
        {str(k): int(v) for k, v in frame["rounds"].value_counts().sort_index().items()}
        if n
        else {}
    )
    stats["per_writer"] = frame["writer"].value_counts().to_dict() if n else {}
    checks = class_checks(frame) if n and frame["label"].notna().any() else None
    stats["per_class_checks"] = (
        {
            name: {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}
            for name, row in checks.iterrows()
        }
        if checks is not None
        else {}
    )
    llm = llm_usage(out_dir)
    if llm is not None:
        stats["llm"] = llm
    if wall_seconds is not None:
        stats["wall_seconds_this_run"] = wall_seconds
    return stats


def llm_usage(out_dir: Path) -> dict | None:
    """LLM calls, cache hits, tokens and cost: per shard (from the manifest) and in total.

    Each shard's figures are those of the run that wrote it; a resumed run's shards show how
    many answers came from the response cache instead of the model.
    """
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return None
    shards = json.loads(path.read_text()).get("shards", {})
    per_shard = {name: e["llm"] for name, e in sorted(shards.items()) if "llm" in e}
    if not per_shard:
        return None
    keys = ("calls", "cache_hits", "errors", "prompt_tokens", "completion_tokens")
    total = {k: sum(u[k] for u in per_shard.values()) for k in keys}
    costs = [u["cost_usd"] for u in per_shard.values()]
    total["cost_usd"] = None if any(c is None for c in costs) else sum(costs)
    return {"total": total, "per_shard": per_shard}
