"""``openface`` AU back end: OpenFace 2.2's FACS-trained static models, run by our own pipeline.

68 iBUG landmarks (see ``LANDMARK_SOURCES``; by default MediaPipe's in-wheel face mesh finds
the face and dlib's shape predictor from ``face-recognition-models`` places the points) ->
PDM fit -> 112-pixel masked alignment -> FHOG + geometry ->
static linear SVR intensities (17 AUs) and SVM presence (18 AUs). Model files come from the
model folder (``expllm models fetch openface --accept-licence``); their licence is OpenFace's
(non-commercial research only).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from engine.aus import ESTIMATORS, AUEstimator
from engine.aus.canvas import to_rgb
from engine.aus.mesh import open_face_mesh
from engine.aus.openface.landmarks import (
    DlibLandmarks,
    ibug68_from_mesh,
    mesh_points,
    resized_points,
)
from engine.aus.openface.model import FaceAnalysis, OpenFaceModel
from engine.aus.openface.pdm import PDMParams
from engine.model_files import model_spec, resolve_model_path
from engine.types import AUReading, Face, FaceRecord, Pose, StageError

MODEL_NAME = "openface"
#: Crops smaller than this (longer side, pixels) are upscaled before landmarks and alignment.
MIN_SIDE = 192
#: How the 68 landmarks are found: ``mesh+dlib`` (the face mesh finds the face, dlib's shape
#: predictor places the points on the box its detector would give), ``mesh`` (the mesh's
#: points mapped to iBUG-68; no dlib needed), ``dlib`` (dlib's own detector and predictor).
LANDMARK_SOURCES = ("mesh+dlib", "mesh", "dlib")


def upscaled(crop: np.ndarray) -> np.ndarray:
    """The RGB crop, enlarged (bicubic) so that its longer side is at least ``MIN_SIDE``."""
    rgb = to_rgb(crop)
    side = max(rgb.shape[:2])
    if side >= MIN_SIDE:
        return rgb
    scale = MIN_SIDE / side
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)


def params_pose(params: PDMParams) -> Pose:
    """Head pose in degrees from the PDM's rotation (pitch about x, yaw about y, roll about z)."""
    pitch, yaw, roll = np.degrees(params.rotation)
    return Pose(yaw=float(yaw), pitch=float(pitch), roll=float(roll))


def default_landmarks() -> str:
    """``mesh+dlib`` where dlib and its predictor are installed (``expllm[openface]``), else
    ``mesh``."""
    found = all(importlib.util.find_spec(m) for m in ("dlib", "face_recognition_models"))
    return "mesh+dlib" if found else "mesh"


def load_openface_model(model_dir: str | Path | None) -> OpenFaceModel:
    """The static models from ``model_dir``, else from the model folder."""
    return OpenFaceModel.load(Path(model_dir) if model_dir else resolve_model_path(MODEL_NAME))


@ESTIMATORS.register()
class OpenFaceEstimator(AUEstimator):
    """AU intensities and presence from OpenFace 2.2's static models."""

    name = "openface"
    licence = model_spec(MODEL_NAME).licence

    def __init__(
        self,
        model_dir: str | Path | None = None,
        landmarks: str | None = None,
        mirror: bool = True,
    ):
        landmarks = landmarks or default_landmarks()
        if not isinstance(mirror, bool):
            raise ValueError(f"option mirror expects true or false, got {mirror!r}")
        self.mirror = mirror
        if landmarks not in LANDMARK_SOURCES:
            known = ", ".join(LANDMARK_SOURCES)
            raise ValueError(f"unknown landmark source {landmarks!r}; choose one of {known}")
        self._model = load_openface_model(model_dir)
        self.landmarks = landmarks
        self._dlib = DlibLandmarks() if "dlib" in landmarks else None
        self._mesh = open_face_mesh() if "mesh" in landmarks else None
        self.model_version = (
            f"{self._model.version}+landmarks:{landmarks}{'+mirror' if self.mirror else ''}"
        )

    def analyse(
        self, face: Face | None, record: FaceRecord, mesh: np.ndarray | None = None
    ) -> FaceAnalysis:
        """OpenFace's full reading of the face; ``mesh``: its 478 face-mesh points in the crop's
        pixels when already known (the ``fused`` back end), else found here."""
        if face is None:
            raise StageError("aus", f"no face crop for {record.record_id}")
        image = upscaled(face.crop)
        if self.landmarks == "dlib":
            points = self._dlib(image)
        else:
            if mesh is None:
                mesh = mesh_points(self._mesh, face.crop)
            points = (
                None
                if mesh is None
                else resized_points(ibug68_from_mesh(mesh), face.crop.shape, image.shape)
            )
            if points is not None and self._dlib is not None:
                points = self._dlib.refine(image, points)
        if points is None:
            raise StageError(
                "aus", f"no face found by the {self.landmarks} landmarks in {record.relpath}"
            )
        return self._model.analyse(image, points, mirror=self.mirror)

    def estimate(self, face: Face | None, record: FaceRecord) -> AUReading:
        analysis = self.analyse(face, record)
        return AUReading(
            intensities=analysis.intensities,
            backend=self.name,
            model_version=self.model_version,
            presence=analysis.presence,
            pose=params_pose(analysis.params),
        )

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
