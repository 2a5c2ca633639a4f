"""OpenFace 2.2's static AU models applied to one face: landmarks -> PDM fit -> aligned face ->
FHOG + geometry features -> linear SVR intensities and SVM presence.

The models are read from a folder holding OpenFace's ``AU_predictors`` files (``AU_all_static.txt``,
``svr_combined/``, ``svm_combined/``, ``In-the-wild_aligned_PDM_68.txt``, ``tris_68_full.txt``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from engine.aus.openface.align import align_face
from engine.aus.openface.fhog import fhog
from engine.aus.openface.files import (
    LinearPredictor,
    ModelFileError,
    read_model_list,
    read_pdm,
    read_predictor,
    read_triangulation,
)
from engine.aus.openface.pdm import PDM, PDMParams

MODEL_LIST = "AU_all_static.txt"
PDM_FILE = "In-the-wild_aligned_PDM_68.txt"
TRIANGULATION_FILE = "tris_68_full.txt"
#: FHOG cell size in pixels (12 x 12 cells of 31 values on the 112-pixel face).
CELL_SIZE = 8
INTENSITY_RANGE = (0.0, 5.0)
#: Each iBUG-68 point's mirror partner (left <-> right).
MIRROR_ORDER = (*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
                45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51, 50, 49, 48,
                59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65)  # fmt: skip


@dataclass(frozen=True, eq=False)
class LinearBank:
    """Several linear predictors of one kind stacked for a single matrix product."""

    aus: tuple[str, ...]
    means: np.ndarray  # (k, D)
    weights: np.ndarray  # (k, D)
    biases: np.ndarray  # (k,)
    positive: np.ndarray  # (k,) SVM class of a positive score (1.0 = present)

    @classmethod
    def stack(cls, predictors: list[LinearPredictor]) -> LinearBank:
        return cls(
            aus=tuple(p.au for p in predictors),
            means=np.stack([p.means for p in predictors]),
            weights=np.stack([p.weights for p in predictors]),
            biases=np.array([p.bias for p in predictors]),
            positive=np.array([p.classes[0] if p.classes else 1.0 for p in predictors]),
        )

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Raw linear scores ``(x - means) . w + b`` per predictor."""
        return self.weights @ features + self._offsets

    @cached_property
    def _offsets(self) -> np.ndarray:
        """``b - means . w``, so that a score is one matrix-vector product."""
        return self.biases - np.einsum("kd,kd->k", self.means, self.weights)


@dataclass(frozen=True)
class FaceAnalysis:
    """OpenFace's reading of one face."""

    intensities: dict[str, float]  # AU -> 0-5 (static SVRs)
    presence: dict[str, bool]  # AU -> present (static SVMs)
    params: PDMParams
    aligned: np.ndarray  # the masked 112 x 112 face the features came from


@dataclass(frozen=True)
class OpenFaceModel:
    """The static AU models, PDM and triangulation of one model folder."""

    folder: Path
    pdm: PDM
    triangles: np.ndarray
    intensity: LinearBank
    presence: LinearBank
    version: str

    @classmethod
    def load(cls, folder: Path) -> OpenFaceModel:
        """Read every file the static pipeline needs from ``folder``; ModelFileError if unfit."""
        folder = Path(folder)
        pdm = PDM.from_file(read_pdm(folder / PDM_FILE))
        triangles = read_triangulation(folder / TRIANGULATION_FILE, pdm.n_points)
        entries = read_model_list(folder / MODEL_LIST)
        predictors = [read_predictor(path, au) for path, au in entries]
        size = 31 * 12 * 12 + pdm.n_points * 3 + pdm.n_modes
        for predictor in predictors:
            if predictor.dynamic or predictor.means.size != size:
                raise ModelFileError(
                    f"{folder / MODEL_LIST}: {predictor.au} {predictor.kind} model is not a static "
                    f"model over {size} features"
                )
        digest = hashlib.sha256()
        for name in (MODEL_LIST, PDM_FILE, TRIANGULATION_FILE):
            digest.update((folder / name).read_bytes())
        for path, _ in entries:
            digest.update(path.read_bytes())
        return cls(
            folder=folder,
            pdm=pdm,
            triangles=triangles,
            intensity=LinearBank.stack([p for p in predictors if p.kind == "intensity"]),
            presence=LinearBank.stack([p for p in predictors if p.kind == "presence"]),
            version=f"openface-2.2-static-sha256:{digest.hexdigest()[:12]}",
        )

    def features(
        self, image: np.ndarray, landmarks: np.ndarray
    ) -> tuple[np.ndarray, PDMParams, np.ndarray]:
        """The 4702 features (FHOG, PDM deformation, local parameters), the fit and the face.

        ``image`` is RGB (or gray) uint8; ``landmarks`` are its 68 iBUG points in pixels.
        """
        params = self.pdm.fit(landmarks)
        aligned = align_face(image, landmarks, params, self.pdm, self.triangles)
        return self._vector(aligned, params.local), params, aligned

    def _vector(self, aligned: np.ndarray, local: np.ndarray) -> np.ndarray:
        bgr = aligned[:, :, ::-1] if aligned.ndim == 3 else aligned  # OpenFace's channel order
        hog = fhog(np.ascontiguousarray(bgr), CELL_SIZE).reshape(-1).astype(np.float64)
        return np.concatenate([hog, self.pdm.deformation(local), local])

    def mirrored_local(self, local: np.ndarray) -> np.ndarray:
        """Local parameters of the mirror image of shape ``local`` (x negated, left and right
        points swapped), projected onto the PDM's orthonormal modes."""
        shape = self.pdm.shape3d(local)[list(MIRROR_ORDER)] * [-1.0, 1.0, 1.0]
        return np.einsum("njm,nj->m", self.pdm.components, shape - self.pdm.mean)

    def analyse(
        self, image: np.ndarray, landmarks: np.ndarray, mirror: bool = True
    ) -> FaceAnalysis:
        """AU intensities and presence of the face with 68 ``landmarks`` in ``image``.

        With ``mirror`` the linear scores of the face and of its mirror image (the aligned face
        flipped, the fitted shape reflected) are averaged: the models treat both sides alike,
        and the two views' errors from alignment and features partly cancel.
        """
        features, params, aligned = self.features(image, landmarks)
        intensity, presence = self.intensity.scores(features), self.presence.scores(features)
        if mirror:
            flipped = self._vector(aligned[:, ::-1], self.mirrored_local(params.local))
            intensity = (intensity + self.intensity.scores(flipped)) / 2
            presence = (presence + self.presence.scores(flipped)) / 2
        low, high = INTENSITY_RANGE
        present = np.where(presence > 0, self.presence.positive, 1.0 - self.presence.positive)
        return FaceAnalysis(
            intensities=dict(
                zip(self.intensity.aus, np.clip(intensity, low, high).tolist(), strict=True)
            ),
            presence={au: bool(v >= 0.5) for au, v in zip(self.presence.aus, present, strict=True)},
            params=params,
            aligned=aligned,
        )
