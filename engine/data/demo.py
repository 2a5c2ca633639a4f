"""A small labelled demo dataset that is available offline, in the ``folder:`` layout.

Sources: scikit-image's bundled ``astronaut`` (Eileen Collins, NASA, public domain; smiling ->
happiness) and ``camera`` (the cameraman, neutral) photos, which need the face detector, plus —
when the FER+ data is beside the checkout (``../shared``) — a few test faces per class.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from engine.types import EMOTIONS


def build_demo_dataset(target: Path, ferplus_root: Path | None = None, per_class: int = 4) -> Path:
    """Write the demo dataset under ``target`` (``<class>/<name>``) and return ``target``."""
    target = Path(target)
    try:
        from skimage import data as skdata
    except ImportError as exc:
        raise ImportError("the demo needs scikit-image: pip install 'expllm[demo]'") from exc
    photos = {
        "happiness": ("astronaut", skdata.astronaut()),
        "neutral": ("camera", skdata.camera()),
    }
    for label, (name, image) in photos.items():
        _write(target / label / f"skimage-{name}.png", image)
    if ferplus_root is not None and (ferplus_root / "FER2013Test" / "label.csv").exists():
        taken = dict.fromkeys(EMOTIONS, 0)
        with (ferplus_root / "FER2013Test" / "label.csv").open(newline="") as fh:
            for row in csv.reader(fh):
                votes = [int(v) for v in row[2:12]]
                best = max(votes)
                if votes.count(best) > 1 or votes.index(best) >= len(EMOTIONS):
                    continue
                label = EMOTIONS[votes.index(best)]
                if taken[label] >= per_class:
                    continue
                source = ferplus_root / "FER2013Test" / row[0]
                if source.exists():
                    _write(target / label / f"ferplus-{row[0]}", cv2.imread(str(source))[..., ::-1])
                    taken[label] += 1
    return target


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write demo image {path}")
