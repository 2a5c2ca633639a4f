"""Peers whose answers are read from files.

* ``csv`` — any CSV of predictions: a key column (image path, relpath, file name or record id)
  and a label column (names through the synonyms of ``data/label_maps.json``).
* ``gpt4v`` — GPT-4V zero-shot answers (``name, gt, gpt4v``; ``gpt4v`` is a best-first comma
  list, its first entry is the prediction).

Answers outside the evaluation's class set are kept as given (the scoring counts them as wrong
and reports them).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from engine.cot.verify import conclusion_label
from engine.data.datasets import canonical_label
from engine.evaluation.scoring import PREDICTORS, Prediction, Predictor
from engine.resources import shared_dir
from engine.types import EMOTIONS, FaceRecord

#: GPT-4V's FER+ test answers inside the shared data folder.
GPT4V_FERPLUS = Path("reference") / "gpt4v_ferplus_test.csv"
#: The columns tried, in order, as the image key of a predictions CSV.
KEY_COLUMNS = ("image_path", "relpath", "image", "name", "file", "path", "record_id")
#: The columns tried, in order, as the label of a predictions CSV.
LABEL_COLUMNS = ("label", "prediction", "predicted", "pred", "emotion")


@PREDICTORS.register()
class CsvPredictor(Predictor):
    """Labels from a CSV, matched to records by record id, relpath or file name.

    ``key_column``/``label_column`` default to the first of ``KEY_COLUMNS``/``LABEL_COLUMNS``
    in the header; ``first_of_list`` takes the first entry of a comma list (top-k answers). A
    ``cot`` column (``cot_column``), when present, holds each answer's CoT text, which is then
    scored too (format, conclusion, AU faithfulness, wording); an empty label is then read from
    the CoT's Conclusion.
    """

    name = "csv"

    def __init__(
        self,
        path: str | os.PathLike[str],
        key_column: str | None = None,
        label_column: str | None = None,
        first_of_list: bool = False,
        cot_column: str = "cot",
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"predictions file {self.path} not found")
        self.labels: dict[str, str] = {}
        self.cots: dict[str, str] = {}
        with self.path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [c.strip() for c in reader.fieldnames or []]
            key = _column(self.path, header, key_column, KEY_COLUMNS, "key")
            label = _column(self.path, header, label_column, LABEL_COLUMNS, "label")
            for row in reader:
                row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
                value = row[label].split(",")[0].strip() if first_of_list else row[label]
                if row[key] in self.labels:
                    raise ValueError(f"{self.path}:{reader.line_num}: {row[key]!r} repeated")
                self.labels[row[key]] = value
                if cot_column in header:
                    self.cots[row[key]] = row[cot_column]
        if not self.labels:
            raise ValueError(f"{self.path}: no prediction rows")

    def predict(
        self, records: Sequence[FaceRecord], classes: Sequence[str] = EMOTIONS
    ) -> list[Prediction]:
        out = []
        for record in records:
            keys = (record.record_id, record.relpath, Path(record.relpath).name)
            key = next((k for k in keys if k in self.labels), None)
            if key is None:
                out.append(
                    Prediction(record.record_id, None, error=f"no prediction in {self.path}")
                )
                continue
            answer, cot = self.labels[key], self.cots.get(key)
            if not answer and cot:
                answer = conclusion_label(cot) or ""
            label = canonical_label(answer) if answer else None
            if label is None and cot is None:
                error = f"unknown label {answer!r} in {self.path}"
                out.append(Prediction(record.record_id, None, error=error))
            else:
                out.append(Prediction(record.record_id, label, cot=cot))
        return out

    def describe(self) -> str:
        return f"predictions from {self.path}"


@PREDICTORS.register()
class Gpt4vPredictor(CsvPredictor):
    """GPT-4V zero-shot: the first of its best-first list (``gpt4v`` column), keyed by ``name``."""

    name = "gpt4v"

    def __init__(self, path: str | os.PathLike[str] | None = None):
        super().__init__(
            path or shared_dir() / GPT4V_FERPLUS,
            key_column="name",
            label_column="gpt4v",
            first_of_list=True,
        )

    def describe(self) -> str:
        return f"GPT-4V zero-shot, top-1 of {self.path}"


def _column(
    path: Path, header: list[str], wanted: str | None, candidates: tuple[str, ...], what: str
) -> str:
    if wanted is not None:
        if wanted not in header:
            raise ValueError(f"{path}: no {what} column {wanted!r}; header is {header}")
        return wanted
    found = next((c for c in candidates if c in header), None)
    if found is None:
        raise ValueError(f"{path}: no {what} column (one of {list(candidates)}) in {header}")
    return found
