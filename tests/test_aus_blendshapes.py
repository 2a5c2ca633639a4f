"""``blendshapes`` back end on real FER+ faces (skipped without ``../shared``)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.aus import create_estimator
from engine.aus.blendshape_map import mapped_aus
from engine.aus.blendshapes import BlendshapeEstimator, matrix_pose
from engine.images import load_image
from engine.types import Face, FaceRecord, StageError

N_PER_CLASS = 6


def clear_faces(ferplus_dir: Path, emotion_column: int, n: int) -> list[FaceRecord]:
    """The first ``n`` FER+ Test faces with at least 9 of 10 votes in one vote column."""
    out = []
    with (ferplus_dir / "FER2013Test" / "label.csv").open(newline="") as fh:
        for row in csv.reader(fh):
            if int(row[2 + emotion_column]) >= 9:
                rel = f"FER2013Test/{row[0]}"
                out.append(FaceRecord(f"ferplus/{rel}", "ferplus", "test", ferplus_dir, rel, None))
            if len(out) == n:
                break
    return out


def as_face(record: FaceRecord) -> Face:
    image = load_image(record)
    return Face((0, 0, image.shape[1], image.shape[0]), image, "aligned")


def mean_intensity(estimator, records: list[FaceRecord], au: str) -> float:
    values = []
    for record in records:
        try:
            values.append(estimator.estimate(as_face(record), record).intensities[au])
        except StageError:
            continue
    assert len(values) >= len(records) // 2, "too few faces found"
    return float(np.mean(values))


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
    """Left-right asymmetries reverse when the image is mirrored (faces are noisy, so in bulk)."""
    original, mirrored, yaws = [], [], []
    for column in (0, 1, 4):  # neutral, happiness, anger
        for record in clear_faces(ferplus_dir, column, 6):
            face = as_face(record)
            flipped = Face(face.box, np.ascontiguousarray(face.crop[:, ::-1]), face.source)
            try:
                first, second = (
                    estimator.estimate(face, record),
                    estimator.estimate(flipped, record),
                )
            except StageError:
                continue
            for au, (left, right) in first.sides.items():
                original.append(left - right)
                mirrored.append(second.sides[au][1] - second.sides[au][0])
            yaws.append((first.pose.yaw, second.pose.yaw))
    assert np.corrcoef(original, mirrored)[0, 1] > 0.25
    yaw = np.array(yaws)
    assert np.corrcoef(yaw[:, 0], -yaw[:, 1])[0, 1] > 0.8


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
