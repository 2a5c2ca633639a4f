"""The Exp-CoT pipeline for one face: read -> face -> AUs -> rules -> render -> verify -> row.

``ExpCoTPipeline`` holds the stage objects (built once per process) and turns a ``FaceRecord``
into a shard row, or a rejected row naming the failing stage and the reason. It knows nothing
of orchestration: ``flows/exp_cot.py`` runs it per shard.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

import engine
from engine.aus import AUEstimator, au_definitions, create_estimator
from engine.faces import FaceFinder
from engine.images import check_source, load_image
from engine.render import CoTRenderer
from engine.rules import EmotionEvidence, RuleBook
from engine.types import EMOTIONS, AUReading, Face, FaceRecord, StageError
from engine.verify import verify


@dataclass(frozen=True)
class PipelineConfig:
    """Options of one Exp-CoT run; stored in the output manifest so a rerun must match it."""

    au_backend: str = "mesh"
    au_options: tuple[tuple[str, str], ...] = ()
    face_mode: str = "auto"
    embed_images: bool = False
    max_pixels: int = 100_000_000
    max_words: int = 160

    def to_dict(self) -> dict:
        data = asdict(self)
        data["au_options"] = dict(self.au_options)
        return data


@dataclass
class ShardResult:
    """Rows of one shard: accepted rows and rejected rows (with stage and reason)."""

    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)


class ExpCoTPipeline:
    """Stages 2-7 for single records; build once per process and reuse."""

    def __init__(self, config: PipelineConfig, estimator: AUEstimator | None = None):
        self.config = config
        self.estimator = estimator or create_estimator(config.au_backend, **dict(config.au_options))
        self.rules = RuleBook.load()
        self.renderer = CoTRenderer(
            threshold=self.rules.active_threshold, max_words=config.max_words
        )
        self.finder = FaceFinder(mode=config.face_mode)
        self._au_codes = tuple(au_definitions())

    def run(self, records: list[FaceRecord]) -> ShardResult:
        """Process ``records``; a failing record is rejected and the rest carry on."""
        result = ShardResult()
        for record in records:
            try:
                result.rows.append(self.process(record))
            except StageError as exc:
                result.rejected.append(rejected_row(record, exc.stage, str(exc)))
            except Exception as exc:  # noqa: BLE001 - a record never stops the run
                result.rejected.append(
                    rejected_row(record, "internal", f"{type(exc).__name__}: {exc}")
                )
        return result

    def process(self, record: FaceRecord) -> dict:
        """The shard row of one record; raises StageError at the first failing stage."""
        started = time.perf_counter()
        image = face = None
        if self.estimator.needs_pixels or self.config.embed_images:
            image = load_image(record, max_pixels=self.config.max_pixels)
        else:
            check_source(record)
        if self.estimator.needs_pixels:
            face = self.finder.find(image, record)
        reading = self.estimator.estimate(face, record)
        return self.describe(record, reading, face, image, started)

    def describe(
        self,
        record: FaceRecord,
        reading: AUReading,
        face: Face | None = None,
        image: np.ndarray | None = None,
        started: float | None = None,
    ) -> dict:
        """Stages 4-7 from measured AUs: rules, render, verify, and the row."""
        started = time.perf_counter() if started is None else started
        evidence = self.rules.evaluate(reading)
        rendered = self.renderer.render(record.record_id, record.label, evidence)
        text = rendered.cot.text
        measured = frozenset(a.au for a in evidence.active)
        check = verify(text, record.label, measured)
        row = self._base_row(record, reading, face, evidence)
        row.update(
            image_bytes=_image_bytes(record, image) if self.config.embed_images else None,
            cot_observations=rendered.cot.observations,
            cot_interpretation=rendered.cot.interpretation,
            cot_conclusion=rendered.cot.conclusion,
            cot_text=text,
            cot_words=rendered.cot.word_count,
            template_id=rendered.template_id,
            writer="template",
            writer_model=None,
            rounds=1,
            draft_failures=[],
            inferred_label=check.inferred_label,
            verified=check.verified,
            faithfulness=check.faithfulness,
            mentioned_aus=list(check.mentioned_aus),
            seconds=time.perf_counter() - started,
        )
        return row

    def _base_row(
        self, record: FaceRecord, reading: AUReading, face: Face | None, evidence: EmotionEvidence
    ) -> dict:
        soft = record.soft_label or {}
        pose = reading.pose
        row = {
            "record_id": record.record_id,
            "dataset": record.dataset,
            "split": record.split,
            "image_path": record.relpath,
            "label": record.label,
            **{f"soft_{e}": soft.get(e) for e in EMOTIONS},
            "face_x": face.box[0] if face else None,
            "face_y": face.box[1] if face else None,
            "face_w": face.box[2] if face else None,
            "face_h": face.box[3] if face else None,
            "face_source": face.source if face else None,
            "face_score": face.score if face else None,
            "pose_yaw": pose.yaw if pose else None,
            "pose_pitch": pose.pitch if pose else None,
            "pose_roll": pose.roll if pose else None,
            "au_backend": reading.backend,
            "au_model_version": reading.model_version,
            "engine_version": engine.__version__,
            **{f"evidence_{e}": evidence.scores[e] for e in EMOTIONS},
            "active_aus": [a.au for a in evidence.active],
            "dominant_emotion": evidence.dominant,
            "secondary_emotion": evidence.secondary,
            "matched_prototypes": [m.prototype for m in evidence.prototypes],
            "conflicts": list(evidence.conflicts),
            "au_supports_label": None
            if record.label is None
            else evidence.dominant == record.label,
        }
        for code in self._au_codes:
            row[code] = reading.intensities.get(code)
            left, right = reading.sides.get(code, (None, None))
            row[f"{code}_L"] = left
            row[f"{code}_R"] = right
        return row

    def close(self) -> None:
        self.estimator.close()


def rejected_row(record: FaceRecord, stage: str, reason: str) -> dict:
    """A row of the ``_rejected`` shards."""
    return {
        "record_id": record.record_id,
        "dataset": record.dataset,
        "split": record.split,
        "image_path": record.relpath,
        "label": record.label,
        "stage": stage,
        "reason": reason,
    }


def _image_bytes(record: FaceRecord, image: np.ndarray) -> bytes:
    path = Path(str(record.path))
    if path.is_file():
        return path.read_bytes()
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise StageError("write", f"could not encode the image of {record.record_id} as PNG")
    return encoded.tobytes()
