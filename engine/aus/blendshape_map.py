"""MediaPipe blendshape scores -> FACS AU intensities, by ``data/blendshape_to_au.csv``.

Each table row sends one blendshape (score 0-1) to one AU on the subject's ``left``,
``right`` or ``both`` sides as ``gain * (score - rest)``, clipped to the FACS 0-5 scale:
``rest`` is the score of a face at rest (calibrated by ``scripts/calibrate_blendshape_table.py``).
Several rows for one AU and side combine by maximum; the bilateral intensity of an AU is
the larger of its two sides, and ``sides`` lists the AUs that have sided rows.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from functools import cache

import numpy as np

from engine.aus import MAX_INTENSITY, au_definitions
from engine.resources import data_file

TABLE_FILE = "blendshape_to_au.csv"
SIDES = ("left", "right", "both")

#: MediaPipe Face Landmarker's 52 blendshape names in output order.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight",
    "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft",
    "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight",
    "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)  # fmt: skip


@dataclass(frozen=True)
class MapRow:
    """One mapped row of the table."""

    blendshape: str
    au: str
    side: str
    gain: float
    rest: float = 0.0


@cache
def mapping() -> tuple[MapRow, ...]:
    """The mapped rows of ``data/blendshape_to_au.csv``, validated."""
    path = data_file(TABLE_FILE)
    known = au_definitions()
    rows = []
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            if row["blendshape"] not in BLENDSHAPE_NAMES:
                raise ValueError(f"{path}:{line}: unknown blendshape {row['blendshape']!r}")
            if not row["au"]:
                continue
            if row["au"] not in known:
                raise ValueError(f"{path}:{line}: AU {row['au']!r} not in au_definitions.csv")
            if row["side"] not in SIDES:
                raise ValueError(f"{path}:{line}: side {row['side']!r} is not one of {SIDES}")
            rest = float(row.get("rest") or 0.0)
            rows.append(MapRow(row["blendshape"], row["au"], row["side"], float(row["gain"]), rest))
    return tuple(rows)


@cache
def table_version() -> str:
    """Short sha256 of the table file, recorded in ``model_version`` strings."""
    return hashlib.sha256(data_file(TABLE_FILE).read_bytes()).hexdigest()[:12]


def mapped_aus() -> tuple[str, ...]:
    """AU codes the table produces, in ``au_definitions.csv`` order."""
    present = {row.au for row in mapping()}
    return tuple(au for au in au_definitions() if au in present)


def used_blendshapes() -> tuple[str, ...]:
    """Blendshapes that feed at least one AU, in MediaPipe output order."""
    present = {row.blendshape for row in mapping()}
    return tuple(name for name in BLENDSHAPE_NAMES if name in present)


def blendshapes_to_reading(
    scores: dict[str, float],
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """``{blendshape: score}`` -> (``intensities``, ``sides``) fields of an ``AUReading``.

    Blendshapes missing from ``scores`` count as 0. Sides are the subject's (left, right).
    """
    left: dict[str, float] = {}
    right: dict[str, float] = {}
    both: dict[str, float] = {}
    for row in mapping():
        score = scores.get(row.blendshape, 0.0)
        value = float(np.clip((score - row.rest) * row.gain, 0.0, MAX_INTENSITY))
        target = {"left": left, "right": right, "both": both}[row.side]
        target[row.au] = max(target.get(row.au, 0.0), value)
    intensities: dict[str, float] = {}
    sides: dict[str, tuple[float, float]] = {}
    for au in mapped_aus():
        if au in left or au in right:
            pair = (left.get(au, 0.0), right.get(au, 0.0))
            sides[au] = pair
            intensities[au] = max(max(pair), both.get(au, 0.0))
        else:
            intensities[au] = both[au]
    return intensities, sides
