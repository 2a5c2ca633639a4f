"""``blendshapes`` back end on real FER+ faces (skipped without ``../shared``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.aus import create_estimator
from engine.aus.blendshape_map import mapped_aus
from engine.aus.blendshapes import BlendshapeEstimator, matrix_pose
from engine.types import Face, FaceRecord, StageError
from tests.mediapipe_faces import (
    as_face,
    assert_mirroring_swaps_sides,
    clear_faces,
    mean_intensity,
)

N_PER_CLASS = 6


@pytest.fixture(scope="module")
def estimator(shared_dir: Path) -> Iterator[BlendshapeEstimator]:
    model = shared_dir / "models" / "face_landmarker.task"
    if not model.is_file():
        pytest.skip(f"{model} absent")
    built = create_estimator("blendshapes", model_path=model)
    yield built
    built.close()


def test_happy_faces_smile_more_than_neutral_ones(estimator, ferplus_dir: Path) -> None:
    happy = mean_intensity(estimator, clear_faces(ferplus_dir, 1, N_PER_CLASS), "AU12")
    neutral = mean_intensity(estimator, clear_faces(ferplus_dir, 0, N_PER_CLASS), "AU12")
    assert happy > neutral + 1.0, (happy, neutral)


def test_surprised_faces_raise_the_brows_more_than_neutral_ones(estimator, ferplus_dir) -> None:
    surprise = mean_intensity(estimator, clear_faces(ferplus_dir, 2, N_PER_CLASS), "AU01")
    neutral = mean_intensity(estimator, clear_faces(ferplus_dir, 0, N_PER_CLASS), "AU01")
    assert surprise > neutral + 0.8, (surprise, neutral)


def test_reading_fields(estimator, ferplus_dir: Path) -> None:
    record = clear_faces(ferplus_dir, 1, 1)[0]
    reading = estimator.estimate(as_face(record), record)
    assert list(reading.intensities) == list(mapped_aus())
    assert reading.sides["AU12"][0] >= 0 and "AU01" not in reading.sides
    assert reading.intensities["AU12"] == max(reading.sides["AU12"])
    assert reading.model_version.startswith("face_landmarker-sha256:64184e229b26+table:")
    assert reading.pose is not None and abs(reading.pose.yaw) < 60


def test_mirrored_faces_swap_sides(estimator, ferplus_dir: Path) -> None:
    assert_mirroring_swaps_sides(estimator, ferplus_dir)


def test_blank_crop_is_a_stage_error(estimator) -> None:
    record = FaceRecord("x", "ferplus", "test", Path("."), "x.png", None)
    with pytest.raises(StageError, match="no face found by MediaPipe Face Landmarker"):
        estimator.estimate(Face((0, 0, 48, 48), np.full((48, 48, 3), 128, np.uint8), "x"), record)


def test_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.task"):
        BlendshapeEstimator(model_path=tmp_path / "nothing.task")


def test_matrix_pose_of_known_rotations() -> None:
    angle = np.radians(20)
    yaw = np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    )
    matrix = np.eye(4)
    matrix[:3, :3] = yaw * 1.3  # scale is ignored
    pose = matrix_pose(matrix)
    assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx((20, 0, 0), abs=1e-6)
    assert matrix_pose(np.eye(4)).yaw == pytest.approx(0)
