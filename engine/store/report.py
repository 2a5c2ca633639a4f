"""Inspection of an output folder: the text summary (the HTML page: ``engine.store.inspection``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from engine.aus import au_definitions
from engine.store.inspection.page import environment
from engine.store.stats import class_checks, load_run, run_rules
from engine.types import EMOTIONS

#: The template of ``expllm inspect``'s text, in ``templates/report/``.
SUMMARY = "summary.txt.j2"


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
    """What ``expllm inspect`` prints (``templates/report/summary.txt.j2``)."""
    frame, rejected, manifest = load_run(out_dir)
    rules = run_rules(frame)
    context = {
        "out_dir": out_dir,
        "manifest": manifest,
        "accepted": len(frame),
        "rejected": len(rejected),
        "rejected_table": rejected.groupby(["stage", "reason"])
        .size()
        .sort_values(ascending=False)
        .head(10)
        .to_string()
        if len(rejected)
        else None,
    }
    if len(frame):
        table = pd.crosstab(
            frame["label"].fillna("(none)"), frame["split"], margins=True, margins_name="total"
        )
        order = [e for e in (*EMOTIONS, "(none)", "total") if e in table.index]
        context |= {
            "class_table": table.loc[order].to_string(),
            "verified": frame["verified"].mean(),
            "des2exp": (frame["inferred_label"] == frame["label"]).mean(),
            "complete": _share(frame, "complete"),
            "support": _support(frame, rejected, manifest),
            "faithfulness": frame["faithfulness"],
            "exact": frame["cot_text"].map(_is_exact).mean(),
            "meta": frame["cot_text"].map(_speaks_meta).sum(),
            "words": frame["cot_words"],
            "seconds": frame["seconds"].mean(),
            "backends": sorted(frame["au_backend"].unique()),
            "au_models": sorted(frame["au_model_version"].unique()),
            "rules_tables": sorted(frame["rules_table"].dropna().unique())
            if "rules_table" in frame
            else None,
            "checks_table": _format_checks(class_checks(frame)),
            "rules": rules,
            "au_table": au_summary(frame, rules.active_threshold).to_string(),
            "samples": _samples(frame, samples).to_dict("records"),
        }
    return environment().get_template(SUMMARY).render(**context).rstrip("\n")


def _share(frame: pd.DataFrame, column: str) -> float | None:
    if column not in frame or frame[column].isna().all():
        return None
    return frame[column].astype(float).mean()


def _support(frame: pd.DataFrame, rejected: pd.DataFrame, manifest: dict) -> dict | None:
    """How many records' AU evidence supports the label, of how many (those ``--keep
    supported`` left out included), and what ``--keep`` did with the others."""
    keep = manifest.get("config", {}).get("pipeline", {}).get("keep", "all")
    labelled = frame[frame["label"].notna()]
    dropped = int((rejected["stage"] == "keep").sum()) if len(rejected) else 0
    total = len(labelled) + dropped
    if not total:
        return None
    supported = int(labelled["au_supports_label"].astype(bool).sum())
    return {"supported": supported, "total": total, "keep": keep, "dropped": dropped}


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
