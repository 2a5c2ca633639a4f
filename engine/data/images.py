"""Load one record's image as an RGB ``uint8`` array, rejecting bad files with a clear reason.

Images come from files, or from rows of a pixel table such as the Kaggle ``fer2013.csv``. A row
is addressed by a path fragment, ``"<table>.csv#row=<n>"`` (``n`` counts data rows from 0,
header and blank lines excluded); its ``pixels`` column holds a square grey image as
space-separated 0-255 values. Only the row's byte offset is kept in memory, so records stay small
and picklable, and each process indexes a table once.
"""

from __future__ import annotations

import csv
import errno
import io
import math
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.types import FaceRecord, StageError

_ROW_REF = re.compile(r"^(?P<table>.+)#row=(?P<row>\d+)$")
PIXELS_COLUMN = "pixels"


def row_ref(table: str, row: int) -> str:
    """Path fragment addressing data row ``row`` (0-based) of a pixel table."""
    return f"{table}#row={row}"


def load_image(
    source: FaceRecord | str | os.PathLike[str],
    max_pixels: int = 100_000_000,
    min_side: int = 8,
) -> np.ndarray:
    """Decode ``source`` (a record, an image path or a ``table.csv#row=n`` reference).

    Returns an ``H x W x 3`` ``uint8`` RGB array; grey, palette, 16-bit and RGBA images are
    converted (alpha dropped) and EXIF orientation applied. Raises ``StageError("read", ...)``
    naming the file and the reason: missing, unreadable, empty, not an image, truncated or
    corrupt, smaller than ``min_side`` pixels on a side, or more than ``max_pixels`` pixels
    (checked from the header, before decoding).
    """
    text = str(source.path if isinstance(source, FaceRecord) else source)
    match = _ROW_REF.match(text)
    if match:
        path = Path(match["table"])
        _check_file(path)
        array = _decode_row(path, int(match["row"]))
    else:
        path = Path(text)
        _check_file(path)
        array = _decode_file(path, max_pixels)
    height, width = array.shape[:2]
    if min(height, width) < min_side:
        raise StageError(
            "read", f"image too small ({width}x{height} px, minimum side {min_side} px): {text}"
        )
    return array


def check_source(source: FaceRecord | str | os.PathLike[str]) -> None:
    """Cheap check, without decoding, that an image source exists, is readable and not empty."""
    text = str(source.path if isinstance(source, FaceRecord) else source)
    match = _ROW_REF.match(text)
    _check_file(Path(match["table"]) if match else Path(text))


def decode_pixels(values: str, source: str = "<pixels>") -> np.ndarray:
    """Turn space-separated grey values of a square image into an RGB array."""
    try:
        grey = np.array(values.split(), dtype=np.int64)
    except ValueError:
        raise StageError("read", f"pixel values are not integers: {source}") from None
    side = math.isqrt(grey.size)
    if grey.size == 0 or side * side != grey.size:
        raise StageError("read", f"{grey.size} pixel values do not form a square image: {source}")
    if grey.min() < 0 or grey.max() > 255:
        raise StageError("read", f"pixel values outside 0-255: {source}")
    return np.repeat(grey.astype(np.uint8).reshape(side, side, 1), 3, axis=2)


def _check_file(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        try:
            path.stat()
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise StageError("read", f"symbolic link loop: {path}") from None
        raise StageError("read", f"broken symbolic link (target missing): {path}")
    if not path.exists():
        raise StageError("read", f"image file not found: {path}")
    if not path.is_file():
        raise StageError("read", f"not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise StageError("read", f"image file unreadable (permission denied): {path}")
    if path.stat().st_size == 0:
        raise StageError("read", f"empty image file (0 bytes): {path}")


def _decode_file(path: Path, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except UnidentifiedImageError:
        raise StageError("read", f"not an image (unrecognised format): {path}") from None
    except Image.DecompressionBombError as error:
        raise StageError("read", f"decompression bomb refused ({error}): {path}") from None
    except PermissionError:
        raise StageError("read", f"image file unreadable (permission denied): {path}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise StageError("read", f"corrupt image header ({error}): {path}") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise StageError(
                "read",
                f"decompression bomb refused ({width}x{height} = {width * height} px "
                f"> max_pixels {max_pixels}): {path}",
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
                image = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise StageError("read", f"truncated or corrupt image data ({error}): {path}") from None
        return _to_rgb(image)


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16"):
        grey = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _decode_row(table: Path, row: int) -> np.ndarray:
    stat = table.stat()
    offsets, header = _row_index(table, stat.st_mtime_ns, stat.st_size)
    source = row_ref(str(table), row)
    if row >= len(offsets):
        raise StageError("read", f"row {row} not in table ({len(offsets)} data rows): {source}")
    with table.open("rb") as handle:
        handle.seek(offsets[row])
        line = handle.readline().decode("utf-8", errors="replace")
    values = next(csv.reader(io.StringIO(line)), [])
    fields = dict(zip(header, values, strict=False))
    if PIXELS_COLUMN not in fields:
        raise StageError("read", f"no {PIXELS_COLUMN!r} value in row {row}: {source}")
    return decode_pixels(fields[PIXELS_COLUMN], source)


@lru_cache(maxsize=8)
def _row_index(table: Path, mtime_ns: int, size: int) -> tuple[list[int], list[str]]:
    """Byte offsets of the data rows of ``table`` and its header (cache keyed by mtime/size)."""
    offsets: list[int] = []
    with table.open("rb") as handle:
        header_line = handle.readline().decode("utf-8-sig", errors="replace")
        header = [name.strip() for name in next(csv.reader(io.StringIO(header_line)), [])]
        position = handle.tell()
        for line in handle:
            if line.strip():
                offsets.append(position)
            position += len(line)
    return offsets, header
