"""Typed values passed between the pipeline's stages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.resources import data_file

#: The expression classes every dataset is mapped onto, in FER+ vote order
#: (``emotions`` of ``data/label_maps.json``, read once at import).
EMOTIONS: tuple[str, ...] = tuple(
    json.loads(data_file("label_maps.json").read_text(encoding="utf-8"))["emotions"]
)


@dataclass(frozen=True)
class FaceRecord:
    """One labelled image of a dataset, before any processing.

    ``relpath`` is relative to the dataset root; ``soft_label`` maps each of ``EMOTIONS`` to
    its share of annotator votes when the dataset has votes; ``box`` is the dataset's own face
    box ``(x, y, w, h)`` in pixels when it has one.
    """

    record_id: str
    dataset: str
    split: str
    root: Path
    relpath: str
    label: str | None
    soft_label: dict[str, float] | None = None
    box: tuple[int, int, int, int] | None = None
    extras: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.root / self.relpath


@dataclass(frozen=True)
class Face:
    """A face found in an image: its box in the image, the RGB crop and how it was found."""

    box: tuple[int, int, int, int]
    crop: np.ndarray  # H x W x 3, uint8, RGB
    source: str  # "aligned" | "dataset" | detector name
    score: float = 1.0


@dataclass(frozen=True)
class Pose:
    """Head pose in degrees."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class AUReading:
    """Action-unit intensities of one face on the FACS 0-5 scale.

    ``intensities`` maps FACS codes (``"AU01"`` ... ``"AU43"``) to the bilateral intensity;
    ``sides`` maps a code to its ``(left, right)`` intensities where the back end gives them;
    ``presence`` maps a code to a separate present/absent decision where the back end has one
    (OpenFace's SVMs).
    """

    intensities: dict[str, float]
    backend: str
    model_version: str
    sides: dict[str, tuple[float, float]] = field(default_factory=dict)
    pose: Pose | None = None
    presence: dict[str, bool] = field(default_factory=dict)


class StageError(Exception):
    """A record-level failure: the record is rejected with ``stage`` and the message as reason."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage
