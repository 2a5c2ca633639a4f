"""Face finding: aligned, dataset box, the Haar detector on FER+ crops and synthetic photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.data.faces import DETECTOR_NAME, FaceFinder
from engine.data.images import load_image
from engine.types import FaceRecord, StageError


def _record(kind: str = "folder", box: tuple[int, int, int, int] | None = None) -> FaceRecord:
    return FaceRecord(
        f"{kind}/unsplit/a.png", kind, "unsplit", Path("/nowhere"), "a.png", "neutral", box=box
    )


@pytest.fixture(scope="module")
def fer_faces(ferplus_dir: Path) -> list[np.ndarray]:
    """The first 40 FER+ test crops (48x48), in file order."""
    return [load_image(p) for p in sorted((ferplus_dir / "FER2013Test").glob("*.png"))[:40]]


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_aligned_is_whole_image() -> None:
    image = np.zeros((30, 40, 3), np.uint8)
    face = FaceFinder(mode="aligned").find(image)
    assert face.box == (0, 0, 40, 30) and face.crop is image and face.source == "aligned"


def test_dataset_box_clipped() -> None:
    image = np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3)
    face = FaceFinder(mode="dataset").find(image, _record(box=(-10, 20, 50, 100)))
    assert face.box == (0, 20, 40, 40) and face.source == "dataset"
    assert np.array_equal(face.crop, image[20:60, 0:40])


def test_dataset_box_problems() -> None:
    image = np.zeros((60, 80, 3), np.uint8)
    with pytest.raises(StageError, match=r"dataset box \(100, 0, 10, 10\) outside the 80x60 image"):
        FaceFinder(mode="dataset").find(image, _record(box=(100, 0, 10, 10)))
    with pytest.raises(StageError, match="no dataset box for folder/unsplit/a.png"):
        FaceFinder(mode="dataset").find(image, _record())


def test_auto_mode() -> None:
    finder = FaceFinder()
    assert finder.resolve_mode(_record("affectnet", box=(0, 0, 5, 5))) == "dataset"
    assert finder.resolve_mode(_record("ferplus", box=(0, 0, 5, 5))) == "dataset"
    for kind in ("ferplus", "fer2013", "rafdb", "ckplus"):
        assert finder.resolve_mode(_record(kind)) == "aligned"
    assert finder.resolve_mode(_record("folder")) == "detector"
    assert finder.resolve_mode(_record("affectnet")) == "detector"
    assert finder.resolve_mode(None) == "detector"
    assert FaceFinder(mode="aligned").resolve_mode(_record("folder")) == "aligned"


def test_auto_takes_small_images_of_unknown_kinds_as_crops() -> None:
    small = np.zeros((48, 48, 3), np.uint8)
    face = FaceFinder().find(small, _record("folder"))
    assert face.source == "aligned" and face.box == (0, 0, 48, 48)
    with pytest.raises(StageError):
        FaceFinder(mode="detector").find(small, _record("folder"))


def test_auto_searches_large_images_of_crop_kinds(fer_faces: list[np.ndarray]) -> None:
    """A kind of face crops given full frames (CK+'s photos): auto mode looks for the face in
    images larger than ``aligned_max_side`` and takes a faceless one whole, as a crop."""
    rng = np.random.default_rng(0)
    canvas = cv2.GaussianBlur(rng.integers(60, 200, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    canvas[150:342, 300:492] = cv2.resize(fer_faces[0], (192, 192), interpolation=cv2.INTER_CUBIC)
    face = FaceFinder().find(canvas, _record("ckplus"))
    assert face.source == DETECTOR_NAME and _iou(face.box, (300, 150, 192, 192)) > 0.4
    blank = np.full((480, 640, 3), 128, np.uint8)
    assert FaceFinder().find(blank, _record("ckplus")).source == "aligned"
    small = cv2.resize(fer_faces[0], (256, 256), interpolation=cv2.INTER_CUBIC)
    assert FaceFinder().find(small, _record("ckplus")).box == (0, 0, 256, 256)
    assert FaceFinder(mode="aligned").find(canvas, _record("ckplus")).source == "aligned"


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown face mode 'mtcnn'"):
        FaceFinder(mode="mtcnn")


def test_detector_on_fer_crops(fer_faces: list[np.ndarray]) -> None:
    finder = FaceFinder(mode="detector")
    face = finder.find(fer_faces[0])  # fer0032220.png, a frontal face
    x, y, w, h = face.box
    assert face.source == DETECTOR_NAME and face.score > 0
    assert w >= 32 and h >= 32 and x + w <= 48 and y + h <= 48
    assert face.crop.shape == (h, w, 3)
    found = 0
    for image in fer_faces:
        try:
            finder.find(image)
            found += 1
        except StageError:
            pass
    assert found >= 0.55 * len(fer_faces)  # 26 of 40 at the defaults


@pytest.mark.parametrize("seed", [0, 1])
def test_detector_in_synthetic_photo(fer_faces: list[np.ndarray], seed: int) -> None:
    rng = np.random.default_rng(seed)
    canvas = cv2.GaussianBlur(rng.integers(60, 200, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    pasted = (300, 150, 192, 192)
    canvas[150:342, 300:492] = cv2.resize(fer_faces[0], (192, 192), interpolation=cv2.INTER_CUBIC)
    face = FaceFinder(mode="detector").find(canvas, _record("folder"))
    x, y, w, h = face.box
    assert x <= 396 <= x + w and y <= 246 <= y + h  # holds the pasted face's centre
    assert _iou(face.box, pasted) > 0.4
    assert face.crop.shape == (h, w, 3)


@pytest.mark.parametrize("fill", ["blank", "noise"])
def test_detector_rejects_faceless(fill: str) -> None:
    rng = np.random.default_rng(0)
    image = (
        np.full((240, 320, 3), 128, np.uint8)
        if fill == "blank"
        else rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    )
    with pytest.raises(StageError) as caught:
        FaceFinder().find(image, _record("folder"))
    assert caught.value.stage == "faces"
    assert str(caught.value) == (
        f"no face detected by {DETECTOR_NAME} in the 320x240 image of folder/unsplit/a.png"
    )
