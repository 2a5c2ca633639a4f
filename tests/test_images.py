"""Image loading: conversions, pixel-table rows, and every kind of bad input."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.images import decode_pixels, load_image, row_ref
from engine.types import FaceRecord, StageError


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` grey pixels, with (almost) no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(b"\0" * 64)), (b"IEND", b"")]
    body = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks
    )
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _reason(source: object, **kwargs: int) -> str:
    with pytest.raises(StageError) as caught:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    assert caught.value.stage == "read"
    return str(caught.value)


@pytest.fixture()
def rgb_png(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "1", "CMYK"])
def test_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / ("img.tif" if mode == "CMYK" else "img.png")
    Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode).save(path)
    image = load_image(path)
    assert image.shape == (10, 20, 3) and image.dtype == np.uint8


def test_grey_is_replicated(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.new("L", (16, 16), 77).save(path)
    assert (load_image(path) == 77).all()


def test_sixteen_bit_is_scaled(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16)).save(path)
    assert (load_image(path) == 255).all()


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (12, 12), (10, 20, 30, 0)).save(path)
    assert load_image(path)[0, 0].tolist() == [10, 20, 30]


def test_record_and_str_sources(rgb_png: Path) -> None:
    record = FaceRecord(
        "folder/unsplit/face.png", "folder", "unsplit", rgb_png.parent, "face.png", "neutral"
    )
    assert np.array_equal(load_image(record), load_image(str(rgb_png)))


def test_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    assert _reason(path) == f"image file not found: {path}"


def test_directory(tmp_path: Path) -> None:
    assert "not a regular file" in _reason(tmp_path)


def test_unreadable_reported(rgb_png: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda *_: False)  # root can read a chmod 0 file
    assert _reason(rgb_png) == f"image file unreadable (permission denied): {rgb_png}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable(rgb_png: Path) -> None:
    rgb_png.chmod(0)
    try:
        reason = _reason(rgb_png)
    finally:
        rgb_png.chmod(0o644)
    assert "permission denied" in reason and str(rgb_png) in reason


def test_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    assert _reason(path) == f"empty image file (0 bytes): {path}"


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    assert _reason(path) == f"not an image (unrecognised format): {path}"


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated(rgb_png: Path, tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    Image.open(rgb_png).save(full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    reason = _reason(cut)
    assert reason.startswith("truncated or corrupt image data") and str(cut) in reason


def test_corrupt_data(rgb_png: Path, tmp_path: Path) -> None:
    data = bytearray(rgb_png.read_bytes())
    data[60:-20] = bytes(len(data) - 80)  # zero the compressed stream, keep header and end
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    assert "corrupt" in _reason(bad)


def test_too_small(tmp_path: Path) -> None:
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(path)
    assert _reason(path) == f"image too small (1x1 px, minimum side 8 px): {path}"


def test_min_side_option(rgb_png: Path) -> None:
    assert "minimum side 64 px" in _reason(rgb_png, min_side=64)


def test_decompression_bomb_from_header(tmp_path: Path) -> None:
    bomb = _png_header(tmp_path / "bomb.png", 12_000, 9_000)
    reason = _reason(bomb)
    assert reason.startswith("decompression bomb refused (12000x9000") and str(bomb) in reason


def test_decompression_bomb_beyond_pillow_limit(tmp_path: Path) -> None:
    bomb = _png_header(tmp_path / "huge.png", 40_000, 40_000)
    assert _reason(bomb).startswith("decompression bomb refused")


def test_max_pixels_option(rgb_png: Path) -> None:
    assert "> max_pixels 100" in _reason(rgb_png, max_pixels=100)


@pytest.fixture()
def pixel_table(tmp_path: Path) -> Path:
    path = tmp_path / "fer2013.csv"
    rows = [
        "emotion,pixels,Usage",
        "3," + " ".join(["10"] * 64) + ",Training",
        "",
        "0," + " ".join(str(i) for i in range(64)) + ",PublicTest",
        "1,1 2 3,PrivateTest",
        "2," + " ".join(["300"] * 64) + ",PrivateTest",
        "2,a b c d,PrivateTest",
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_pixel_rows(pixel_table: Path) -> None:
    assert (load_image(row_ref(str(pixel_table), 0)) == 10).all()
    second = load_image(row_ref(str(pixel_table), 1))  # the blank line is not a row
    assert second.shape == (8, 8, 3) and second[0, 1].tolist() == [1, 1, 1]
    record = FaceRecord(
        "fer2013/valid/fer2013.csv#row=1",
        "fer2013",
        "valid",
        pixel_table.parent,
        "fer2013.csv#row=1",
        "anger",
    )
    assert np.array_equal(load_image(record), second)


@pytest.mark.parametrize(
    ("row", "words"),
    [(2, "do not form a square"), (3, "outside 0-255"), (4, "not integers"), (9, "not in table")],
)
def test_bad_pixel_rows(pixel_table: Path, row: int, words: str) -> None:
    reason = _reason(row_ref(str(pixel_table), row))
    assert words in reason and f"{pixel_table}#row={row}" in reason


def test_pixel_row_of_missing_table(tmp_path: Path) -> None:
    assert _reason(f"{tmp_path}/fer2013.csv#row=0").startswith("image file not found")


def test_decode_pixels_small_side_rejected_by_loader(tmp_path: Path) -> None:
    assert decode_pixels("1 2 3 4").shape == (2, 2, 3)
    table = tmp_path / "t.csv"
    table.write_text("emotion,pixels\n0,1 2 3 4\n")
    assert "too small (2x2 px" in _reason(row_ref(str(table), 0))
