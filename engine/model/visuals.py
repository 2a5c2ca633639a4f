"""What the ``nano`` base sees of a face (``NanoVisual``) and how it measures the face's AUs
(``AUMeter``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.types import AUReading


@dataclass(frozen=True)
class NanoVisual:
    """What the nano base sees of one face: encoder feature tokens and AU intensities."""

    features: np.ndarray  # [visual_tokens, feature_dim] float32
    aus: np.ndarray  # [len(au_codes)] float32 on the FACS 0-5 scale, 0 where not measured
    #: [8] log-probabilities (face + mirror) of the encoder's classifier or of the model's
    #: ``prior_classifiers``
    log_prior: np.ndarray
    #: AU code -> (left, right) intensities where the AU back end measured sides (the rule
    #: tables weigh one-sided movements, e.g. contempt's AU14); not model input
    sides: Mapping[str, tuple[float, float]] = field(default_factory=dict)


class AUMeter:
    """AU readings of bare face crops with an AU back end (none where it finds no face)."""

    def __init__(self, backend: str):
        from engine.aus import create_estimator

        self.estimator = create_estimator(backend)

    def __call__(self, face: np.ndarray) -> AUReading:
        from engine.types import Face, FaceRecord, StageError

        height, width = face.shape[:2]
        record = FaceRecord("face", "expllm", "", Path("."), "face", None)
        try:
            return self.estimator.estimate(Face((0, 0, width, height), face, "dataset"), record)
        except StageError:
            return AUReading({}, self.estimator.name, "")
