"""dlib's FHOG in numpy: golden check against the real dlib, and known patterns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.aus.openface.fhog import fhog

#: Images and dlib 20.0.1's output, written by ``scripts/make_fhog_fixtures.py``.
FIXTURE = Path(__file__).parent / "data" / "fhog_reference.npz"
#: Measured largest difference from dlib over the fixture: 1.5e-7 (float32 rounding).
TOLERANCE = 1e-5
SENSITIVE, INSENSITIVE, TEXTURE = slice(0, 18), slice(18, 27), slice(27, 31)


def _reference() -> dict[str, dict[str, np.ndarray]]:
    with np.load(FIXTURE) as data:
        cases: dict[str, dict[str, np.ndarray]] = {}
        for key in data.files:
            name, field = key.split("/")
            cases.setdefault(name, {})[field] = data[key]
    return cases


REFERENCE = _reference()


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_matches_dlib(name):
    case = REFERENCE[name]
    ours = fhog(case["image"], int(case["cell_size"]))
    assert ours.dtype == np.float32
    assert ours.shape == case["hog"].shape
    np.testing.assert_allclose(ours, case["hog"], rtol=0, atol=TOLERANCE)


def test_fixture_covers_colour_gray_and_other_cell_sizes():
    images = [case["image"] for case in REFERENCE.values()]
    assert any(image.ndim == 3 for image in images) and any(image.ndim == 2 for image in images)
    assert {int(case["cell_size"]) for case in REFERENCE.values()} >= {1, 4, 6, 8}
    assert REFERENCE["noise"]["hog"].any()


def test_constant_image_gives_zeros():
    assert not fhog(np.full((112, 112), 137, dtype=np.uint8)).any()
    assert not fhog(np.full((112, 112, 3), 90, dtype=np.uint8)).any()


@pytest.mark.parametrize(
    ("shape", "cell_size", "expected"),
    [
        ((112, 112), 8, (12, 12)),
        ((50, 37), 8, (4, 3)),  # 6.25 -> 6 cells, 4.625 -> 5 cells
        ((20, 28), 8, (1, 2)),  # halves round up: 2.5 -> 3 cells, 3.5 -> 4 cells
        ((24, 24, 3), 8, (1, 1)),
        ((40, 36), 4, (8, 7)),
        ((12, 100), 8, (0, 0)),  # 2 cell rows: no inner cell, and dlib then drops the columns too
        ((5, 5), 8, (0, 0)),
        ((0, 0), 8, (0, 0)),
    ],
)
def test_output_shape(shape, cell_size, expected):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert fhog(image, cell_size).shape == (*expected, 31)


def _step(vertical: bool) -> np.ndarray:
    """Dark then bright, left to right (a vertical edge) or top to bottom (a horizontal one)."""
    image = np.full((64, 64), 30, dtype=np.uint8)
    if vertical:
        image[:, 29:] = 220
    else:
        image[29:, :] = 220
    return image


def test_vertical_edge_votes_for_horizontal_gradient():
    hog = fhog(_step(vertical=True))
    sensitive = hog[..., SENSITIVE].sum(axis=(0, 1))
    insensitive = hog[..., INSENSITIVE].sum(axis=(0, 1))
    assert sensitive[0] > 0 and np.count_nonzero(sensitive) == 1  # bin 0: +x, bright to the right
    assert insensitive[0] > 0 and np.count_nonzero(insensitive) == 1


def test_horizontal_edge_votes_90_degrees_away():
    hog = fhog(_step(vertical=False))
    sensitive = hog[..., SENSITIVE].sum(axis=(0, 1))
    insensitive = hog[..., INSENSITIVE].sum(axis=(0, 1))
    # +y lies between bins 4 (80 degrees) and 5 (100 degrees); dlib's first maximum is bin 4.
    assert sensitive[4] > 0 and np.count_nonzero(sensitive) == 1
    assert insensitive[4] > 0 and np.count_nonzero(insensitive) == 1


def test_negative_image_swaps_sensitive_bins_by_180_degrees():
    image = REFERENCE["colour"]["image"]
    hog, negative = fhog(image), fhog(255 - image)
    np.testing.assert_allclose(negative[..., INSENSITIVE], hog[..., INSENSITIVE], atol=1e-6)
    np.testing.assert_allclose(negative[..., TEXTURE], hog[..., TEXTURE], atol=1e-6)
    swapped = np.roll(hog[..., SENSITIVE], 9, axis=-1)
    np.testing.assert_allclose(negative[..., SENSITIVE], swapped, atol=1e-6)
    assert not np.allclose(negative[..., SENSITIVE], hog[..., SENSITIVE], atol=1e-3)


def test_colour_with_equal_channels_equals_gray():
    gray = REFERENCE["noise"]["image"]
    np.testing.assert_array_equal(fhog(np.repeat(gray[..., None], 3, axis=-1)), fhog(gray))


@pytest.mark.parametrize(
    ("image", "cell_size"),
    [
        (np.zeros((32, 32), dtype=np.float32), 8),
        (np.zeros((32, 32), dtype=np.uint16), 8),
        (np.zeros((32, 32, 4), dtype=np.uint8), 8),
        (np.zeros((32, 32, 1), dtype=np.uint8), 8),
        (np.zeros(32, dtype=np.uint8), 8),
        ([[0, 1], [2, 3]], 8),
        (np.zeros((32, 32), dtype=np.uint8), 0),
        (np.zeros((32, 32), dtype=np.uint8), 2.0),
    ],
)
def test_bad_input_raises(image, cell_size):
    with pytest.raises(ValueError):
        fhog(image, cell_size)
