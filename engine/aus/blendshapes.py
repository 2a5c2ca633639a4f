"""``blendshapes`` back end: MediaPipe Face Landmarker blendshapes -> FACS AUs via a table.

The landmarker (``face_landmarker.task``, Apache-2.0) is downloaded with
``expllm models fetch face_landmarker``; it is also the teacher of the ``mesh`` back end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from engine.aus import ESTIMATORS, AUEstimator
from engine.aus.blendshape_map import blendshapes_to_reading, table_version
from engine.aus.canvas import first_found
from engine.model_files import resolve_model_path
from engine.resources import sha256_file
from engine.types import AUReading, Face, FaceRecord, Pose

MODEL_NAME = "face_landmarker"


@dataclass(frozen=True)
class LandmarkerResult:
    """Blendshape scores and the 4x4 facial transformation matrix of one face."""

    blendshapes: dict[str, float]
    matrix: np.ndarray


def open_landmarker(model_path: Path) -> vision.FaceLandmarker:
    """A single-face, still-image Face Landmarker with blendshapes and transformation matrix."""
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"Face Landmarker model {model_path} is missing")
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)),
        running_mode=vision.RunningMode.IMAGE,
        num_faces=1,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
    )
    return vision.FaceLandmarker.create_from_options(options)


def run_landmarker(
    landmarker: vision.FaceLandmarker, canvas: np.ndarray
) -> LandmarkerResult | None:
    """Run the landmarker on an RGB canvas; None when it finds no face."""
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(canvas))
    result = landmarker.detect(image)
    if not result.face_blendshapes:
        return None
    scores = {c.category_name: float(c.score) for c in result.face_blendshapes[0]}
    matrix = np.asarray(result.facial_transformation_matrixes[0], dtype=np.float64)
    return LandmarkerResult(scores, matrix)


def matrix_pose(matrix: np.ndarray) -> Pose:
    """Yaw, pitch, roll (degrees) of the rotation part of a 4x4 (or 3x3) transformation matrix.

    Uses R = Ry(yaw) Rx(pitch) Rz(roll) in MediaPipe's canonical face frame (x right,
    y up, z towards the camera).
    """
    r = np.asarray(matrix, dtype=np.float64)[:3, :3]
    r = r / np.cbrt(max(np.linalg.det(r), 1e-12))
    pitch = np.degrees(np.arcsin(np.clip(-r[1, 2], -1.0, 1.0)))
    yaw = np.degrees(np.arctan2(r[0, 2], r[2, 2]))
    roll = np.degrees(np.arctan2(r[1, 0], r[1, 1]))
    return Pose(yaw=float(yaw), pitch=float(pitch), roll=float(roll))


@ESTIMATORS.register()
class BlendshapeEstimator(AUEstimator):
    """AUs from Face Landmarker blendshapes mapped through ``data/blendshape_to_au.csv``."""

    name = "blendshapes"

    def __init__(self, model_path: str | Path | None = None):
        self._model_path = Path(model_path) if model_path else resolve_model_path(MODEL_NAME)
        self._landmarker = open_landmarker(self._model_path)
        self.model_version = (
            f"face_landmarker-sha256:{sha256_file(self._model_path)[:12]}+table:{table_version()}"
        )

    def estimate(self, face: Face | None, record: FaceRecord) -> AUReading:
        result, _ = first_found(
            face,
            record,
            lambda canvas: run_landmarker(self._landmarker, canvas),
            "MediaPipe Face Landmarker",
        )
        intensities, sides = blendshapes_to_reading(result.blendshapes)
        return AUReading(
            intensities=intensities,
            backend=self.name,
            model_version=self.model_version,
            sides=sides,
            pose=matrix_pose(result.matrix),
        )

    def close(self) -> None:
        self._landmarker.close()
