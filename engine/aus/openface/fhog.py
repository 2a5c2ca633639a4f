"""Felzenszwalb HOG (FHOG) features exactly as dlib's ``extract_fhog_features`` computes them.

The method is that of Felzenszwalb et al., "Object Detection with Discriminatively Trained Part
Based Models" (PAMI 2010); dlib's variant, which OpenFace 2.2 feeds its AU models, is reproduced
to float32 rounding (``tests/test_openface_fhog.py`` checks it against the real dlib):

* gradients are central differences on pixels 1 .. n-2 of the part of the image covered by the
  ``round(n / cell_size)`` cells (halves round up); a colour pixel takes the channel with the
  largest gradient;
* each gradient is snapped to the nearest of 18 directions (dlib's 9 unit vectors, rounded to
  4 decimals, and their opposites) and its magnitude is voted bilinearly into the 4 nearest cells;
* every cell but the outer ring gets 18 contrast-sensitive and 9 contrast-insensitive values, each
  the sum over the 4 blocks of 2 x 2 cells around it of ``0.5 * min(h / |block|, 0.2)``, plus 4
  texture values: per block, 0.2357 times the sum of ``min(h / |block|, 0.2)`` over the 18
  sensitive bins.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np

#: dlib's orientation unit vectors (x, y) for bins 0..8; bins 9..17 are their opposites.
_DIRECTIONS = np.array(
    [
        [1.0000, 0.0000],
        [0.9397, 0.3420],
        [0.7660, 0.6428],
        [0.5000, 0.8660],
        [0.1736, 0.9848],
        [-0.1736, 0.9848],
        [-0.5000, 0.8660],
        [-0.7660, 0.6428],
        [-0.9397, 0.3420],
    ],
    dtype=np.float32,
)
#: Largest absolute difference of two uint8 values, and the layout of the orientation table.
_MAX_DIFF = 255
_TABLE_SIDE = 2 * _MAX_DIFF + 1
_TABLE_CENTRE = _MAX_DIFF * _TABLE_SIDE + _MAX_DIFF
_EPS = np.float32(1e-4)
_TRUNCATION = np.float32(0.2)
_TEXTURE_SCALE = np.float32(2 * 0.2357)
#: dlib processes gradients in blocks of 8 pixels along a row, then the leftover columns.
_SIMD_WIDTH = 8


def fhog(image: np.ndarray, cell_size: int = 8) -> np.ndarray:
    """dlib's FHOG of a uint8 ``(H, W)`` gray or ``(H, W, 3)`` BGR image, float32 ``(rows, cols,
    31)`` with ``rows = round(H / cell_size) - 2``, halves rounding up (``(0, 0, 31)`` when
    either side has no inner cell).

    Values per cell: 18 contrast-sensitive bins, 9 contrast-insensitive bins, 4 texture values.
    """
    _validate(image, cell_size)
    height, width = image.shape[:2]
    cells_r, cells_c = _cell_count(height, cell_size), _cell_count(width, cell_size)
    if cells_r < 3 or cells_c < 3:
        return np.zeros((0, 0, 31), dtype=np.float32)
    last_r = min(cells_r * cell_size, height) - 1
    last_c = min(cells_c * cell_size, width) - 1
    key, magnitude = _gradients(image[: last_r + 1, : last_c + 1])
    bins = _bin_table()[key]
    index, weights = _votes(last_r - 1, last_c - 1, cells_c, cell_size)
    strength = np.sqrt(magnitude.astype(np.float32)).ravel()
    hist = np.bincount(
        (index + bins.ravel()).ravel(),
        weights=(weights * strength).ravel(),
        minlength=(cells_r + 2) * (cells_c + 2) * 18,
    )
    return _normalised_features(hist.astype(np.float32).reshape(cells_r + 2, cells_c + 2, 18))


def _validate(image: np.ndarray, cell_size: int) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"fhog needs a uint8 numpy image, got {kind}")
    if image.ndim != 2 and not (image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(f"fhog needs an (H, W) or (H, W, 3) image, got shape {image.shape}")
    if isinstance(cell_size, bool) or not isinstance(cell_size, int | np.integer) or cell_size < 1:
        raise ValueError(f"cell_size must be a positive integer, got {cell_size!r}")


def _cell_count(pixels: int, cell_size: int) -> int:
    """dlib's ``(int)((float)pixels / (float)cell_size + 0.5)``."""
    return int(float(np.float32(pixels) / np.float32(cell_size)) + 0.5)


def _gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orientation-table index and squared magnitude of the central differences at the inner
    pixels of the image.

    For colour, the channel with the largest magnitude wins. On ties dlib prefers blue, then
    green, within its 8-pixel blocks and red, then green, in the leftover columns at the right of
    each row.
    """
    planes = np.ascontiguousarray(np.moveaxis(np.atleast_3d(image), -1, 0), dtype=np.int32)
    gx = planes[:, 1:-1, 2:] - planes[:, 1:-1, :-2]
    gy = planes[:, 2:, 1:-1] - planes[:, :-2, 1:-1]
    key = gy * _TABLE_SIDE + (gx + _TABLE_CENTRE)
    magnitude = gx * gx + gy * gy
    if image.ndim == 2:
        return key[0], magnitude[0]
    blue, green, red = magnitude
    rows, columns = blue.shape
    blocks = max(0, -((_SIMD_WIDTH - 1 - columns) // _SIMD_WIDTH))
    in_block = np.arange(columns) < blocks * _SIMD_WIDTH
    # Integer margins: "> 0" is ">= 1", so the tie rule is a per-column threshold.
    blue_wins = blue - np.maximum(green, red) >= ~in_block
    red_wins = red - np.maximum(green, blue) >= in_block
    channel = red_wins.astype(np.intp) - blue_wins + 1
    pick = channel * blue.size + np.arange(blue.size).reshape(rows, columns)
    return key.reshape(-1)[pick], magnitude.reshape(-1)[pick]


@cache
def _bin_table() -> np.ndarray:
    """Orientation bin 0..17 of every integer gradient, flat at ``gy * 511 + gx + 255 * 512``.

    dlib takes the direction with the largest float32 dot product, the first one on ties.
    """
    gy, gx = np.mgrid[-_MAX_DIFF : _MAX_DIFF + 1, -_MAX_DIFF : _MAX_DIFF + 1].astype(np.float32)
    best = np.zeros(gx.shape, dtype=np.float32)
    bins = np.zeros(gx.shape, dtype=np.uint8)
    for o, (dx, dy) in enumerate(_DIRECTIONS):
        dot = gx * dx + gy * dy
        bins[dot > best] = o
        bins[-dot > best] = o + 9
        best = np.maximum(best, np.abs(dot))
    return _read_only(bins.ravel())


def _interpolation(count: int, cell_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For pixels 1..count: first padded cell index and the weights of it and the next cell."""
    position = ((np.arange(1, count + 1) + 0.5) / cell_size - 0.5).astype(np.float32)
    cell = np.floor(position)
    upper = position - cell
    return cell.astype(np.intp) + 1, 1 - upper, upper


@lru_cache(maxsize=16)
def _votes(rows: int, cols: int, cells_c: int, cell_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Where and how much each pixel of the gradient grid votes: ``(4, rows * cols)`` indices of
    bin 0 in the flat padded ``(cells_r + 2, cells_c + 2, 18)`` histogram, and bilinear weights.
    """
    row_cell, row_low, row_high = _interpolation(rows, cell_size)
    col_cell, col_low, col_high = _interpolation(cols, cell_size)
    width = cells_c + 2
    base = (row_cell[:, None] * width + col_cell) * 18
    index = np.stack([base, base + 18, base + 18 * width, base + 18 * (width + 1)])
    weights = np.stack(
        [
            np.outer(row_w, col_w)
            for row_w, col_w in (
                (row_low, col_low),
                (row_low, col_high),
                (row_high, col_low),
                (row_high, col_high),
            )
        ]
    )
    return _read_only(index.reshape(4, -1)), _read_only(weights.reshape(4, -1))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _normalised_features(hist: np.ndarray) -> np.ndarray:
    """The 31 features of every inner cell from the padded cell histograms."""
    cells = hist[1:-1, 1:-1]
    energy = np.square(cells[..., :9] + cells[..., 9:]).sum(axis=-1)
    blocks = energy[:-1, :-1] + energy[:-1, 1:] + energy[1:, :-1] + energy[1:, 1:]
    # The 4 blocks holding each inner cell, in dlib's order: it is their top-left, bottom-left,
    # top-right, bottom-right cell.
    around = np.stack([blocks[1:, 1:], blocks[:-1, 1:], blocks[1:, :-1], blocks[:-1, :-1]], -1)
    limit = _TRUNCATION * np.sqrt(around + _EPS)
    scale = np.float32(0.1) / limit
    inner = cells[1:-1, 1:-1]
    values = np.concatenate([inner, inner[..., :9] + inner[..., 9:]], axis=-1)
    normalised = np.minimum(values[..., None, :], limit[..., None]) * scale[..., None]
    texture = normalised[..., :18].sum(axis=-1) * _TEXTURE_SCALE
    return np.concatenate([normalised.sum(axis=-2), texture], axis=-1)
