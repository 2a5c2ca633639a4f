"""``mesh`` back end, the offline default: in-wheel MediaPipe face mesh -> our numpy AU head.

The face crop is put on the shared canvas (``engine.aus.canvas``), MediaPipe's face mesh
(shipped inside the ``mediapipe`` wheel) gives 478 3-D landmarks, these are Procrustes-aligned
to a mean shape (translation, scale and rotation removed) and a small MLP
(``engine/weights/mesh_au_head.npz``, numpy inference) predicts the Face Landmarker
blendshapes that ``data/blendshape_to_au.csv`` maps to AUs. The head is distilled from the
``blendshapes`` back end by ``scripts/train_mesh_head.py``; see ``MESH_AU_HEAD.md``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import mediapipe as mp
import numpy as np

from engine.aus import ESTIMATORS, AUEstimator
from engine.aus.blendshape_map import blendshapes_to_reading, table_version
from engine.aus.blendshapes import matrix_pose
from engine.aus.canvas import canvas_to_crop, first_found
from engine.types import AUReading, Face, FaceRecord, Pose

N_LANDMARKS = 478
WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "weights" / "mesh_au_head.npz"
#: From image axes (x right, y down, z away from the camera) to x right, y up, z towards it.
_IMAGE_TO_FACE = np.diag([1.0, -1.0, -1.0])


def open_face_mesh():
    """A still-image, single-face MediaPipe face mesh with iris refinement (478 points)."""
    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=1
    )


def run_face_mesh(face_mesh, canvas: np.ndarray) -> np.ndarray | None:
    """478 x 3 landmarks in canvas pixels (z on the x scale); None when no face is found."""
    result = face_mesh.process(np.ascontiguousarray(canvas))
    if not result.multi_face_landmarks:
        return None
    points = result.multi_face_landmarks[0].landmark
    height, width = canvas.shape[:2]
    xyz = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float64)
    return xyz * np.array([width, height, width], dtype=np.float64)


def normalise_shape(points: np.ndarray) -> np.ndarray:
    """Centre landmarks on their centroid and scale them to unit RMS distance."""
    centred = points - points.mean(axis=-2, keepdims=True)
    rms = np.sqrt((centred**2).sum(axis=(-2, -1), keepdims=True) / points.shape[-2])
    return centred / np.maximum(rms, 1e-12)


def align(points: np.ndarray, mean_shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Procrustes-align (n, 478, 3) or (478, 3) landmarks to ``mean_shape``.

    Returns the aligned, normalised shapes and the rotations ``R`` with ``aligned = x @ R.T``.
    """
    x = normalise_shape(points)
    h = np.swapaxes(x, -1, -2) @ mean_shape
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
    fix = np.ones(u.shape[:-2] + (3,))
    fix[..., 2] = d
    rotation = np.swapaxes(vt, -1, -2) @ (fix[..., :, None] * np.swapaxes(u, -1, -2))
    return x @ np.swapaxes(rotation, -1, -2), rotation


def rotation_pose(rotation: np.ndarray) -> Pose:
    """Rough head pose of a face from its alignment rotation (face -> mean-shape frame).

    The mean shape is about frontal, so the face's rotation is ``rotation.T``; it is expressed
    in the Face Landmarker's frame and decomposed as in ``engine.aus.blendshapes.matrix_pose``.
    """
    return matrix_pose(_IMAGE_TO_FACE @ rotation.T @ _IMAGE_TO_FACE)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def mirror_landmarks(points: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Landmarks of the horizontally mirrored face: x negated, left/right points swapped."""
    return (points * np.array([-1.0, 1.0, 1.0]))[..., pairs, :]


@dataclass(frozen=True)
class MeshAUHead:
    """Aligned landmarks -> blendshape scores: whitening projection then a ReLU MLP.

    Predictions average the face and its mirror image (with left/right outputs swapped back).
    """

    mean_shape: np.ndarray  # (478, 3), centred, unit RMS
    landmark_pairs: np.ndarray  # (478,) index of each landmark's mirror partner
    feature_mean: np.ndarray  # (1434,)
    projection: np.ndarray  # (1434, p), PCA with whitening
    weights: tuple[np.ndarray, ...]  # W0, W1, ...: ReLU layers, the last one linear + sigmoid
    biases: tuple[np.ndarray, ...]
    outputs: tuple[str, ...]  # blendshape names
    output_pairs: np.ndarray  # index of each output's mirror partner (itself if unsided)
    version: str

    @classmethod
    def load(cls, path: Path = WEIGHTS_PATH) -> MeshAUHead:
        """Read a head written by ``scripts/train_mesh_head.py``."""
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"mesh AU head weights {path} are missing; run scripts/train_mesh_head.py"
            )
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        with np.load(path, allow_pickle=False) as data:
            layers = int(data["n_layers"])
            return cls(
                mean_shape=data["mean_shape"].astype(np.float64),
                landmark_pairs=data["landmark_pairs"].astype(np.intp),
                feature_mean=data["feature_mean"].astype(np.float64),
                projection=data["projection"].astype(np.float64),
                weights=tuple(data[f"W{i}"].astype(np.float64) for i in range(layers)),
                biases=tuple(data[f"b{i}"].astype(np.float64) for i in range(layers)),
                outputs=tuple(str(name) for name in data["outputs"]),
                output_pairs=data["output_pairs"].astype(np.intp),
                version=f"{data['version']}-sha256:{digest}",
            )

    def features(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Aligned-shape features, (n, 1434) or (1434,), and the alignment rotations."""
        aligned, rotation = align(points, self.mean_shape)
        flat = (aligned - self.mean_shape).reshape(*aligned.shape[:-2], -1)
        return flat, rotation

    def forward(self, features: np.ndarray) -> np.ndarray:
        """Blendshape scores in [0, 1] from ``features`` (no mirror averaging)."""
        h = (features - self.feature_mean) @ self.projection
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = np.maximum(h @ w + b, 0.0)
        return _sigmoid(h @ self.weights[-1] + self.biases[-1])

    def predict(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Blendshape scores of (n, 478, 3) or (478, 3) landmarks and their alignment rotations."""
        features, rotation = self.features(points)
        mirrored, _ = self.features(mirror_landmarks(points, self.landmark_pairs))
        scores = 0.5 * (self.forward(features) + self.forward(mirrored)[..., self.output_pairs])
        return scores, rotation


@ESTIMATORS.register()
class MeshEstimator(AUEstimator):
    """AUs from the in-wheel face mesh and the distilled numpy head (no download needed)."""

    name = "mesh"

    def __init__(self, weights_path: str | Path | None = None):
        self._head = MeshAUHead.load(Path(weights_path) if weights_path else WEIGHTS_PATH)
        self._face_mesh = open_face_mesh()
        self.model_version = f"{self._head.version}+table:{table_version()}"

    def locate(self, face: Face | None, record: FaceRecord) -> np.ndarray:
        """The face's 478 mesh points (x, y, z) in the crop's pixels; StageError if none."""
        points, side = first_found(
            face,
            record,
            lambda canvas: run_face_mesh(self._face_mesh, canvas),
            "MediaPipe face mesh",
        )
        return canvas_to_crop(points, face.crop.shape, side)

    def read(self, points: np.ndarray) -> AUReading:
        """The AU reading of located mesh points (any similarity frame: the head aligns them)."""
        scores, rotation = self._head.predict(points)
        intensities, sides = blendshapes_to_reading(
            dict(zip(self._head.outputs, scores.tolist(), strict=True))
        )
        return AUReading(
            intensities=intensities,
            backend=self.name,
            model_version=self.model_version,
            sides=sides,
            pose=rotation_pose(rotation),
        )

    def estimate(self, face: Face | None, record: FaceRecord) -> AUReading:
        return self.read(self.locate(face, record))

    def close(self) -> None:
        self._face_mesh.close()
