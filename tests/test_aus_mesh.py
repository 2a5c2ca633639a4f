"""``mesh`` back end: geometry helpers (pure numpy) and the estimator on FER+ faces."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.aus import create_estimator
from engine.aus.blendshape_map import mapped_aus
from engine.aus.mesh import (
    WEIGHTS_PATH,
    MeshAUHead,
    MeshEstimator,
    align,
    mirror_landmarks,
    normalise_shape,
    rotation_pose,
)
from engine.types import Face, FaceRecord, StageError
from tests.mediapipe_faces import (
    as_face,
    assert_mirroring_swaps_sides,
    clear_faces,
    mean_intensity,
)


def rotation_y(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


@pytest.fixture(scope="module")
def head() -> MeshAUHead:
    return MeshAUHead.load()


def test_weights_are_small_and_versioned(head: MeshAUHead) -> None:
    assert WEIGHTS_PATH.stat().st_size < 5 * 1024 * 1024
    assert head.version.startswith("mesh-au-head-") and "-sha256:" in head.version
    assert head.mean_shape.shape == (478, 3)
    assert set(head.outputs) and all(o[0].islower() for o in head.outputs)
    assert sorted(head.output_pairs[head.output_pairs]) == list(range(len(head.outputs)))


def test_alignment_removes_similarity_transforms(head: MeshAUHead) -> None:
    shape = head.mean_shape
    moved = 37.0 * shape @ rotation_y(25).T + np.array([100.0, 80.0, 5.0])
    aligned, rotation = align(moved, shape)
    assert aligned == pytest.approx(shape, abs=1e-6)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    assert normalise_shape(moved).mean(axis=0) == pytest.approx(np.zeros(3), abs=1e-12)


def test_rotation_pose_recovers_yaw_with_the_landmarker_sign(head: MeshAUHead) -> None:
    # image axes: x right, y down, z away from the camera; the face turns by +/-20 degrees
    for degrees in (20.0, -20.0):
        _, rotation = align(head.mean_shape @ rotation_y(degrees).T, head.mean_shape)
        pose = rotation_pose(rotation)
        assert abs(pose.yaw) == pytest.approx(20.0, abs=1e-6)
        assert pose.pitch == pytest.approx(0.0, abs=1e-6)
        assert pose.roll == pytest.approx(0.0, abs=1e-6)
    first = rotation_pose(align(head.mean_shape @ rotation_y(20).T, head.mean_shape)[1]).yaw
    second = rotation_pose(align(head.mean_shape @ rotation_y(-20).T, head.mean_shape)[1]).yaw
    assert np.sign(first) == -np.sign(second)


def test_mean_shape_prediction_is_bounded_and_mirror_symmetric(head: MeshAUHead) -> None:
    scores, _ = head.predict(head.mean_shape * 50.0)
    assert scores.shape == (len(head.outputs),)
    assert np.all((scores >= 0) & (scores <= 1))
    mirrored, _ = head.predict(mirror_landmarks(head.mean_shape * 50.0, head.landmark_pairs))
    assert mirrored == pytest.approx(scores[head.output_pairs], abs=0.05)


def test_batched_prediction_equals_single(head: MeshAUHead) -> None:
    rng = np.random.default_rng(0)
    batch = head.mean_shape[None] * 50 + rng.normal(0, 0.3, (3, 478, 3))
    scores, rotations = head.predict(batch)
    single, rotation = head.predict(batch[1])
    assert scores[1] == pytest.approx(single)
    assert rotations[1] == pytest.approx(rotation)


def test_missing_weights_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        MeshEstimator(weights_path=tmp_path / "nothing.npz")


@pytest.fixture(scope="module")
def estimator() -> Iterator[MeshEstimator]:
    built = create_estimator("mesh")
    yield built
    built.close()


def test_happy_faces_smile_more_than_neutral_ones(estimator, ferplus_dir: Path) -> None:
    happy = mean_intensity(estimator, clear_faces(ferplus_dir, 1, 6), "AU12")
    neutral = mean_intensity(estimator, clear_faces(ferplus_dir, 0, 6), "AU12")
    assert happy > neutral + 1.0, (happy, neutral)


def test_reading_fields(estimator, ferplus_dir: Path) -> None:
    record = clear_faces(ferplus_dir, 1, 1)[0]
    reading = estimator.estimate(as_face(record), record)
    assert list(reading.intensities) == list(mapped_aus())
    assert reading.intensities["AU12"] == max(reading.sides["AU12"])
    assert reading.backend == "mesh" and "+table:" in reading.model_version
    assert reading.pose is not None and abs(reading.pose.yaw) < 60


def test_mirrored_faces_swap_sides(estimator, ferplus_dir: Path) -> None:
    assert_mirroring_swaps_sides(estimator, ferplus_dir)


def test_blank_crop_is_a_stage_error(estimator) -> None:
    record = FaceRecord("x", "ferplus", "test", Path("."), "x.png", None)
    blank = Face((0, 0, 48, 48), np.full((48, 48, 3), 128, np.uint8), "aligned")
    with pytest.raises(StageError, match="no face found by MediaPipe face mesh"):
        estimator.estimate(blank, record)


def test_agreement_with_the_teacher_on_200_test_faces(shared_dir: Path, estimator) -> None:
    """Mean per-AU r against the ``blendshapes`` back end stays near the model card's figure."""
    teacher = create_estimator(
        "blendshapes", model_path=shared_dir / "models" / "face_landmarker.task"
    )
    root = shared_dir / "data" / "ferplus"
    with (root / "FER2013Test" / "label.csv").open(newline="") as fh:
        names = sorted(row[0] for row in csv.reader(fh))[:200]
    pairs = []
    for name in names:
        rel = f"FER2013Test/{name}"
        record = FaceRecord(rel, "ferplus", "test", root, rel, None)
        face = as_face(record)
        try:
            pairs.append((estimator.estimate(face, record), teacher.estimate(face, record)))
        except StageError:
            continue
    teacher.close()
    rs = []
    for au in mapped_aus():
        s = np.array([p[0].intensities[au] for p in pairs])
        t = np.array([p[1].intensities[au] for p in pairs])
        if t.std() >= 0.05:
            rs.append(np.corrcoef(s, t)[0, 1])
    assert len(rs) >= 15 and np.mean(rs) > 0.7, rs
