"""68-point iBUG landmarks (``engine.aus.openface.landmarks``): dlib and the mapped face mesh."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="mediapipe is not installed")

from engine.aus.openface.landmarks import (  # noqa: E402
    MAPPING_FILE,
    N_IBUG,
    DlibLandmarks,
    MeshLandmarks,
    face_crop,
    ibug68_from_mesh,
    mesh_mapping,
    normalised_error,
)
from engine.data.images import load_image  # noqa: E402
from engine.resources import data_file  # noqa: E402
from tests.mediapipe_faces import clear_faces  # noqa: E402


@pytest.fixture(scope="module")
def dlib_source() -> DlibLandmarks:
    for module in ("dlib", "face_recognition_models"):
        pytest.importorskip(module, reason=f"{module} missing: pip install 'expllm[openface]'")
    return DlibLandmarks()


@pytest.fixture(scope="module")
def mesh_source():
    source = MeshLandmarks()
    yield source
    source.close()


@pytest.fixture(params=["dlib", "mesh"])
def source(request):
    return request.getfixturevalue(f"{request.param}_source")


@pytest.fixture(scope="module")
def faces(ferplus_dir: Path) -> list[np.ndarray]:
    """Clear neutral and happy FER+ Test faces (48 x 48 RGB)."""
    records = clear_faces(ferplus_dir, 0, 3) + clear_faces(ferplus_dir, 1, 3)
    return [load_image(record) for record in records]


def test_mapping_table_has_68_points_with_weights_summing_to_one() -> None:
    with data_file(MAPPING_FILE).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["ibug", "vertex", "weight"]
    assert sorted({int(row["ibug"]) for row in rows}) == list(range(N_IBUG))
    weights = mesh_mapping()
    assert weights.shape == (N_IBUG, 478)
    assert weights.sum(axis=1) == pytest.approx(np.ones(N_IBUG), abs=1e-6)
    assert (weights >= 0).all()
    assert (np.count_nonzero(weights, axis=1) <= 8).all()  # sparse


def test_mesh_mapping_commutes_with_similarity_transforms() -> None:
    points = np.random.default_rng(0).normal(size=(478, 3)) * 20
    angle = np.radians(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 1.7 * points[:, :2] @ rotation.T + np.array([12.0, -5.0])
    mapped = ibug68_from_mesh(points)
    assert mapped.shape == (N_IBUG, 2)
    assert ibug68_from_mesh(moved) == pytest.approx(1.7 * mapped @ rotation.T + [12.0, -5.0])


def test_face_crop_clips_the_box_and_rejects_one_outside() -> None:
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    crop, origin = face_crop(image, (-5, 10, 20, 100))
    assert crop.shape == (30, 15, 3)
    assert origin.tolist() == [0.0, 10.0]
    assert face_crop(image, None)[0] is image
    with pytest.raises(ValueError, match="outside"):
        face_crop(image, (60, 0, 10, 10))


def test_normalised_error_divides_by_the_outer_eye_corner_distance() -> None:
    reference = np.zeros((N_IBUG, 2))
    reference[45] = [10.0, 0.0]
    shifted = reference + [0.0, 2.0]
    assert normalised_error(shifted, reference) == pytest.approx(0.2)
    assert normalised_error(shifted, reference, range(36, 48)) == pytest.approx(0.2)


def test_missing_dlib_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(ImportError, match=r"expllm\[openface\]"):
        DlibLandmarks()


def test_landmarks_are_in_ibug_order_on_clear_faces(source, faces) -> None:
    found = [source(face, None) for face in faces]
    assert sum(points is not None for points in found) >= len(faces) - 1
    for points in (p for p in found if p is not None):
        assert points.shape == (N_IBUG, 2) and points.dtype == np.float64
        assert ((points > -6) & (points < 54)).all()  # in the 48 px image, give or take
        eye_left, eye_right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
        mouth = points[48:68].mean(axis=0)
        assert max(eye_left[1], eye_right[1]) < points[30, 1] < mouth[1] < points[8, 1]
        assert points[36, 0] < points[39, 0] < points[42, 0] < points[45, 0]
        assert points[0, 0] < points[8, 0] < points[16, 0]
        assert points[48, 0] < points[54, 0]
        assert points[17:27, 1].mean() < min(eye_left[1], eye_right[1])


def test_blank_images_have_no_face(source) -> None:
    assert source(np.zeros((48, 48), dtype=np.uint8), None) is None
    assert source(np.full((64, 64, 3), 128, dtype=np.uint8), (0, 0, 64, 64)) is None


def test_points_follow_the_box_in_a_larger_grey_image(source, faces) -> None:
    face = faces[0]
    alone = source(face, None)
    assert alone is not None
    frame = np.zeros((100, 120), dtype=np.uint8)
    frame[30:78, 50:98] = face[:, :, 0]
    inside = source(frame, (50, 30, 48, 48))
    assert inside == pytest.approx(alone + [50.0, 30.0], abs=1e-6)


def test_fixed_box_needs_no_detection(dlib_source, faces) -> None:
    fixed = DlibLandmarks(fixed_box=(0.04, 0.08, 0.94, 0.98))
    points, score = fixed.detect(faces[0])
    assert points.shape == (N_IBUG, 2) and score == np.inf
    detected, _ = dlib_source.detect(faces[0])
    assert normalised_error(points, detected) < 0.15


def test_the_two_sources_agree_on_clear_faces(dlib_source, mesh_source, faces) -> None:
    errors = []
    for face in faces:
        dlib_points, mesh_points = dlib_source(face), mesh_source(face)
        if dlib_points is not None and mesh_points is not None:
            errors.append(normalised_error(mesh_points, dlib_points))
    assert len(errors) >= len(faces) - 1
    assert np.median(errors) < 0.08
    assert max(errors) < 0.25  # the worst: a face turned ~60 degrees (jaw outline)


def test_dlib_source_needs_no_pkg_resources(dlib_source):
    """face_recognition_models' __init__ imports pkg_resources (gone from setuptools 82); the
    predictor is found without importing it."""
    import subprocess

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pkg_resources':\n"
        "            raise ImportError('blocked', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.modules.pop('pkg_resources', None)\n"
        "from engine.aus.openface.landmarks import DlibLandmarks\n"
        "DlibLandmarks()\n"
        "assert 'face_recognition_models' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
