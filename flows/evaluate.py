"""The ``evaluate`` Prefect flow: score a model and its peers on the same labelled faces.

Reads the dataset, runs every predictor over the same records in chunks (one task per chunk
and predictor, a chunk no larger than the predictor's batch; each worker builds a predictor
once), answers within the class set (``--classes``), measures the AUs of the faces when some
predictor explains itself (for CoT faithfulness), and writes ``metrics.json``,
``predictions.csv``, ``confusion.png`` (the model's) and ``report.md`` / ``report.html``. A
progress bar counts the faces answered (and measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.futures import PrefectFuture, as_completed
from tqdm import tqdm

from engine.data.datasets import TEST_OR_ALL, read_dataset
from engine.evaluation.report import (
    Scored,
    plot_confusion,
    write_html,
    write_markdown,
    write_metrics,
    write_predictions,
)
from engine.evaluation.rules_peer import RuleEvidence, RuleReading
from engine.evaluation.scoring import (
    ALL_CLASSES,
    Prediction,
    Predictor,
    allowed_classes,
    create_predictor,
    evaluate_predictions,
)
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
def predict_chunk(
    spec: PredictorSpec, records: list[FaceRecord], classes: tuple[str, ...]
) -> list[Prediction]:
    """One predictor's predictions, among ``classes``, for one chunk of records."""
    return _predictor(spec).predict(records, classes)


@task(name="evaluate-measure-aus")
def measure_chunk(
    options: tuple[tuple[str, Any], ...], records: list[FaceRecord]
) -> list[RuleReading]:
    """The rules' reading of each face of a chunk (``RuleReading``: active AUs and evidence
    per emotion, None where it could not be measured)."""
    return _evidence(options).read(records)


def _chunks(records: list[FaceRecord], size: int) -> list[list[FaceRecord]]:
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    return [records[i : i + size] for i in range(0, len(records), size)]


def _results(futures: list[PrefectFuture], bar: tqdm) -> list:
    """The futures' results in submission order, counting each chunk's items on ``bar``."""
    for future in as_completed(futures):
        bar.update(len(future.result()))
    return [item for future in futures for item in future.result()]


@flow(name="evaluate", log_prints=False)
def evaluate(
    data: str,
    out: str,
    model: PredictorSpec,
    peers: tuple[PredictorSpec, ...] = (),
    split: str | None = TEST_OR_ALL,
    protocol: str = "majority",
    limit: int | None = None,
    chunk_size: int = 512,
    au_source: tuple[tuple[str, Any], ...] = (),
    classes: str = ALL_CLASSES,
    progress: bool = False,
) -> dict:
    """Score ``model`` and ``peers`` on ``data`` (``KIND:PATH``) and write the reports to ``out``.

    ``au_source`` holds the ``RuleEvidence`` options (``shards`` or ``au_backend``) used to
    measure AUs for the CoT faithfulness of predictors that give CoT text (none given: the
    model's own AU back end where it measures AUs, as its CoTs cite them; else the default).
    ``classes`` is the class set the answers are held to (``allowed_classes``: ``all``,
    ``dataset`` or a comma list). ``split``: one of the dataset's splits, or by default its test
    split, or every face where it has no splits. ``progress`` shows a bar over faces. Returns the
    ``metrics.json`` contents.
    """
    logger = get_run_logger()
    specs = (model, *peers)
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"predictor labels must be unique, got {labels}")
    for spec in specs:  # fail on a bad file or option before any task runs
        _predictor(spec)
    own_backend = getattr(_predictor(model), "au_backend", None)
    if not au_source and own_backend:
        au_source = (("au_backend", own_backend),)
    dataset = read_dataset(data, split=split, protocol=protocol, limit=limit)
    records = [r for r in dataset.records if r.label is not None]
    if not records:
        raise ValueError(f"no labelled records in {data} (split {split})")
    allowed = allowed_classes(classes, (r.label for r in records))
    sizes = {
        s.label: min(chunk_size, getattr(_predictor(s), "batch_size", chunk_size)) for s in specs
    }
    futures = {
        s.label: [predict_chunk.submit(s, c, allowed) for c in _chunks(records, sizes[s.label])]
        for s in specs
    }
    logger.info("%d records, %d predictors, classes %s", len(records), len(specs), allowed)
    total = len(records) * len(specs)
    with tqdm(total=total, unit="face", disable=not progress, desc="evaluate") as bar:
        predictions = {
            label: _results(chunk_futures, bar) for label, chunk_futures in futures.items()
        }
    measured = evidence = cited = rules_readings = None
    if any(p.cot is not None for preds in predictions.values() for p in preds):
        chunks = _chunks(records, chunk_size)
        aus = [measure_chunk.submit(au_source, c) for c in chunks]
        with tqdm(total=len(records), unit="face", disable=not progress, desc="AUs") as bar:
            readings = _results(aus, bar)
        measured = [reading.active for reading in readings]
        evidence = [reading.scores for reading in readings]
        cited = [reading.cited for reading in readings]
        rules_readings = [reading.evidence for reading in readings]
    scored = [
        Scored(
            s.label,
            _predictor(s).describe(),
            predictions[s.label],
            evaluate_predictions(
                s.label,
                records,
                predictions[s.label],
                measured,
                allowed,
                evidence,
                cited,
                rules_readings,
            ),
        )
        for s in specs
    ]
    context = {
        "dataset": data,
        "split": "+".join(sorted({r.split for r in records})) or split,
        "protocol": protocol,
        "limit": limit,
        "n": len(records),
        "unlabelled_dropped": len(dataset.records) - len(records),
        "model": model.label,
        "class_set": classes,
        "classes": list(allowed),
        "au_source": dict(au_source),
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
