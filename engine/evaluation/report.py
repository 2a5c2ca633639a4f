"""Write an evaluation's outputs: metrics.json, predictions.csv, confusion.png, report.md/html."""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.evaluation.scoring import NO_LABEL, Metrics, Prediction
from engine.types import EMOTIONS, FaceRecord


@dataclass(frozen=True)
class Scored:
    """One predictor's label in the reports, its description, predictions and metrics."""

    label: str
    description: str
    predictions: list[Prediction]
    metrics: Metrics


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
    """Row-normalised confusion matrix as a PNG (true class by predicted class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = metrics.confusion_normalised
    columns = [*EMOTIONS, NO_LABEL]
    if not any(row[-1] for row in metrics.confusion):
        matrix = [row[:-1] for row in matrix]
        columns = list(EMOTIONS)
    figure, axes = plt.subplots(figsize=(1.0 + 0.8 * len(columns), 6.4))
    image = axes.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            colour = "white" if value > 0.5 else "black"
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", color=colour, fontsize=8)
    axes.set_title(
        f"{metrics.predictor}: accuracy {metrics.accuracy:.1%}, UAR {metrics.uar:.1%} "
        f"(n={metrics.n})"
    )
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def tables(scored: Sequence[Scored]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as (title, header, rows) of text cells."""
    overall = [
        [
            s.label,
            _pct(s.metrics.accuracy),
            _pct(s.metrics.uar),
            _pct(s.metrics.macro_f1),
            str(s.metrics.n),
            str(s.metrics.answered),
            _rate(s.metrics.faces_per_second),
            s.description,
        ]
        for s in scored
    ]
    result = [
        (
            "Overall (%)",
            ["predictor", "accuracy", "UAR", "macro-F1", "n", "answered", "faces/s", "what"],
            overall,
        ),
        (
            "F1 per class (%)",
            ["predictor", *EMOTIONS],
            [[s.label, *(_pct(s.metrics.per_class[e].f1) for e in EMOTIONS)] for s in scored],
        ),
        (
            "Recall per class (%)",
            ["predictor", *EMOTIONS],
            [[s.label, *(_pct(s.metrics.per_class[e].recall) for e in EMOTIONS)] for s in scored],
        ),
    ]
    cot = [
        [
            s.label,
            str(s.metrics.cot.n),
            _pct(s.metrics.cot.exact_format),
            _pct(s.metrics.cot.conclusion_matches),
            str(s.metrics.cot.measured),
            _pct(s.metrics.cot.faithfulness_mean),
            _pct(s.metrics.cot.fully_faithful),
        ]
        for s in scored
        if s.metrics.cot is not None
    ]
    if cot:
        header = [
            "predictor",
            "CoTs",
            "exact format",
            "conclusion = prediction",
            "measured",
            "AU faithfulness",
            "fully faithful",
        ]
        result.append(("Chain of thought (%)", header, cot))
    return result


def write_markdown(path: Path, title: str, context: dict, scored: Sequence[Scored]) -> None:
    """``report.md`` (the confusion matrix is linked as ``confusion.png``)."""
    lines = [f"# {title}", "", _context_line(context), ""]
    for name, header, rows in tables(scored):
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
        lines.append("")
    lines += ["## Confusion matrix of the model", "", "![confusion matrix](confusion.png)", ""]
    path.write_text("\n".join(lines))


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
        context_line=_context_line(context),
        predictors=predictors,
        tables=tables(scored),
        has_cot=any(p["cot"] is not None for p in predictors),
        no_label=NO_LABEL,
        confusion_png=page.safe(base64.b64encode(confusion_png.read_bytes()).decode("ascii")),
        engine_version=__version__,
        page_data={"emotions": list(EMOTIONS), "no_label": NO_LABEL, "predictors": predictors},
    )


def _context_line(context: dict) -> str:
    return (
        f"Dataset {context['dataset']}, split {context['split']}, protocol "
        f"{context['protocol']}: {context['n']} labelled faces. A prediction without a label "
        "counts as wrong; faces/s is the predictor's own time per face (— for answers read "
        "from files)."
    )
