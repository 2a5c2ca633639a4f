"""The base of predictors that look at the faces: crop each record's face, answer the readable
ones in batches, time them per face."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from engine.data.faces import FaceFinder
from engine.data.images import load_image
from engine.evaluation.scoring import Prediction, Predictor
from engine.types import EMOTIONS, FaceRecord, StageError


def face_crop(record: FaceRecord, finder: FaceFinder) -> np.ndarray:
    """The RGB face crop of ``record`` (the whole image for aligned datasets)."""
    return finder.find(load_image(record), record).crop


class FacePredictor(Predictor):
    """Loads each record's face and answers the readable ones, ``batch_size`` at once.

    Subclasses implement ``answer(faces, classes) -> predictions`` for a batch of RGB face
    crops; a face that cannot be read becomes a failed prediction with its stage and reason.
    ``margin``: how much a detected face box is grown (``FaceFinder.margin``; default its own),
    e.g. to frame faces as a model's training crops were.
    """

    def __init__(self, face_mode: str = "auto", batch_size: int = 256, margin: float | None = None):
        self.finder = FaceFinder(
            mode=face_mode, margin=FaceFinder.margin if margin is None else margin
        )
        self.batch_size = int(batch_size)

    def predict(
        self, records: Sequence[FaceRecord], classes: Sequence[str] = EMOTIONS
    ) -> list[Prediction]:
        out: list[Prediction] = []
        for start in range(0, len(records), self.batch_size):
            out.extend(self._batch(records[start : start + self.batch_size], classes))
        return out

    def _batch(self, records: Sequence[FaceRecord], classes: Sequence[str]) -> list[Prediction]:
        started = time.perf_counter()
        faces: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for index, record in enumerate(records):
            try:
                faces[index] = face_crop(record, self.finder)
            except StageError as exc:
                errors[index] = f"{exc.stage}: {exc}"
        answers = self.answer(list(faces.values()), classes) if faces else []
        by_index = dict(zip(faces, answers, strict=True))
        seconds = (time.perf_counter() - started) / len(records)
        return [
            Prediction(record.record_id, None, seconds=seconds, error=errors[index])
            if index in errors
            else replace(by_index[index], record_id=record.record_id, seconds=seconds)
            for index, record in enumerate(records)
        ]

    def answer(self, faces: list[np.ndarray], classes: Sequence[str]) -> list[Prediction]:
        """Predictions (``record_id`` and ``seconds`` filled in by the caller) for face crops,
        each the best of ``classes``."""
        raise NotImplementedError
