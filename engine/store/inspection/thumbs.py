"""Small face thumbnails for the report page: the face box, square, WebP, base64."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from engine.data.images import load_image
from engine.types import StageError

#: Thumbnail side in pixels and WebP quality: 48 px is FER+'s own resolution; at quality 50 a
#: face is ~430 bytes, so 27,000 faces take ~15 MB of base64 (the page's bar is 25 MB).
THUMB_SIZE = 48
THUMB_QUALITY = 50


def dataset_root(manifest: dict, out_dir: Path) -> Path | None:
    """The dataset folder of a run: its spec's path, as given or relative to the run's folder."""
    spec = manifest.get("config", {}).get("spec", "")
    _, _, path = spec.partition(":")
    if not path:
        return None
    given = Path(path).expanduser()
    for candidate in (given, Path(out_dir).parent / given, Path(out_dir).parent.parent / given):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def thumbnails(
    frame: pd.DataFrame, root: Path | None, size: int = THUMB_SIZE, workers: int = 4
) -> list[str]:
    """One base64 WebP per row of ``frame`` ("" where the image cannot be read)."""
    rows = frame.to_dict("records")
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(lambda row: _thumbnail(row, root, size), rows, chunksize=64))


def _thumbnail(row: dict, root: Path | None, size: int) -> str:
    image = _image(row, root)
    if image is None:
        return ""
    box = [row.get(k) for k in ("face_x", "face_y", "face_w", "face_h")]
    if all(v is not None and pd.notna(v) for v in box):
        image = _square_crop(image, *(int(v) for v in box))
    elif image.shape[0] != image.shape[1]:
        side = min(image.shape[:2])
        image = _square_crop(image, 0, 0, image.shape[1], image.shape[0], side)
    if image.shape[0] != size:
        interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interpolation)
    grey = bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
    pixels = image[..., 0] if grey else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, THUMB_QUALITY])
    return base64.b64encode(encoded.tobytes()).decode("ascii") if ok else ""


def _image(row: dict, root: Path | None) -> np.ndarray | None:
    data = row.get("image_bytes")
    try:
        if isinstance(data, bytes | bytearray) and data:
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            return None if decoded is None else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
        return load_image(root / row["image_path"]) if root is not None else None
    except (StageError, OSError, cv2.error):
        return None


def _square_crop(image: np.ndarray, x: int, y: int, w: int, h: int, side: int = 0) -> np.ndarray:
    """The square around a box's centre (its longer side), padded at the image border."""
    side = side or max(w, h, 1)
    cx, cy = x + w // 2, y + h // 2
    left, top = cx - side // 2, cy - side // 2
    pad = max(0, -left, -top, left + side - image.shape[1], top + side - image.shape[0])
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT)
        left, top = left + pad, top + pad
    return image[top : top + side, left : left + side]
