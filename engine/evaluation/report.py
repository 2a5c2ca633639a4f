"""Write an evaluation's outputs: metrics.json, predictions.csv, confusion.png, report.md/html.

Wording and look are in ``templates/report/``: ``evaluate_text.json`` (table titles and headers,
the confusion PNG's settings), ``_evaluate_context.j2`` (the sentence on the protocol),
``evaluate.md.j2`` and ``evaluate.html.j2``.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from engine.evaluation.scoring import NO_LABEL, CoTMetrics, Metrics, Prediction
from engine.resources import templates_dir
from engine.types import EMOTIONS, FaceRecord


@dataclass(frozen=True)
class Scored:
    """One predictor's label in the reports, its description, predictions and metrics."""

    label: str
    description: str
    predictions: list[Prediction]
    metrics: Metrics


@cache
def wording() -> dict:
    """``templates/report/evaluate_text.json``."""
    path = templates_dir() / "report" / "evaluate_text.json"
    return json.loads(path.read_text(encoding="utf-8"))


def write_metrics(path: Path, context: dict, scored: Sequence[Scored]) -> None:
    """``metrics.json``: the run context and, per predictor, its description and metrics."""
    payload = {
        **context,
        "predictors": {
            s.label: {"description": s.description, **s.metrics.to_dict()} for s in scored
        },
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def write_predictions(path: Path, records: Sequence[FaceRecord], scored: Sequence[Scored]) -> None:
    """``predictions.csv``: record, image, ground truth, each predictor's label (and CoT)."""
    with_cot = [s for s in scored if any(p.cot is not None for p in s.predictions)]
    header = ["record_id", "image_path", "label", *(s.label for s in scored)]
    header += [f"{s.label}_cot" for s in with_cot]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for index, record in enumerate(records):
            row = [record.record_id, record.relpath, record.label]
            row += [s.predictions[index].label or "" for s in scored]
            row += [s.predictions[index].cot or "" for s in with_cot]
            writer.writerow(row)


def plot_confusion(path: Path, metrics: Metrics) -> None:
    """Row-normalised confusion matrix as a PNG (true class by predicted class; rows: the
    classes the faces have)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    look = wording()["confusion_png"]
    rows = [EMOTIONS.index(e) for e in present_classes([metrics])]
    matrix = [metrics.confusion_normalised[i] for i in rows]
    columns = [*EMOTIONS, NO_LABEL]
    if not any(row[-1] for row in metrics.confusion):
        matrix = [row[:-1] for row in matrix]
        columns = list(EMOTIONS)
    figure, axes = plt.subplots(figsize=(1.0 + 0.8 * len(columns), 1.6 + 0.6 * len(rows)))
    image = axes.imshow(matrix, cmap=look["colour_map"], vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(rows)), [EMOTIONS[i] for i in rows])
    axes.set_xlabel(look["xlabel"])
    axes.set_ylabel(look["ylabel"])
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            dark = value > look["dark_cell_above"]
            colour = look["text_on_dark"] if dark else look["text_on_light"]
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", color=colour, fontsize=8)
    axes.set_title(
        look["title"].format(
            predictor=metrics.predictor, accuracy=metrics.accuracy, uar=metrics.uar, n=metrics.n
        )
    )
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=look["dpi"])
    plt.close(figure)


def _pct(value: float | None) -> str:
    return wording()["missing"] if value is None else f"{100 * value:.2f}"


def _rate(value: float | None) -> str:
    return wording()["missing"] if value is None else f"{value:.1f}"


def present_classes(metrics: Sequence[Metrics]) -> list[str]:
    """The classes the scored faces have (CK+ has no neutral), in ``EMOTIONS`` order: the
    per-class tables, bars and confusion rows show these (a class without faces has no
    recall)."""
    return [e for e in EMOTIONS if any(m.per_class[e].support for m in metrics)]


def tables(scored: Sequence[Scored]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as (title, header, rows) of text cells; the overall table counts the
    answers outside the class set when any predictor gave one."""
    text = wording()["tables"]
    outside = any(s.metrics.outside_classes for s in scored)
    overall = text["overall"]["header"][:]
    if outside:
        overall.insert(overall.index("answered") + 1, text["overall"]["outside_classes"])
    rows = []
    for s in scored:
        m = s.metrics
        cells = [
            s.label,
            _pct(m.accuracy),
            _pct(m.uar),
            _pct(m.macro_f1),
            str(m.n),
            str(m.answered),
        ]
        cells += [str(m.outside_classes)] if outside else []
        rows.append([*cells, _rate(m.faces_per_second), s.description])
    result = [(text["overall"]["title"], overall, rows)]
    present = present_classes([s.metrics for s in scored])
    for key, attribute in (("f1", "f1"), ("recall", "recall")):
        result.append(
            (
                text[key]["title"],
                [*text[key]["header"], *present],
                [
                    [s.label, *(_pct(getattr(s.metrics.per_class[e], attribute)) for e in present)]
                    for s in scored
                ],
            )
        )
    cot = [[s.label, *_cot_cells(s.metrics.cot)] for s in scored if s.metrics.cot is not None]
    if cot:
        result.append((text["cot"]["title"], text["cot"]["header"], cot))
    return result


def _cot_cells(cot: CoTMetrics) -> list[str]:
    return [
        str(cot.n),
        _pct(cot.exact_format),
        _pct(cot.conclusion_matches),
        str(cot.measured),
        _pct(cot.faithfulness_mean),
        _pct(cot.fully_faithful),
        _pct(cot.evidence_as_measured),
        _pct(cot.cues_as_measured),
        _pct(cot.complete),
        _pct(cot.interpretation_agreement),
        _pct(cot.first_emotion_agreement),
        _pct(cot.non_word_tokens),
        _pct(cot.non_word_cots),
        _pct(cot.annotation_wording),
        ", ".join(cot.non_words) or wording()["missing"],
    ]


def write_markdown(path: Path, title: str, context: dict, scored: Sequence[Scored]) -> None:
    """``report.md`` (the confusion matrix is linked as ``confusion.png``)."""
    from engine.store.inspection import page

    template = page.environment().overlay(autoescape=False).get_template("evaluate.md.j2")
    text = template.render(title=title, context_line=context_line(context), tables=tables(scored))
    path.write_text(text + "\n", encoding="utf-8")


def write_html(
    path: Path, title: str, context: dict, scored: Sequence[Scored], confusion_png: Path
) -> None:
    """``report.html``, self-contained: SVG confusion matrices of every predictor side by side,
    per-class F1 and recall bars, CoT metrics, the tables, and ``confusion.png`` embedded.

    Layout and wording are in ``templates/report/evaluate.html.j2`` (shared look with
    ``expllm inspect --html``).
    """
    from engine import __version__
    from engine.store.inspection import page

    predictors = [
        {"label": s.label, "description": s.description, **s.metrics.to_dict()} for s in scored
    ]
    page.render(
        "evaluate.html.j2",
        path,
        title=title,
        context=context,
        context_line=context_line(context),
        predictors=predictors,
        tables=tables(scored),
        has_cot=any(p["cot"] is not None for p in predictors),
        no_label=NO_LABEL,
        confusion_png=page.safe(base64.b64encode(confusion_png.read_bytes()).decode("ascii")),
        engine_version=__version__,
        page_data={
            "emotions": list(EMOTIONS),
            "present": present_classes([s.metrics for s in scored]),
            "no_label": NO_LABEL,
            "predictors": predictors,
        },
    )


def context_line(context: dict) -> str:
    """The sentence on what was evaluated and how (``templates/report/_evaluate_context.j2``)."""
    from engine.store.inspection import page

    template = page.environment().overlay(autoescape=False).get_template("_evaluate_context.j2")
    return " ".join(template.render(context=context).split())
