"""Helpers shared by the tests of the two MediaPipe back ends (``mesh`` and ``blendshapes``)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from engine.data.images import load_image
from engine.types import Face, FaceRecord, StageError


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
    """Mean intensity of ``au`` over the records whose face is found (at least half)."""
    values = []
    for record in records:
        try:
            values.append(estimator.estimate(as_face(record), record).intensities[au])
        except StageError:
            continue
    assert len(values) >= len(records) // 2, "too few faces found"
    return float(np.mean(values))


def assert_mirroring_swaps_sides(estimator, ferplus_dir: Path) -> None:
    """Left-right asymmetries and yaw reverse when faces are mirrored (noisy, so in bulk)."""
    original, mirrored, yaws = [], [], []
    for column in (0, 1, 4):  # neutral, happiness, anger
        for record in clear_faces(ferplus_dir, column, 6):
            face = as_face(record)
            flipped = Face(face.box, np.ascontiguousarray(face.crop[:, ::-1]), face.source)
            try:
                first = estimator.estimate(face, record)
                second = estimator.estimate(flipped, record)
            except StageError:
                continue
            for au, (left, right) in first.sides.items():
                original.append(left - right)
                mirrored.append(second.sides[au][1] - second.sides[au][0])
            yaws.append((first.pose.yaw, second.pose.yaw))
    assert np.corrcoef(original, mirrored)[0, 1] > 0.25
    yaw = np.array(yaws)
    assert np.corrcoef(yaw[:, 0], -yaw[:, 1])[0, 1] > 0.8
