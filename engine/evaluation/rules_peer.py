"""The ``rules`` peer: the rule tables' best emotion from AU evidence alone, read from an
Exp-CoT output folder or measured with an AU back end (``RuleEvidence``, also the flow's source
of measured AUs for CoT faithfulness)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.aus import au_definitions, create_estimator
from engine.aus.table import find_au_columns, reading_from_row
from engine.cot.rules import EmotionEvidence, RuleBook
from engine.data.faces import FaceFinder
from engine.data.images import load_image
from engine.evaluation.scoring import PREDICTORS, Prediction, Predictor, best_of
from engine.store.stats import read_shards
from engine.types import EMOTIONS, AUReading, FaceRecord, StageError

#: The shard columns of the rules' evidence per emotion.
EVIDENCE_COLUMNS = tuple(f"evidence_{e}" for e in EMOTIONS)


@dataclass(frozen=True)
class RuleReading:
    """The rules' reading of one record: dominant emotion, evidence per emotion and the AUs
    active on its face."""

    dominant: str | None
    active: frozenset[str] | None
    scores: dict[str, float] | None = None
    seconds: float = 0.0
    error: str | None = None
    #: (AU, intensity) a complete CoT cites: the active AUs, strongest first, up to the
    #: rule tables' ``max_cited_aus`` (None: unknown)
    cited: tuple[tuple[str, float], ...] | None = None
    #: the rule tables' whole reading of the face (cue claims are held to it; None: unknown)
    evidence: EmotionEvidence | None = None

    def best(self, classes: Sequence[str]) -> str | None:
        """The dominant emotion when it is one of ``classes``, else the best-scored of them."""
        if self.dominant is None or self.dominant in classes or self.scores is None:
            return self.dominant
        return best_of(self.scores, classes)


class RuleEvidence:
    """AU evidence per record, read from an Exp-CoT output folder or measured now.

    ``shards``: a folder of Exp-CoT shards (``dominant_emotion``, ``evidence_*`` and
    ``active_aus`` matched by ``record_id``, else ``image_path``). Without it, each face is
    measured with the AU back end ``au_backend`` (``au_options``) and read through ``RuleBook``.
    """

    def __init__(
        self,
        shards: str | os.PathLike[str] | None = None,
        au_backend: str = "mesh",
        au_options: dict[str, str] | None = None,
        face_mode: str = "auto",
    ):
        self.shards = Path(shards) if shards else None
        if self.shards is not None:
            if not self.shards.is_dir():
                raise FileNotFoundError(f"Exp-CoT output folder {self.shards} not found")
            columns = ["record_id", "image_path", "dominant_emotion", "active_aus", "au_backend"]
            sided = [f"{code}{side}" for code in au_definitions() for side in ("", "_L", "_R")]
            frame = read_shards(self.shards, [*columns, *EVIDENCE_COLUMNS, *sided])
            if frame.empty:
                raise ValueError(f"{self.shards}: no shard-*.parquet files with records")
            backend = frame["au_backend"].iloc[0] if "au_backend" in frame else au_backend
            self.rules = RuleBook.for_backend(backend)
            self._columns = find_au_columns(frame.columns)
            rows = list(frame.itertuples(index=False))
            self.by_id = {r.record_id: r for r in rows}
            self.by_path = {r.image_path: r for r in rows}
        else:
            self.estimator = create_estimator(au_backend, **(au_options or {}))
            self.rules = RuleBook.for_backend(self.estimator.name)  # as exp-cot picks it
            self.finder = FaceFinder(mode=face_mode)
        self.au_backend = au_backend

    def read(self, records: Sequence[FaceRecord]) -> list[RuleReading]:
        """One reading per record (``error`` set where the face could not be measured)."""
        return [self._from_shards(r) if self.shards else self._measure(r) for r in records]

    def _from_shards(self, record: FaceRecord) -> RuleReading:
        row = self.by_id.get(record.record_id) or self.by_path.get(record.relpath)
        if row is None:
            return RuleReading(None, None, error=f"not in the shards of {self.shards}")
        scores = {
            e: float(getattr(row, c)) for e, c in zip(EMOTIONS, EVIDENCE_COLUMNS, strict=True)
        }
        active = [(code, float(getattr(row, code, 0.0))) for code in row.active_aus]
        cited = sorted(active, key=lambda item: (-item[1], item[0]))[: self.rules.max_cited_aus]
        return RuleReading(
            row.dominant_emotion,
            frozenset(row.active_aus),
            scores,
            cited=tuple(cited),
            evidence=self.rules.evaluate(self._au_reading(row)),
        )

    def _au_reading(self, row) -> AUReading:
        """The AU intensities (and sides) of a shard row."""
        backend = str(getattr(row, "au_backend", self.au_backend))
        reading = reading_from_row(row._asdict(), self._columns, 1.0, backend, "shard")
        return reading or AUReading({}, backend, "shard")

    def _measure(self, record: FaceRecord) -> RuleReading:
        started = time.perf_counter()
        try:
            face = (
                self.finder.find(load_image(record), record)
                if self.estimator.needs_pixels
                else None
            )
            evidence = self.rules.evaluate(self.estimator.estimate(face, record))
        except StageError as exc:
            seconds = time.perf_counter() - started
            return RuleReading(None, None, seconds=seconds, error=f"{exc.stage}: {exc}")
        active = frozenset(a.au for a in evidence.active)
        cited = tuple((a.au, a.intensity) for a in evidence.active[: self.rules.max_cited_aus])
        seconds = time.perf_counter() - started
        scores = dict(evidence.scores)
        return RuleReading(
            evidence.dominant, active, scores, seconds, cited=cited, evidence=evidence
        )

    def describe(self) -> str:
        return f"shards {self.shards}" if self.shards else f"{self.au_backend} AU back end"

    def close(self) -> None:
        """Release the AU back end, if one was built."""
        if self.shards is None:
            self.estimator.close()


@PREDICTORS.register()
class RulesPredictor(Predictor):
    """The rule tables' best emotion from AU evidence alone (options: see ``RuleEvidence``)."""

    name = "rules"

    def __init__(self, **options):
        self.evidence = RuleEvidence(**options)

    def predict(
        self, records: Sequence[FaceRecord], classes: Sequence[str] = EMOTIONS
    ) -> list[Prediction]:
        return [
            Prediction(
                r.record_id, reading.best(classes), seconds=reading.seconds, error=reading.error
            )
            for r, reading in zip(records, self.evidence.read(records), strict=True)
        ]

    def describe(self) -> str:
        return f"rule tables on AU evidence ({self.evidence.describe()})"
