"""Two runs side by side (``expllm inspect DIR --compare DIR2``): per-class deltas, changed records.

Records are matched by ``record_id``; where the two runs share no record id (for example two
datasets' exports of the same images), by ``image_path``.
"""

from __future__ import annotations

import pandas as pd

from engine.store.inspection import page
from engine.store.inspection.payload import _flags, _share, au_codes, au_tenths
from engine.types import EMOTIONS

#: The template of the comparison's text, in ``templates/report/``.
COMPARE_TEXT = "compare.txt.j2"


def match(a: pd.DataFrame, b: pd.DataFrame) -> tuple[str, pd.Series]:
    """The key and, per row of ``a``, the row position in ``b`` of the same record (or -1)."""
    key = "record_id"
    if not len(set(a[key]) & set(b[key])):
        key = "image_path"
    positions = pd.Series(range(len(b)), index=b[key].to_numpy())
    positions = positions[~positions.index.duplicated()]
    return key, a[key].map(positions).fillna(-1).astype(int)


def per_class(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Per class: accepted records and shares (verified, supported, complete) in each run."""
    rows = {}
    for name, frame in (("a", a), ("b", b)):
        counts, verified, supported, complete = [], [], [], []
        for emotion in EMOTIONS:
            part = frame[frame["label"] == emotion]
            counts.append(len(part))
            verified.append(_share(part["verified"]) if len(part) else None)
            supported.append(_share(part["au_supports_label"]) if len(part) else None)
            has = "complete" in part.columns and len(part)
            complete.append(_share(part["complete"]) if has else None)
        rows[name] = {
            "records": counts,
            "verified": verified,
            "supported": supported,
            "complete": complete,
        }
    return rows


def comparison(a: pd.DataFrame, b: pd.DataFrame, threshold: float) -> dict:
    """What the page's comparison section and the records' ``b_*`` columns need."""
    key, where = match(a, b)
    matched = where >= 0
    b_rows = b.iloc[where[matched].to_numpy()]
    dom_a = a.loc[matched.to_numpy(), "dominant_emotion"].to_numpy()
    dom_b = b_rows["dominant_emotion"].to_numpy()
    codes = [c for c in au_codes(a) if c in au_codes(b)] or au_codes(b)
    index = {e: i for i, e in enumerate(EMOTIONS)}
    labels_a, labels_b = a["label"], b["label"]
    active_delta = []
    for code in codes:
        row = []
        for emotion in EMOTIONS:
            share_a = _share(a.loc[labels_a == emotion, code] >= threshold) if code in a else None
            share_b = _share(b.loc[labels_b == emotion, code] >= threshold)
            row.append(None if share_a is None or share_b is None else share_b - share_a)
        active_delta.append(row)
    positions = where.tolist()
    b_dom = b["dominant_emotion"].map(index).fillna(-1).astype(int).tolist()
    b_sup = _flags(b["au_supports_label"])
    b_ver = _flags(b["verified"])
    b_cot = b["cot_text"].fillna("").tolist()
    b_aus = {c: au_tenths(b[c]) for c in codes if c in b.columns}

    def pick(values: list, fill) -> list:
        return [values[p] if p >= 0 else fill for p in positions]

    return {
        "key": key,
        "matched": int(matched.sum()),
        "only_a": int((~matched).sum()),
        "only_b": len(b) - int(matched.sum()),
        "changed": int((dom_a != dom_b).sum()),
        "per_class": per_class(a, b),
        "transitions": [
            [int(((dom_a == x) & (dom_b == y)).sum()) for y in EMOTIONS] for x in EMOTIONS
        ],
        "active_delta": {"aus": codes, "values": active_delta},
        "records": {
            "b_dom": pick(b_dom, -1),
            "b_sup": pick(b_sup, -1),
            "b_ver": pick(b_ver, -1),
            "b_cot": pick(b_cot, ""),
            "b_aus": {c: pick(v, -1) for c, v in b_aus.items()},
        },
    }


def compare_text(a_dir, b_dir, a: pd.DataFrame, b: pd.DataFrame, threshold: float) -> str:
    """What ``expllm inspect DIR --compare DIR2`` prints (``templates/report/compare.txt.j2``)."""
    result = comparison(a, b, threshold)
    rows = result["per_class"]
    moves = [
        (count, EMOTIONS[x], EMOTIONS[y])
        for x, row in enumerate(result["transitions"])
        for y, count in enumerate(row)
        if x != y and count
    ]
    return (
        page.environment()
        .get_template(COMPARE_TEXT)
        .render(
            a_dir=a_dir,
            b_dir=b_dir,
            n_a=len(a),
            n_b=len(b),
            result=result,
            emotions=EMOTIONS,
            a=rows["a"],
            b=rows["b"],
            has_complete=any(v is not None for v in rows["a"]["complete"] + rows["b"]["complete"]),
            moves=sorted(moves, reverse=True)[:10],
        )
        .rstrip("\n")
    )
