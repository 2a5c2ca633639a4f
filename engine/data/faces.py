"""Find the face of a record's image: the whole image, the dataset's box, or a detector.

The detector is OpenCV's frontal-face Haar cascade (shipped in ``opencv-contrib-python`` under
``cv2.data.haarcascades``). Small images are upscaled and every image is padded by replicating
its border before detection, so that tight 48x48 crops work; the largest face is kept and grown
by a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from engine.data.datasets import is_aligned_kind
from engine.registry import check_choice
from engine.types import Face, FaceRecord, StageError

MODES: tuple[str, ...] = ("auto", "aligned", "dataset", "detector")
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
DETECTOR_NAME = "opencv-haar"


@dataclass(frozen=True)
class FaceFinder:
    """How faces are found.

    ``mode``: ``aligned`` takes the whole image, ``dataset`` the record's box (clipped to the
    image), ``detector`` the Haar cascade; ``auto`` picks the dataset box when the record has
    one, else ``aligned`` for kinds of face crops (ferplus, fer2013, rafdb, ckplus) and for
    images no larger than ``crop_max_side`` on both sides (a tight crop leaves a detector
    nothing to find), else the detector. An image of a kind of face crops larger than
    ``aligned_max_side`` on a side (a full frame given as a crop, e.g. CK+'s 640x490 photos)
    is searched with the detector in ``auto`` mode, and taken whole where it finds no face.
    ``margin`` grows a detected box by that fraction of its side on every side.
    For detection, images whose shorter side is below ``min_detect_side`` pixels are upscaled
    by an integer factor, then padded on every side by ``pad`` times the shorter side.
    """

    mode: str = "auto"
    margin: float = 0.2
    min_detect_side: int = 160
    pad: float = 0.2
    scale_factor: float = 1.1
    min_neighbors: int = 4
    min_face_fraction: float = 0.1
    crop_max_side: int = 128
    aligned_max_side: int = 256

    def __post_init__(self) -> None:
        check_choice("face mode", self.mode, MODES)

    def find(self, image: np.ndarray, record: FaceRecord | None = None) -> Face:
        """The face of ``image`` (``H x W x 3`` RGB) of ``record``; StageError("faces") if none."""
        mode = self.resolve_mode(record)
        height, width = image.shape[:2]
        if self.mode == "auto" and mode == "detector" and max(height, width) <= self.crop_max_side:
            mode = "aligned"
        if self.mode == "auto" and mode == "aligned" and max(height, width) > self.aligned_max_side:
            try:
                return self._detect(image, record)
            except StageError:
                pass  # a large crop after all
        if mode == "aligned":
            return Face((0, 0, width, height), image, "aligned")
        if mode == "dataset":
            if record is None or record.box is None:
                raise StageError("faces", f"no dataset box for {_name(record)}")
            box = _clip(record.box, width, height)
            if box is None:
                raise StageError(
                    "faces",
                    f"dataset box {record.box} outside the {width}x{height} image"
                    f" of {_name(record)}",
                )
            return Face(box, _crop(image, box), "dataset")
        return self._detect(image, record)

    def resolve_mode(self, record: FaceRecord | None) -> str:
        """The concrete mode used for ``record`` (resolves ``auto``)."""
        if self.mode != "auto":
            return self.mode
        if record is not None and record.box is not None:
            return "dataset"
        if record is not None and is_aligned_kind(record.dataset):
            return "aligned"
        return "detector"

    def _detect(self, image: np.ndarray, record: FaceRecord | None) -> Face:
        height, width = image.shape[:2]
        scale = max(1, math.ceil(self.min_detect_side / min(height, width)))
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale > 1:
            grey = cv2.resize(grey, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)
        min_size = max(24, int(self.min_face_fraction * min(grey.shape)))
        pad = int(self.pad * min(grey.shape))
        grey = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        grey = cv2.equalizeHist(grey)
        boxes, _, weights = _cascade().detectMultiScale3(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size),
            outputRejectLevels=True,
        )
        found = []
        for (x, y, w, h), weight in zip(boxes, np.ravel(weights), strict=True):
            grow_x, grow_y = w * self.margin, h * self.margin
            grown = (x - grow_x - pad, y - grow_y - pad, w + 2 * grow_x, h + 2 * grow_y)
            box = _clip(tuple(round(v / scale) for v in grown), width, height)
            if box is not None:  # detections in the padding only are dropped
                found.append((box[2] * box[3], float(weight), box))
        if not found:
            raise StageError(
                "faces",
                f"no face detected by {DETECTOR_NAME} in the {width}x{height} image"
                f" of {_name(record)}",
            )
        _, score, box = max(found)
        return Face(box, _crop(image, box), DETECTOR_NAME, score)


@cache
def _cascade() -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / HAAR_CASCADE
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FileNotFoundError(f"OpenCV Haar cascade {path} missing or unreadable")
    return cascade


def _clip(
    box: tuple[int, int, int, int], width: int, height: int
) -> tuple[int, int, int, int] | None:
    """``box`` (x, y, w, h) clipped to the image; None when nothing is left."""
    x, y, w, h = box
    left, top = max(0, x), max(0, y)
    right, bottom = min(width, x + w), min(height, y + h)
    if right <= left or bottom <= top:
        return None
    return left, top, right - left, bottom - top


def _crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return np.ascontiguousarray(image[y : y + h, x : x + w])


def _name(record: FaceRecord | None) -> str:
    return record.record_id if record is not None else "the image"
