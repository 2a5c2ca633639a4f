"""The ``evaluate`` Prefect flow: score a model and its peers on the same labelled faces.

Reads the dataset, runs every predictor over the same records in chunks (one task per chunk
and predictor; each worker builds a predictor once), measures the AUs of the faces when some
predictor explains itself (for CoT faithfulness), and writes ``metrics.json``,
``predictions.csv``, ``confusion.png`` (the model's) and ``report.md`` / ``report.html``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from engine.data.datasets import read_dataset
from engine.evaluation.predictors import RuleEvidence
from engine.evaluation.report import (
    Scored,
    plot_confusion,
    write_html,
    write_markdown,
    write_metrics,
    write_predictions,
)
from engine.evaluation.scoring import Prediction, Predictor, create_predictor, evaluate_predictions
from engine.types import FaceRecord


@dataclass(frozen=True)
class PredictorSpec:
    """A predictor to build in each worker: report label, registry name and options."""

    label: str
    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def build(self) -> Predictor:
        return create_predictor(self.name, **dict(self.options))


@cache
def _predictor(spec: PredictorSpec) -> Predictor:
    return spec.build()


@cache
def _evidence(options: tuple[tuple[str, Any], ...]) -> RuleEvidence:
    return RuleEvidence(**dict(options))


@task(name="evaluate-predict")
def predict_chunk(spec: PredictorSpec, records: list[FaceRecord]) -> list[Prediction]:
    """One predictor's predictions for one chunk of records."""
    return _predictor(spec).predict(records)


@task(name="evaluate-measure-aus")
def measure_chunk(
    options: tuple[tuple[str, Any], ...], records: list[FaceRecord]
) -> list[frozenset[str] | None]:
    """AUs active on each face of a chunk (None where it could not be measured)."""
    return [reading.active for reading in _evidence(options).read(records)]


def _chunks(records: list[FaceRecord], size: int) -> list[list[FaceRecord]]:
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [records[i : i + size] for i in range(0, len(records), size)]


@flow(name="evaluate", log_prints=False)
def evaluate(
    data: str,
    out: str,
    model: PredictorSpec,
    peers: tuple[PredictorSpec, ...] = (),
    split: str | None = "test",
    protocol: str = "majority",
    limit: int | None = None,
    chunk_size: int = 512,
    au_source: tuple[tuple[str, Any], ...] = (),
) -> dict:
    """Score ``model`` and ``peers`` on ``data`` (``KIND:PATH``) and write the reports to ``out``.

    ``au_source`` holds the ``RuleEvidence`` options (``shards`` or ``au_backend``) used to
    measure AUs for the CoT faithfulness of predictors that give CoT text. Returns the
    ``metrics.json`` contents.
    """
    logger = get_run_logger()
    specs = (model, *peers)
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"predictor labels must be unique, got {labels}")
    for spec in specs:  # fail on a bad file or option before any task runs
        _predictor(spec)
    dataset = read_dataset(data, split=split, protocol=protocol, limit=limit)
    records = [r for r in dataset.records if r.label is not None]
    if not records:
        raise ValueError(f"no labelled records in {data} (split {split})")
    chunks = _chunks(records, chunk_size)
    logger.info("%d records, %d predictors, %d chunks each", len(records), len(specs), len(chunks))
    futures = {s.label: [predict_chunk.submit(s, c) for c in chunks] for s in specs}
    predictions = {
        label: [p for f in chunk_futures for p in f.result()]
        for label, chunk_futures in futures.items()
    }
    measured = None
    if any(p.cot is not None for preds in predictions.values() for p in preds):
        aus = [measure_chunk.submit(au_source, c) for c in chunks]
        measured = [m for f in aus for m in f.result()]
    scored = [
        Scored(
            s.label,
            _predictor(s).describe(),
            predictions[s.label],
            evaluate_predictions(s.label, records, predictions[s.label], measured),
        )
        for s in specs
    ]
    context = {
        "dataset": data,
        "split": split,
        "protocol": protocol,
        "limit": limit,
        "n": len(records),
        "unlabelled_dropped": len(dataset.records) - len(records),
        "model": model.label,
    }
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    write_metrics(target / "metrics.json", context, scored)
    write_predictions(target / "predictions.csv", records, scored)
    plot_confusion(target / "confusion.png", scored[0].metrics)
    title = f"Evaluation of {model.label}"
    write_markdown(target / "report.md", title, context, scored)
    write_html(target / "report.html", title, context, scored, target / "confusion.png")
    return {**context, "predictors": {s.label: s.metrics.to_dict() for s in scored}}
