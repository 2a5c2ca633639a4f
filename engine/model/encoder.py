"""The nano base's frozen face encoder: the shipped ONNX model (``engine/weights/
nano_encoder.onnx``) run on onnxruntime, and the image helpers it shares with the ``nano``
predictor (``classify_faces``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from engine.model.config import WEIGHTS
from engine.resources import sha256_file

NANO_ENCODER = WEIGHTS / "nano_encoder.onnx"
#: The encoder's input size (grey, height x width).
INPUT_SIZE = (48, 48)
#: The margin (per side, a fraction of the box's side) by which a face box of the Haar detector
#: (``engine.data.faces``) is grown to frame the face as the encoder's training crops (FER2013's)
#: are framed: the detector's box is 0.979 of a FER+ crop's side (median) and centred on it. The
#: pipeline's 0.2 shows the encoder faces ~25 % smaller than it learnt, and costs it 3 points of
#: accuracy and 9 of UAR on FER+ Test faces found in a wider frame (``benchmarks/face_framing.py``).
FACE_MARGIN = 0.02
_CHUNK = 256


def grey_face(face: np.ndarray, size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """An RGB (or grey) crop -> uint8 grey of ``size`` (height, width; ITU-R 601 luma).

    A crop of another shape is first letterboxed (padded on both sides of its short dimension
    by repeating its edge pixels), so the face keeps its proportions: FER+ Test faces cut to 80 %
    of their height, as a frame's edge clips a box, read 79.9 % right stretched and 84.2 %
    letterboxed (``benchmarks/face_framing.py --cuts``). Then averaged over areas where it
    shrinks, bicubic where it grows: area resizing repeats pixels when it enlarges, and FER+ Test
    faces shrunk to 24 px and enlarged so read 53 % right, bicubic 76 % (``--sizes``)."""
    grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY) if face.ndim == 3 else face
    grey = _letterboxed(grey, size[0] / size[1])
    if grey.shape == size:
        return grey
    shrinks = grey.shape[0] >= size[0] and grey.shape[1] >= size[1]
    interpolation = cv2.INTER_AREA if shrinks else cv2.INTER_CUBIC
    return cv2.resize(grey, (size[1], size[0]), interpolation=interpolation)


def _letterboxed(grey: np.ndarray, aspect: float) -> np.ndarray:
    """``grey`` padded by its edge pixels, evenly on both sides, to ``aspect`` (height/width)."""
    height, width = grey.shape
    rows = max(0, round(width * aspect) - height)
    columns = max(0, round(height / aspect) - width)
    if not rows and not columns:
        return grey
    top, left = rows // 2, columns // 2
    return cv2.copyMakeBorder(grey, top, rows - top, left, columns - left, cv2.BORDER_REPLICATE)


def grey_faces(faces: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """RGB crops -> float32 ``[N, 1, H, W]`` grey in [0, 1] (``grey_face``)."""
    out = np.empty((len(faces), 1, size[0], size[1]), dtype=np.float32)
    for index, face in enumerate(faces):
        out[index, 0] = grey_face(face, size) / 255.0
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[N, classes]`` logits."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def pinned(path: Path, sha256: str, config: Path) -> Path:
    """``path``, checked to exist and to be the file (``sha256``) the model folder's ``config``
    was trained with."""
    if not path.is_file():
        raise FileNotFoundError(f"{config}: {path} not found")
    if sha256_file(path) != sha256:
        raise ValueError(
            f"{config}: {path} has another sha256 than the one this model was trained with"
        )
    return path


def encoder_session(path: Path):
    """An onnxruntime session of the encoder at ``path`` (CPU)."""
    import onnxruntime

    if not path.is_file():
        raise FileNotFoundError(f"nano encoder {path} not found")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def feature_shape(session, path: Path) -> tuple[int, int]:
    """(feature dimension, visual tokens) of the encoder's ``features`` map [N, C, H, W]: one
    token per cell plus their mean."""
    shape = {o.name: o.shape for o in session.get_outputs()}.get("features")
    if shape is None or len(shape) != 4:
        raise ValueError(f"{path}: no output 'features' [N, C, H, W]")
    return int(shape[1]), int(shape[2]) * int(shape[3]) + 1


def encode_faces(session, faces: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens [N, cells + 1, C], log_priors [N, classes])`` of RGB face crops: the feature
    map's cells and their mean, and the classifier's log-probabilities (face + mirror)."""
    tokens, priors = [], []
    for start in range(0, len(faces), _CHUNK):
        batch = grey_faces(faces[start : start + _CHUNK], INPUT_SIZE)
        maps, logits = session.run(["features", "logits"], {"image": batch})
        priors.append(np.log(mirror_average(session, batch, logits) + 1e-9))
        cells = maps.reshape(len(batch), maps.shape[1], -1).transpose(0, 2, 1)
        tokens.append(np.concatenate([cells, cells.mean(axis=1, keepdims=True)], axis=1))
    return np.concatenate(tokens).astype(np.float32), np.concatenate(priors)


def classify_faces(
    session,
    faces: Sequence[np.ndarray],
    size: tuple[int, int] = INPUT_SIZE,
    mirror: bool = True,
) -> np.ndarray:
    """Class probabilities ``[N, classes]`` of RGB face crops by a classifier with the
    encoder's interface (input ``size``; ``mirror``: face + mirror)."""
    out = []
    for start in range(0, len(faces), _CHUNK):
        batch = grey_faces(faces[start : start + _CHUNK], size)
        logits = session.run(["logits"], {"image": batch})[0]
        out.append(mirror_average(session, batch, logits) if mirror else softmax(logits))
    return np.concatenate(out)


def mirror_average(session, batch: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """The mean of the probabilities of ``batch`` (its ``logits``, from ``session``) and of its
    mirror image."""
    mirrored = session.run(["logits"], {"image": batch[..., ::-1].copy()})[0]
    return (softmax(logits) + softmax(mirrored)) / 2


class PriorClassifiers:
    """Classifiers (ONNX files, the encoder's interface) whose face + mirror probabilities,
    averaged, are a model's prior; the encoder's own among them is taken from its run."""

    def __init__(self, paths: Sequence[Path], encoder: Path):
        self.paths = tuple(paths)
        self.encoder = encoder
        self._sessions: dict[Path, object] = {}

    def __call__(self, faces: Sequence[np.ndarray], encoder_log_prior: np.ndarray) -> np.ndarray:
        """Log mean probabilities ``[N, classes]`` of ``faces`` (``encoder_log_prior``: the
        encoder's log-probabilities of the same faces)."""
        probabilities = []
        for path in self.paths:
            if path == self.encoder:
                probabilities.append(np.exp(encoder_log_prior))
                continue
            if path not in self._sessions:
                self._sessions[path] = encoder_session(path)
            probabilities.append(classify_faces(self._sessions[path], faces))
        return np.log(np.mean(probabilities, axis=0) + 1e-9)
