"""Compact data packs for a lent GPU machine: named arrays in one xz file, faces coded losslessly.

A device call sends the working tree and the packs it carries, 64 MiB in all, and the tracked
tree is ~19 MB, so a pack of FER+ faces must stay under ~45 MB. Grey faces are stored as the
residuals of the median edge detector predictor (LOCO-I, the one of JPEG-LS: each pixel
predicted from its left, upper and upper-left neighbours), which xz compresses to ~0.67 of the
raw bytes instead of ~0.77: FER+ Train (26,940 faces) takes ~42 MB instead of ~48. Decoding
restores the exact pixels.

Used by ``scripts/train_nano_encoder.py`` and ``scripts/finetune_packed.py`` (importable as
``scripts._packs`` because the editable install puts the checkout on ``sys.path``).
"""

from __future__ import annotations

import io
import lzma
from pathlib import Path

import numpy as np

#: the key of the array naming the arrays stored as predictor residuals
CODED = "_coded"
_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 4, "lp": 0, "pb": 0}]


def _neighbours(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    left, up, corner = (np.zeros_like(faces) for _ in range(3))
    left[:, :, 1:] = faces[:, :, :-1]
    up[:, 1:, :] = faces[:, :-1, :]
    corner[:, 1:, 1:] = faces[:, :-1, :-1]
    return left, up, corner


def _predict(left: np.ndarray, up: np.ndarray, corner: np.ndarray) -> np.ndarray:
    high, low = np.maximum(left, up), np.minimum(left, up)
    return np.where(corner >= high, low, np.where(corner <= low, high, left + up - corner))


def encode_faces(faces: np.ndarray) -> np.ndarray:
    """uint8 faces ``[N, H, W]`` -> uint8 residuals of the same shape (prediction errors mod
    256, zigzag-mapped so that small errors of either sign are small bytes)."""
    if faces.dtype != np.uint8 or faces.ndim != 3:
        raise ValueError(f"faces must be uint8 [N, H, W], got {faces.dtype} {faces.shape}")
    pixels = faces.astype(np.int16)
    error = (pixels - _predict(*_neighbours(pixels)) + 128) % 256 - 128
    return np.where(error >= 0, 2 * error, -2 * error - 1).astype(np.uint8)


def decode_faces(residuals: np.ndarray) -> np.ndarray:
    """The faces ``encode_faces`` was given (row by row: each row's prediction needs the row
    above and, pixel by pixel, the one to its left)."""
    zig = residuals.astype(np.int16)
    error = np.where(zig % 2 == 0, zig // 2, -(zig + 1) // 2)
    faces = np.zeros(residuals.shape, np.int16)
    for row in range(faces.shape[1]):
        up = faces[:, row - 1] if row else np.zeros_like(faces[:, 0])
        for col in range(faces.shape[2]):
            left = faces[:, row, col - 1] if col else np.zeros_like(up[:, 0])
            corner = up[:, col - 1] if col and row else np.zeros_like(left)
            guess = _predict(left, up[:, col], corner)
            faces[:, row, col] = (guess + error[:, row, col]) % 256
    return faces.astype(np.uint8)


def write_pack(path: Path, arrays: dict[str, np.ndarray], faces: tuple[str, ...] = ()) -> None:
    """Write ``arrays`` to the xz file ``path``, the ``faces`` among them coded losslessly."""
    stored = {k: encode_faces(v) if k in faces else v for k, v in arrays.items()}
    stored[CODED] = np.array(sorted(faces), dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, **stored)
    path.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(path, "wb", format=lzma.FORMAT_XZ, filters=_FILTERS) as fh:
        fh.write(buffer.getvalue())


def read_pack(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a pack (``write_pack``'s, or an older one without coded faces)."""
    try:
        with lzma.open(path, "rb") as fh:
            arrays = np.load(io.BytesIO(fh.read()))
            data = {k: arrays[k] for k in arrays.files}
    except (OSError, lzma.LZMAError, ValueError) as error:
        raise ValueError(f"{path}: not a data pack ({error})") from error
    coded = set(data.pop(CODED, np.array([], dtype=str)).tolist())
    return {k: decode_faces(v) if k in coded else v for k, v in data.items()}
