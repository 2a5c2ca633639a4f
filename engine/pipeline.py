"""The Exp-CoT pipeline: read -> face -> AUs -> rules -> engine loop (write, read, verify) -> row.

``ExpCoTPipeline`` holds the stage objects (built once per process: AU back end, rule book,
writer and reader) and turns a batch of ``FaceRecord`` into shard rows, or rejected rows naming
the failing stage and the reason. The engine loop (``engine.cot.loop``) runs over the whole batch
so that an LLM writer's calls of one round go out together. Its options are a
``PipelineConfig`` (``engine.pipeline_config``). It knows nothing of orchestration:
``flows/exp_cot.py`` runs it per shard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

import engine
from engine.aus import AUEstimator, au_definitions, create_estimator
from engine.cot.loop import EngineLoop, LoopItem, LoopResult
from engine.cot.render import CoTRenderer
from engine.cot.rules import EmotionEvidence, RuleBook
from engine.cot.verify import mentioned_aus
from engine.cot.writers import (
    REJECT,
    ChatParams,
    Writer,
    WriterOptions,
    WriterSetup,
    create_reader,
    create_writer,
)
from engine.data.faces import FaceFinder
from engine.data.images import check_source, load_image
from engine.pipeline_config import PipelineConfig
from engine.types import EMOTIONS, AUReading, Face, FaceRecord, StageError


@dataclass
class ShardResult:
    """Rows of one shard: accepted rows and rejected rows (with stage and reason)."""

    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    usage: dict | None = None  # LLM calls, cache hits, tokens and cost of this shard


@dataclass
class _Measured:
    """A record after stages 2-4: AUs measured, evidence computed."""

    record: FaceRecord
    reading: AUReading
    evidence: EmotionEvidence
    face: Face | None
    image: np.ndarray | None
    seconds: float


class ExpCoTPipeline:
    """Stages 2-7 for batches of records (a shard); build once per process and reuse."""

    def __init__(
        self,
        config: PipelineConfig,
        estimator: AUEstimator | None = None,
        cache_dir: Path | None = None,
    ):
        """``cache_dir``: the LLM response cache (the flow uses ``<out>/_llm_cache``)."""
        self.config = config
        self.estimator = estimator or create_estimator(config.au_backend, **dict(config.au_options))
        backend = getattr(self.estimator, "name", config.au_backend)
        self.rules = RuleBook.for_backend(backend, config.rules)  # data/rules/<backend>/ or data/
        self.renderer = CoTRenderer(
            threshold=self.rules.active_threshold,
            max_words=config.max_words,
            max_aus=self.rules.max_cited_aus,
        )
        self.finder = FaceFinder(mode=config.face_mode)
        self._au_codes = tuple(au_definitions())
        options = WriterOptions(
            base_url=config.base_url,
            model=config.llm_model,
            concurrency=config.llm_concurrency,
            timeout=config.llm_timeout,
            max_retries=config.llm_retries,
        )
        params = ChatParams(config.max_new_tokens, config.temperature, config.seed)
        setup = WriterSetup(options, params, config.word_cap, cache_dir, config.rewrite)
        self.writer = create_writer(config.writer, self.renderer, setup)
        self.reader = create_reader(config.reader, self.writer)
        uses_model = self.writer.uses_model
        self.loop = EngineLoop(
            self.writer,
            self.reader,
            max_rounds=config.max_rounds,
            word_cap=config.word_cap if uses_model else None,
        )
        self._fallback = (  # --fallback names the model-free writer, or rejects
            EngineLoop(create_writer(config.fallback, self.renderer), self.reader, 1, None)
            if uses_model and config.fallback != REJECT
            else None
        )

    def run(self, records: list[FaceRecord]) -> ShardResult:
        """Process ``records``; a failing record is rejected and the rest carry on."""
        result = ShardResult()
        measured = []
        for record in records:
            try:
                measured.append(self.measure(record))
            except StageError as exc:
                result.rejected.append(rejected_row(record, exc.stage, str(exc)))
            except Exception as exc:  # noqa: BLE001 - a record never stops the run
                result.rejected.append(
                    rejected_row(record, "internal", f"{type(exc).__name__}: {exc}")
                )
        rows, rejected = self._describe_many(measured)
        result.rows.extend(rows)
        result.rejected.extend(rejected)
        usage = self.writer.take_usage()
        result.usage = usage.as_dict() if usage else None
        return result

    def measure(self, record: FaceRecord) -> _Measured:
        """Stages 2-4 of one record; raises StageError at the first failing stage."""
        started = time.perf_counter()
        image = face = None
        if self.estimator.needs_pixels or self.config.embed_images:
            image = load_image(record, max_pixels=self.config.max_pixels)
        else:
            check_source(record)
        if self.estimator.needs_pixels:
            face = self.finder.find(image, record)
        reading = self.estimator.estimate(face, record)
        evidence = self.rules.evaluate(reading)
        return _Measured(record, reading, evidence, face, image, time.perf_counter() - started)

    def describe(
        self,
        record: FaceRecord,
        reading: AUReading,
        face: Face | None = None,
        image: np.ndarray | None = None,
    ) -> dict:
        """Stages 4-7 of one face from measured AUs; raises StageError when it is rejected."""
        started = time.perf_counter()
        evidence = self.rules.evaluate(reading)
        item = _Measured(record, reading, evidence, face, image, time.perf_counter() - started)
        rows, rejected = self._describe_many([item])
        if rejected:
            raise StageError(rejected[0]["stage"], rejected[0]["reason"])
        return rows[0]

    def _describe_many(self, items: list[_Measured]) -> tuple[list[dict], list[dict]]:
        """The engine loop over ``items``; rows for verified faces, rejected rows for the rest.

        A face's ``seconds`` is its own measuring time plus an equal share of the loop's time
        (the loop works on the batch, round by round).
        """
        dropped = []
        if self.config.keep == "supported":
            dropped = [
                rejected_row(
                    m.record,
                    "keep",
                    f"the measured AUs favour {m.evidence.dominant}, not {m.record.label} "
                    "(--keep supported)",
                )
                for m in items
                if m.record.label is not None and m.evidence.dominant != m.record.label
            ]
            items = [
                m for m in items if m.record.label is None or m.evidence.dominant == m.record.label
            ]
        if not items:
            return [], dropped
        loop_items = [
            LoopItem(
                m.record.record_id,
                m.record.label,
                m.evidence,
                frozenset(a.au for a in m.evidence.active),
                self._required_aus(m),
                m.reading.intensities if self.writer.uses_model else None,
                tuple((a.au, a.intensity) for a in m.evidence.active),
                self.rules.max_cited_aus,
            )
            for m in items
        ]
        started = time.perf_counter()
        try:
            results = self.loop.run(loop_items)
            writers = [self.writer] * len(items)
            if self._fallback is not None:
                self._apply_fallback(loop_items, results, writers)
        except Exception as exc:  # noqa: BLE001 - a failing writer rejects its batch, no crash
            reason = f"{type(exc).__name__}: {exc}"
            return [], dropped + [rejected_row(m.record, "write", reason) for m in items]
        share = (time.perf_counter() - started) / len(items)
        rows, rejected = [], []
        for measured, result, writer in zip(items, results, writers, strict=True):
            keep = result.verified or (not self.writer.uses_model and result.cot is not None)
            if not keep:
                reason = f"no verified draft in {result.rounds} round(s): " + "; ".join(
                    result.failures
                )
                rejected.append(rejected_row(measured.record, "verify", reason))
                continue
            rows.append(self._row(measured, result, writer, measured.seconds + share))
        return rows, dropped + rejected

    def _apply_fallback(
        self, items: list[LoopItem], results: list[LoopResult], writers: list[Writer]
    ) -> None:
        """``--fallback template``: faces no LLM draft verified get the model-free writer's text."""
        failed = [i for i, r in enumerate(results) if not r.verified]
        for index, result in zip(
            failed, self._fallback.run([items[i] for i in failed]), strict=True
        ):
            result.failures = results[index].failures + result.failures
            result.rounds += results[index].rounds
            results[index] = result
            writers[index] = self._fallback.writer

    def _required_aus(self, m: _Measured) -> frozenset[str]:
        """AUs an LLM draft must name: those the template's own draft names (none for it)."""
        if not self.writer.uses_model:
            return frozenset()
        reference = self.renderer.render(m.record.record_id, None, m.evidence).cot.text
        return frozenset(mentioned_aus(reference))

    def _row(self, m: _Measured, result: LoopResult, writer: Writer, seconds: float) -> dict:
        cot, check = result.cot, result.verification
        row = self._base_row(m.record, m.reading, m.face, m.evidence)
        row.update(
            image_bytes=_image_bytes(m.record, m.image) if self.config.embed_images else None,
            cot_observations=cot.observations,
            cot_interpretation=cot.interpretation,
            cot_conclusion=cot.conclusion,
            cot_text=cot.text,
            cot_words=cot.word_count,
            template_id=result.template_id,
            writer=writer.name,
            writer_model=writer.model,
            rounds=result.rounds,
            draft_failures=list(result.failures),
            inferred_label=check.inferred_label,
            verified=check.verified,
            faithfulness=check.faithfulness,
            complete=check.complete,
            mentioned_aus=list(check.mentioned_aus),
            rules_table=self.rules.table_id,
            seconds=seconds,
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
            row[f"{code}_present"] = reading.presence.get(code)
        return row

    def close(self) -> None:
        self.estimator.close()
        self.writer.close()


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
