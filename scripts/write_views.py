"""Write a FER+ folder whose faces are augmented views: one view of each face of one split.

The nano ExpLLM's LM learns to read the face from the encoder's features; on the very faces the
encoder was trained on those features are more confident than on any new face (the encoder head
is right on 92.9 % of FER+ Train faces against 87 % of Valid ones), so a readout learnt there
trusts them too much ("Does the LM read the face?" in ``engine/weights/EXPLLM_NANO.md``). A view
through the encoder's wide training augmentation (``scripts/train_nano_encoder.py``'s ``augment``:
rotation +-20 deg, scale 0.75-1.25, shift, flip, contrast and brightness, an erased patch; seeded)
looks like a new face to it (the head: 87.9 % on such views). The folder keeps FER+'s layout,
names and ``label.csv`` (votes), so the Exp-CoT flow runs on it as on FER+ and its records carry
CoTs faithful to the AUs measured on each view:

    python scripts/write_views.py --split train --seed 0 --out runs/ferplus-views
    expllm exp-cot ferplus:runs/ferplus-views --split train --out runs/views-train --workers 2

Needs torch (``pip install 'expllm[train]'``). The views are FER+'s faces, under FER+'s licence.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np

from engine.data.datasets import label_maps
from engine.model.encoder import grey_face
from engine.resources import shared_dir

CHUNK = 2048


def write_views(ferplus: Path, split: str, seed: int, out: Path) -> int:
    """Write one view of every face listed in ``split``'s ``label.csv`` to ``out``; returns
    how many."""
    import cv2
    import torch

    folders = label_maps()["datasets"]["ferplus"]["splits"]
    folder = next((name for name, key in folders.items() if key == split), None)
    if folder is None:
        raise ValueError(f"unknown FER+ split {split!r} (one of {sorted(folders.values())})")
    source, target = ferplus / folder, out / folder
    labels = source / "label.csv"
    if not labels.is_file():
        raise FileNotFoundError(f"{labels}: no FER+ label file")
    with labels.open(newline="", encoding="utf-8") as handle:
        names = [row[0] for row in csv.reader(handle) if row]
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(labels, target / "label.csv")
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, len(names), CHUNK):
        chunk = names[start : start + CHUNK]
        views = views_of(np.stack([_grey48(source / name) for name in chunk]), generator)
        for name, view in zip(chunk, views, strict=True):
            cv2.imwrite(str(target / name), view)
    return len(names)


def views_of(grey: np.ndarray, generator) -> np.ndarray:
    """One view of each uint8 face ``[N, 48, 48]`` through the encoder's wide training
    augmentation, drawn from the torch ``generator``; uint8 ``[N, 48, 48]``."""
    import torch

    from scripts.train_nano_encoder import augment

    batch = torch.from_numpy(grey).float().div(255).unsqueeze(1)
    views = augment(batch, generator, wide=True).squeeze(1).numpy()
    return np.round(views * 255).astype(np.uint8)


def _grey48(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return grey_face(image)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferplus", type=Path, default=shared_dir() / "data" / "ferplus")
    parser.add_argument("--split", default="train")
    parser.add_argument("--seed", type=int, default=0, help="draws the views")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    count = write_views(args.ferplus, args.split, args.seed, args.out)
    print(f"wrote {count} views of FER+ {args.split} to {args.out} (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
