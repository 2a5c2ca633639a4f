"""Preprocessing shared by the MediaPipe back ends: any face crop -> a fixed RGB canvas.

MediaPipe's detectors miss faces that fill the whole frame (such as 48x48 FER+ crops), so the
crop is resized to ``FACE_SIDE`` pixels on its longer side and centred on a black
``CANVAS_SIDE`` square. The same geometry is used for training and inference.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from engine.types import Face, FaceRecord, StageError

T = TypeVar("T")

FACE_SIDE = 160
CANVAS_SIDE = 256
#: Face sizes tried, in order, when MediaPipe finds no face at ``FACE_SIDE``; then the same
#: sizes again on a contrast-equalised (CLAHE) copy, which recovers some dim or flat faces.
RETRY_FACE_SIDES = (208, 120, 240)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Grey (H x W or H x W x 1), RGB or RGBA uint8 -> H x W x 3 uint8 RGB."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected a grey, RGB or RGBA image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)


def to_canvas(crop: np.ndarray, face_side: int = FACE_SIDE) -> np.ndarray:
    """Resize ``crop`` to ``face_side`` on its longer side and centre it on a black canvas."""
    rgb = to_rgb(crop)
    height, width = rgb.shape[:2]
    scale = face_side / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_LINEAR if scale >= 1 else cv2.INTER_AREA
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((CANVAS_SIDE, CANVAS_SIDE, 3), dtype=np.uint8)
    top, left = (CANVAS_SIDE - new_h) // 2, (CANVAS_SIDE - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def canvases(crop: np.ndarray):
    """``(face_side, canvas)`` tried in turn until MediaPipe finds a face: sizes, then the same
    sizes contrast-equalised."""
    sides = (FACE_SIDE, *RETRY_FACE_SIDES)
    for side in sides:
        yield side, to_canvas(crop, side)
    grey = cv2.cvtColor(to_rgb(crop), cv2.COLOR_RGB2GRAY)
    equalised = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(grey)
    for side in sides:
        yield side, to_canvas(equalised, side)


def canvas_to_crop(points: np.ndarray, crop_shape: tuple[int, ...], face_side: int) -> np.ndarray:
    """Points (n, 2 or 3; MediaPipe's x, y and z on the x scale) on ``to_canvas(crop,
    face_side)`` -> the crop's pixels (pixel centres at integers, as in OpenCV and dlib; z on
    the same scale as x)."""
    height, width = crop_shape[:2]
    scale = face_side / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    offset = np.array([(CANVAS_SIDE - new_w) // 2, (CANVAS_SIDE - new_h) // 2])
    out = np.array(points, dtype=np.float64)
    out[:, :2] = (out[:, :2] - offset) * np.array([width / new_w, height / new_h]) - 0.5
    if out.shape[1] > 2:
        out[:, 2] *= width / new_w
    return out


def find_on_canvases(
    crop: np.ndarray, find: Callable[[np.ndarray], T | None]
) -> tuple[T, int] | None:
    """The first result of ``find`` over ``canvases(crop)`` and its canvas's face side; None
    when no canvas gives one."""
    for side, canvas in canvases(crop):
        found = find(canvas)
        if found is not None:
            return found, side
    return None


def first_found(
    face: Face | None, record: FaceRecord, find: Callable[[np.ndarray], T | None], model: str
) -> tuple[T, int]:
    """``find_on_canvases`` of the face's crop; StageError("aus") when ``record`` has no face
    crop or ``model`` finds no face in it."""
    if face is None:
        raise StageError("aus", f"no face crop for {record.record_id}")
    found = find_on_canvases(face.crop, find)
    if found is None:
        raise StageError(
            "aus",
            f"no face found by {model} in {record.relpath} (tried {len(RETRY_FACE_SIDES) + 1} "
            "sizes, plain and contrast-equalised)",
        )
    return found


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8; raises FileNotFoundError naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}: missing or not a supported image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
