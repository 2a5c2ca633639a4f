"""The blendshape -> AU table and its conversion to ``AUReading`` fields."""

from __future__ import annotations

import csv

import pytest

from engine.aus import MAX_INTENSITY, au_definitions
from engine.aus.blendshape_map import (
    BLENDSHAPE_NAMES,
    TABLE_FILE,
    blendshapes_to_reading,
    mapped_aus,
    mapping,
    table_version,
    used_blendshapes,
)
from engine.resources import data_file


def test_table_lists_all_52_blendshapes_with_known_aus() -> None:
    with data_file(TABLE_FILE).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {row["blendshape"] for row in rows} == set(BLENDSHAPE_NAMES)
    assert len(BLENDSHAPE_NAMES) == 52
    assert all(row["notes"].strip() for row in rows)
    assert {row.au for row in mapping()} <= set(au_definitions())
    assert all(row.gain > 0 for row in mapping())


def test_expected_pairs_and_sides() -> None:
    pairs = {(row.blendshape, row.au, row.side) for row in mapping()}
    for expected in [
        ("mouthSmileLeft", "AU12", "left"),
        ("mouthSmileRight", "AU12", "right"),
        ("browDownLeft", "AU04", "left"),
        ("browInnerUp", "AU01", "both"),
        ("jawOpen", "AU26", "both"),
        ("eyeBlinkRight", "AU43", "right"),
        ("mouthPressLeft", "AU23", "left"),
        ("mouthPressLeft", "AU24", "left"),
    ]:
        assert expected in pairs
    assert "eyeLookUpLeft" not in used_blendshapes()
    assert "_neutral" not in used_blendshapes()


def test_zero_scores_give_zero_intensities_for_every_mapped_au() -> None:
    intensities, sides = blendshapes_to_reading({})
    assert list(intensities) == list(mapped_aus())
    assert all(v == 0.0 for v in intensities.values())
    assert sides["AU12"] == (0.0, 0.0)
    assert "AU01" not in sides and "AU26" not in sides


def _row(blendshape: str, au: str):
    return next(r for r in mapping() if r.blendshape == blendshape and r.au == au)


def test_rest_gain_clip_sides_and_maximum() -> None:
    intensities, sides = blendshapes_to_reading(
        {"mouthSmileLeft": 0.8, "mouthSmileRight": 0.2, "jawOpen": 1.7, "browInnerUp": -0.1}
    )
    left, right = _row("mouthSmileLeft", "AU12"), _row("mouthSmileRight", "AU12")
    expected = (min(5.0, (0.8 - left.rest) * left.gain), (0.2 - right.rest) * right.gain)
    assert sides["AU12"] == pytest.approx(expected)
    assert intensities["AU12"] == pytest.approx(max(expected))
    assert intensities["AU26"] == MAX_INTENSITY
    assert intensities["AU01"] == 0.0
    assert all(isinstance(v, float) for v in intensities.values())


def test_lip_roll_takes_the_larger_lip() -> None:
    intensities, _ = blendshapes_to_reading({"mouthRollLower": 0.3, "mouthRollUpper": 0.25})
    lower, upper = _row("mouthRollLower", "AU28"), _row("mouthRollUpper", "AU28")
    expected = max((0.3 - lower.rest) * lower.gain, (0.25 - upper.rest) * upper.gain)
    assert intensities["AU28"] == pytest.approx(min(5.0, expected))


def test_scores_at_rest_read_zero() -> None:
    resting = {row.blendshape: row.rest for row in mapping()}
    intensities, _ = blendshapes_to_reading(resting)
    assert all(v == 0.0 for v in intensities.values())


def test_table_version_is_a_short_hash() -> None:
    version = table_version()
    assert len(version) == 12 and int(version, 16) >= 0
