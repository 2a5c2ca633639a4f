"""68 iBUG landmarks of a face, from dlib's shape predictor or from MediaPipe's face mesh.

Both sources are called as ``source(image, box)``: ``image`` is a uint8 grey (H, W) or RGB
(H, W, 3) array, ``box`` the face box (x, y, w, h) in it, or None for an image that is the face
crop. They return (68, 2) float64 points in the image's pixels (pixel centres at integer
coordinates, as in OpenCV and dlib), in the iBUG-68 order (0-16 jaw, 17-26 brows, 27-35 nose,
36-47 eyes, 48-67 mouth; 0 and 36 on the image's left), or None when no face is found.

* ``DlibLandmarks``: the crop is resized to ``face_side`` pixels (bicubic; 4x for 48-pixel
  FER+ crops) and padded, dlib's frontal face detector gives the box that the iBUG predictor was
  trained on, and the best detection scoring at least ``min_score`` (below dlib's default of 0)
  is kept. On FER+ detector boxes give better points than a fixed box derived from the crop
  (``fixed_box``; compared by ``benchmarks/landmarks68.py --boxes``).
* ``MeshLandmarks``: the 478 points of ``engine.aus.mesh`` mapped to iBUG-68 by the sparse
  non-negative vertex weights of ``data/mesh_to_ibug68.csv``, fitted with dlib as the teacher
  by ``scripts/fit_mesh_to_ibug68.py``; ``ibug68_from_mesh`` maps mesh points already computed.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Protocol

import cv2
import numpy as np

from engine.aus.canvas import canvas_to_crop, find_on_canvases, to_rgb
from engine.aus.mesh import N_LANDMARKS, open_face_mesh, run_face_mesh
from engine.resources import data_file

N_IBUG = 68
MAPPING_FILE = "mesh_to_ibug68.csv"
#: iBUG-68 index ranges of the face regions.
REGIONS: dict[str, range] = {
    "jaw": range(0, 17),
    "brows": range(17, 27),
    "nose": range(27, 36),
    "eyes": range(36, 48),
    "mouth": range(48, 68),
}
#: Outer eye corners, whose distance normalises landmark errors.
OUTER_EYE_CORNERS = (36, 45)

Box = tuple[int, int, int, int]
#: dlib's frontal-detector box around a face, relative to the bounding box of its 68 points:
#: (left, top, right, bottom) offsets from the points' centre in shares of their width and
#: height. Medians over 1,360 FER+ Train faces (seed 1) with both a detection and a mesh.
BOX_FROM_POINTS = (-0.507, -0.618, 0.527, 0.480)


class LandmarkSource(Protocol):
    """A 68-point landmark finder."""

    name: ClassVar[str]

    def __call__(self, image: np.ndarray, box: Box | None = None) -> np.ndarray | None: ...


def face_crop(image: np.ndarray, box: Box | None) -> tuple[np.ndarray, np.ndarray]:
    """The crop of ``box`` (clipped to the image; the whole image for None) and its origin."""
    height, width = image.shape[:2]
    if box is None:
        return image, np.zeros(2)
    x, y, w, h = box
    left, top = max(0, x), max(0, y)
    right, bottom = min(width, x + w), min(height, y + h)
    if right <= left or bottom <= top:
        raise ValueError(f"face box {box} is outside the {width}x{height} image")
    return image[top:bottom, left:right], np.array([left, top], dtype=np.float64)


def resized_points(points: np.ndarray, from_shape: tuple, to_shape: tuple) -> np.ndarray:
    """Points of an image of ``from_shape`` (pixel centres at integers) -> the same points in
    its resized copy of ``to_shape``."""
    factors = np.array([to_shape[1] / from_shape[1], to_shape[0] / from_shape[0]])
    return (points + 0.5) * factors - 0.5


def normalised_error(points: np.ndarray, reference: np.ndarray, indices=None) -> float:
    """Mean distance of ``points`` to ``reference`` over ``indices`` (default all), divided by
    the reference's outer-eye-corner distance."""
    chosen = slice(None) if indices is None else list(indices)
    distance = np.linalg.norm(points[chosen] - reference[chosen], axis=-1).mean()
    left, right = OUTER_EYE_CORNERS
    return float(distance / np.linalg.norm(reference[right] - reference[left]))


def _to_grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.ascontiguousarray(image, dtype=np.uint8)
    return cv2.cvtColor(to_rgb(image), cv2.COLOR_RGB2GRAY)


def _import_dlib() -> tuple[Any, Path]:
    """dlib and the path of ``face_recognition_models``' 68-point predictor, found without
    importing that package (its ``__init__`` needs ``pkg_resources``, gone from setuptools 82)."""
    hint = "pip install 'expllm[openface]' (dlib-bin and face-recognition-models)"
    try:
        import dlib
    except ImportError as error:
        raise ImportError(f"the dlib landmark source needs {error.name!r}: {hint}") from error
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the dlib landmark source needs 'face_recognition_models': {hint}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return dlib, folder / "models" / "shape_predictor_68_face_landmarks.dat"


@dataclass
class DlibLandmarks:
    """dlib's 68-point iBUG shape predictor, on boxes from dlib's frontal face detector.

    ``model_path``: the predictor (default: ``face_recognition_models``' copy); ``face_side``:
    the crop's longer side for detection and prediction; ``pad``: replicated border added for
    the detector, as a fraction of ``face_side`` (tight crops are missed without it);
    ``min_score``: the lowest detection score kept (dlib's default threshold is 0);
    ``fixed_box``: when set, the predictor's box as fractions (left, top, right, bottom) of the
    crop, instead of the detector's (faster, less accurate, and never None).
    """

    name: ClassVar[str] = "dlib"

    model_path: str | Path | None = None
    face_side: int = 192
    pad: float = 0.1
    min_score: float = -0.5
    fixed_box: tuple[float, float, float, float] | None = None
    _dlib: Any = field(init=False, repr=False)
    _detector: Any = field(init=False, repr=False)
    _predictor: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._dlib, predictor = _import_dlib()
        path = Path(self.model_path or predictor)
        if not path.is_file():
            raise FileNotFoundError(f"dlib shape predictor {path} is missing")
        self._detector = self._dlib.get_frontal_face_detector()
        self._predictor = self._dlib.shape_predictor(str(path))

    def __call__(self, image: np.ndarray, box: Box | None = None) -> np.ndarray | None:
        found = self.detect(image, box)
        return None if found is None else found[0]

    def refine(self, image: np.ndarray, hint: np.ndarray) -> np.ndarray:
        """dlib's 68 points on the box its detector would give a face whose 68 points are about
        ``hint`` (e.g. from the face mesh): no detector run, never None. ``image`` is used at
        its own size, so small crops should be upscaled first."""
        (x0, y0), (x1, y1) = hint.min(axis=0), hint.max(axis=0)
        centre, size = (
            np.array([x0 + x1, y0 + y1, x0 + x1, y0 + y1]) / 2,
            np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0]),
        )
        left, top, right, bottom = np.round(centre + np.array(BOX_FROM_POINTS) * size).astype(int)
        shape = self._predictor(_to_grey(image), self._dlib.rectangle(left, top, right, bottom))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def detect(self, image: np.ndarray, box: Box | None = None) -> tuple[np.ndarray, float] | None:
        """The 68 points and the detector's score (inf for ``fixed_box``), or None."""
        crop, origin = face_crop(image, box)
        height, width = crop.shape[:2]
        scale = self.face_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        grey = cv2.resize(_to_grey(crop), size, interpolation=cv2.INTER_CUBIC)
        if self.fixed_box is not None:
            left, top, right, bottom = np.multiply(self.fixed_box, size * 2).round().astype(int)
            rect, score = self._dlib.rectangle(left, top, right - 1, bottom - 1), np.inf
        else:
            pad = round(self.pad * self.face_side)
            padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            rects, scores, _ = self._detector.run(padded, 0, self.min_score)
            if not rects:
                return None
            best = int(np.argmax(scores))
            rect = self._dlib.translate_rect(rects[best], self._dlib.point(-pad, -pad))
            score = float(scores[best])
        shape = self._predictor(grey, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return resized_points(points, grey.shape, crop.shape) + origin, score


@cache
def mesh_mapping() -> np.ndarray:
    """The (68, 478) weights of ``data/mesh_to_ibug68.csv`` (columns ibug, vertex, weight)."""
    weights = np.zeros((N_IBUG, N_LANDMARKS))
    path = data_file(MAPPING_FILE)
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            weights[int(row["ibug"]), int(row["vertex"])] += float(row["weight"])
    if not np.allclose(weights.sum(axis=1), 1.0, atol=1e-3) or (weights < 0).any():
        raise ValueError(f"{path}: each iBUG point needs weights >= 0 summing to 1")
    return weights


def ibug68_from_mesh(points478: np.ndarray) -> np.ndarray:
    """The (68, 2) iBUG points of (478, 2 or 3) face-mesh points, in the same pixel frame."""
    return mesh_mapping() @ np.asarray(points478, dtype=np.float64)[:, :2]


def mesh_points(face_mesh, image: np.ndarray, box: Box | None = None) -> np.ndarray | None:
    """The 478 points (x, y) in image pixels of ``engine.aus.mesh.open_face_mesh``'s mesh, from
    the first canvas of the crop where it finds a face; None when it finds none."""
    crop, origin = face_crop(image, box)
    found = find_on_canvases(crop, lambda canvas: run_face_mesh(face_mesh, canvas))
    if found is None:
        return None
    points, side = found
    return canvas_to_crop(points, crop.shape, side)[:, :2] + origin


class MeshLandmarks:
    """iBUG-68 points from MediaPipe's 478-point face mesh through ``data/mesh_to_ibug68.csv``."""

    name: ClassVar[str] = "mesh"

    def __init__(self) -> None:
        mesh_mapping()  # fail early on a missing or malformed table
        self._face_mesh = open_face_mesh()

    def __call__(self, image: np.ndarray, box: Box | None = None) -> np.ndarray | None:
        points = mesh_points(self._face_mesh, image, box)
        return None if points is None else ibug68_from_mesh(points)

    def close(self) -> None:
        self._face_mesh.close()
