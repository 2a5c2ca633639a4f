"""The ``pyfeat`` back end: py-feat's detector run on the face crop.

py-feat 2.x has no ``feat.Detector``; it offers ``Detectorv2`` (RetinaFace + a multitask
network, 20 AUs, the default here) and ``Detectorv1`` (RetinaFace + landmarks + XGBoost AU
classifiers). Both report each AU as a probability of presence in [0, 1], which is multiplied by
5 onto the 0-5 scale: a strength of evidence, not a FACS intensity grade. py-feat downloads its
weights from the Hugging Face hub at first use, so the first run needs network access (or a
filled cache). Install with ``pip install 'expllm[pyfeat]'``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from engine.aus import ESTIMATORS, MAX_INTENSITY, AUEstimator
from engine.aus.table import find_au_columns, pose_columns, pose_from_row, reading_from_row
from engine.types import AUReading, Face, FaceRecord, StageError

#: ``detector`` option -> py-feat class.
DETECTORS = {"v1": "Detectorv1", "v2": "Detectorv2"}
_BOX_COLUMNS = ("FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight")


@dataclass(frozen=True)
class FexFace:
    """One face (row) of a py-feat ``Fex``: its image, box ``(x, y, w, h)``, score and AUs."""

    input: str
    box: tuple[int, int, int, int] | None
    score: float | None
    reading: AUReading


def import_feat() -> ModuleType:
    """The ``feat`` package, or ImportError saying how to install it."""
    try:
        return importlib.import_module("feat")
    except ImportError as error:
        raise ImportError(
            f"the pyfeat AU back end needs py-feat ({error}); "
            "install it with: pip install 'expllm[pyfeat]'"
        ) from error


def readings_from_fex(fex: pd.DataFrame, model_version: str | None = None) -> list[FexFace]:
    """The faces of a py-feat ``Fex`` (a DataFrame subclass) as ``FexFace`` values, in row order.

    AU columns are ``fex.au_columns`` (all columns when unset). OpenFace results
    (``fex.detector == "OpenFace"``) are 0-5 intensities (``AU01_r``) with pose in radians;
    everything else is py-feat output: probabilities times 5, pose in degrees. Rows without any
    AU value (py-feat's rows for images without a face) are left out. ``model_version``
    defaults to ``"py-feat:<fex.detector>"``.
    """
    detector = getattr(fex, "detector", None) or "Fex"
    version = model_version or f"py-feat:{detector}"
    openface = detector == "OpenFace"
    columns = find_au_columns(getattr(fex, "au_columns", None) or fex.columns)
    pose = pose_columns(fex.columns, "openface" if openface else "pyfeat")
    factor = 1.0 if openface else MAX_INTENSITY
    faces = []
    for row in fex.to_dict("records"):
        reading = reading_from_row(
            row, columns, factor, PyFeatEstimator.name, version, pose_from_row(row, pose, openface)
        )
        if reading is not None:
            faces.append(
                FexFace(_text(row.get("input")), _box(row), _number(row, "FaceScore"), reading)
            )
    return faces


@ESTIMATORS.register()
class PyFeatEstimator(AUEstimator):
    """py-feat on the face crop; the face py-feat scores highest in the crop gives the AUs.

    ``detector``: ``"v2"`` or ``"v1"`` (see ``DETECTORS``); ``device``: torch device;
    ``face_detection_threshold``: py-feat's RetinaFace threshold; other options go to the
    py-feat class unchanged. ``identity_model`` defaults to None (py-feat: ``"arcface"``), as
    identities are not used.
    """

    name: ClassVar[str] = "pyfeat"
    licence: ClassVar[str] = "py-feat's weights: see each model's card on the Hugging Face hub"

    def __init__(
        self,
        detector: str = "v2",
        device: str = "cpu",
        face_detection_threshold: float = 0.5,
        **options: Any,
    ):
        if detector not in DETECTORS:
            raise ValueError(
                f"unknown py-feat detector {detector!r}; choose one of {list(DETECTORS)}"
            )
        feat = import_feat()
        self.threshold = face_detection_threshold
        cls = getattr(feat, DETECTORS[detector])
        options.setdefault("identity_model", None)
        try:
            self.detector = cls(device=device, **options)
        except OSError as error:  # huggingface_hub's download and cache errors are OSErrors
            raise RuntimeError(
                f"py-feat {cls.__name__} could not load its weights ({error}); py-feat fetches "
                "them from the Hugging Face hub at first use into its resources folder "
                f"({feat.__path__[0]}/resources)"
            ) from error
        info = getattr(self.detector, "info", {}) or {}
        models = ",".join(f"{key}={value}" for key, value in sorted(info.items()) if value)
        self.model_version = f"py-feat-{feat.__version__}:{cls.__name__}:{models}"
        self._torch = importlib.import_module("torch")

    def estimate(self, face: Face | None, record: FaceRecord) -> AUReading:
        if face is None:
            raise StageError("aus", f"the pyfeat back end needs the face crop of {record.relpath}")
        crop = np.ascontiguousarray(face.crop.transpose(2, 0, 1))
        fex = self.detector.detect(
            self._torch.from_numpy(crop)[None],
            data_type="tensor",
            face_detection_threshold=self.threshold,
            progress_bar=False,
        )
        faces = readings_from_fex(fex, self.model_version)
        if not faces:
            raise StageError("aus", f"py-feat found no face in the crop of {record.relpath}")
        return max(faces, key=lambda found: found.score or 0.0).reading


def _number(row: dict[str, Any], column: str) -> float | None:
    value = row.get(column)
    return None if value is None or pd.isna(value) else float(value)


def _box(row: dict[str, Any]) -> tuple[int, int, int, int] | None:
    values = [_number(row, column) for column in _BOX_COLUMNS]
    if any(value is None for value in values):
        return None
    x, y, w, h = (round(value) for value in values if value is not None)
    return x, y, w, h


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
