"""Write ``tests/data/fhog_reference.npz``: synthetic images and the real dlib's FHOG of each.

The dlib output comes from ``scripts/fhog_reference.cpp`` (its header says how to build it against
the dlib 20.0.1 source distribution). The images are deterministic (fixed seeds), so rerunning
this reproduces the fixture:

    python scripts/make_fhog_fixtures.py --harness /tmp/fhog_reference

Each case ``NAME`` is stored as ``NAME/image`` (uint8, (H, W) gray or (H, W, 3) BGR),
``NAME/cell_size`` and ``NAME/hog`` (float32 (rows, cols, 31), dlib's ``hog[row][col](o)``).
The script ends by printing the largest difference of ``engine.aus.openface.fhog`` from dlib.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from engine.aus.openface.fhog import fhog

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "fhog_reference.npz"


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates relative to the image centre."""
    y, x = np.mgrid[:height, :width].astype(np.float64)
    return y - (height - 1) / 2, x - (width - 1) / 2


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _step_edge(size: int, degrees: float) -> np.ndarray:
    """Dark/bright halves split by a line through the centre whose normal is at ``degrees``."""
    y, x = _grid(size, size)
    angle = np.deg2rad(degrees)
    return _to_uint8(np.where(np.cos(angle) * x + np.sin(angle) * y > 0, 200, 40))


def _noise(seed: int, shape: tuple[int, ...], low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, shape, dtype=np.uint8)


def cases() -> dict[str, tuple[np.ndarray, int]]:
    """Name -> (image, cell size) of every fixture case."""
    y, x = _grid(112, 112)
    rng = np.random.default_rng(7)
    smooth_colour = np.stack(
        [
            128 + 90 * np.sin(x / 9.0) * np.cos(y / 13.0),
            128 + 100 * np.tanh((x + y) / 25.0),
            128 + 80 * np.cos(np.hypot(x, y) / 6.0),
        ],
        axis=-1,
    )
    radius_y, radius_x = _grid(64, 64)
    images: dict[str, tuple[np.ndarray, int]] = {
        "ramp": (_to_uint8(60 + 0.9 * x + 0.4 * y), 8),
        "checkerboard": (
            _to_uint8(np.where((np.arange(112)[:, None] // 7 + np.arange(112)) % 2, 210, 30)),
            8,
        ),
        "noise": (_noise(1, (112, 112)), 8),
        "disk": (_to_uint8(np.where(np.hypot(radius_x, radius_y) < 20, 220, 35)), 8),
        "colour": (_to_uint8(smooth_colour + rng.normal(0, 6, smooth_colour.shape)), 8),
        # few grey levels per channel: many pixels where two channels have equal gradient energy
        "colour_ties": (_noise(2, (112, 112, 3), 100, 104), 8),
        "odd_gray": (_noise(3, (50, 37)), 8),
        "odd_colour": (_noise(4, (37, 50, 3)), 8),
        # 20 / 8 = 2.5 cells rounds up to 3 and 28 / 8 = 3.5 to 4: one row of 2 cells
        "round_half_up": (_noise(5, (20, 28)), 8),
        "cell_size_4": (_noise(6, (40, 36)), 4),
        "cell_size_6": (_noise(8, (50, 37, 3)), 6),
        "cell_size_1": (_noise(9, (12, 10)), 1),
    }
    for degrees in (0, 30, 45, 90, 135, 200):
        images[f"edge_{degrees}"] = (_step_edge(64, degrees), 8)
    return images


def _write_pnm(path: Path, image: np.ndarray) -> None:
    """Binary PGM for gray, PPM (R G B) for a BGR image."""
    height, width = image.shape[:2]
    magic, data = ("P5", image) if image.ndim == 2 else ("P6", image[..., ::-1])
    path.write_bytes(
        f"{magic}\n{width} {height}\n255\n".encode() + np.ascontiguousarray(data).tobytes()
    )


def dlib_fhog(harness: Path, image: np.ndarray, cell_size: int, work: Path) -> np.ndarray:
    """Run the C++ harness on one image; its float32 (rows, cols, 31) output."""
    source, target = work / "image.pnm", work / "hog.bin"
    _write_pnm(source, image)
    subprocess.run([str(harness), str(cell_size), str(source), str(target)], check=True)
    raw = target.read_bytes()
    rows, cols = np.frombuffer(raw[:8], dtype="<i4")
    return np.frombuffer(raw[8:], dtype="<f4").reshape(rows, cols, 31).copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", type=Path, default=Path("/tmp/fhog_reference"))
    parser.add_argument("--out", type=Path, default=FIXTURE)
    args = parser.parse_args()

    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (image, cell_size) in cases().items():
            reference = dlib_fhog(args.harness, image, cell_size, Path(tmp))
            ours = fhog(image, cell_size)
            error = float(np.abs(ours - reference).max()) if ours.shape == reference.shape else None
            print(
                f"{name:14s} {str(image.shape):14s} cell {cell_size}  hog {reference.shape}  "
                f"max |ours - dlib| {error}"
            )
            arrays[f"{name}/image"] = image
            arrays[f"{name}/cell_size"] = np.array(cell_size)
            arrays[f"{name}/hog"] = reference
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
