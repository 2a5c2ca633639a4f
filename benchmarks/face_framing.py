"""How the nano encoder's training crops are framed, and what a detector's margin costs it.

    .venv/bin/python benchmarks/face_framing.py            # ~26 min on 2 cores, no torch
    .venv/bin/python benchmarks/face_framing.py --no-detector   # sizes, scales, cuts: ~17 min

FER+ crops (FER2013's framing) are what the encoder learnt from; faces of full frames reach
it through the Haar detector (``engine.data.faces``) grown by a margin. Prints, on FER+ Test:

* per size (``--sizes``): the encoder's accuracy and UAR (face + mirror) on every crop shrunk
  to ``size`` px a side (area), as faces of low-resolution images reach it: it enlarges them
  (``engine.model.encoder.grey_face``);
* per scale (``--scales``): the encoder's accuracy and UAR (face + mirror) on every crop framed
  tighter (its central part, ``scale`` of its side) or looser (continued by reflection to
  ``scale`` of its side): how much a dataset framed unlike FER2013 costs it;
* per cut (``--cuts``): the same on every crop cut on one side (left, top) or on both (sides)
  to ``cut`` of its width or height, as a frame's edge clips a face box or a dataset frames its
  faces narrower: letterboxed as the encoder reads them (``grey_face``), and stretched to a
  square first, as it read them until 2026-12-03;
* ``haar_side``: the detector's box side over the FER+ crop's side (quantiles), each 48 px
  crop placed in a mid-grey canvas (24 px per side) so that no box is clipped by the border;
* per margin (``--margins``): the encoder's accuracy and UAR (face + mirror) on the faces
  found again in the crop continued by reflection (24 px per side, a stand-in for the context
  around a face in a full frame), against the crop itself: the faces the detector finds at the
  centre under every margin, the same faces for every row.

The margin that reproduces the training framing is ``(1 / median haar_side - 1) / 2``
(``engine.model.encoder.FACE_MARGIN``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from engine.data.datasets import read_dataset
from engine.data.faces import FaceFinder
from engine.data.images import load_image
from engine.evaluation.scoring import argmax_labels, classification_metrics
from engine.model.encoder import NANO_ENCODER, classify_faces, encoder_session
from engine.resources import shared_dir
from engine.types import Face, StageError

PAD = 24
#: How far (px) a found box's centre may lie from the canvas centre to count as the face.
CENTRED = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferplus", type=Path, default=shared_dir() / "data" / "ferplus")
    parser.add_argument("--split", default="test")
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.1, 0.2])
    parser.add_argument(
        "--scales", type=float, nargs="*", default=[0.8, 0.85, 0.9, 0.95, 1.0, 1.1, 1.2]
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[24, 32, 40])
    parser.add_argument("--cuts", type=float, nargs="*", default=[0.9, 0.8, 0.7])
    parser.add_argument("--no-detector", action="store_true", help="sizes, scales and cuts only")
    args = parser.parse_args(argv)
    records = read_dataset(f"ferplus:{args.ferplus}", args.split).records
    labels = [r.label for r in records]
    crops = [load_image(r) for r in records]
    session = encoder_session(NANO_ENCODER)
    for size in args.sizes:
        shrunk = [cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops]
        scores = classification_metrics(labels, argmax_labels(classify_faces(session, shrunk)))
        print(json.dumps({"size": size, "n": len(crops), **scores.headline()}))
    for scale in args.scales:
        predicted = argmax_labels(classify_faces(session, [_scaled(c, scale) for c in crops]))
        scores = classification_metrics(labels, predicted).headline()
        print(json.dumps({"scale": scale, "n": len(crops), **scores}))
    for cut in args.cuts:
        for side in ("left", "top", "sides"):
            cuts = [_cut(c, cut, side) for c in crops]
            for reading, faces in (("letterboxed", cuts), ("stretched", _stretched(cuts))):
                predicted = argmax_labels(classify_faces(session, faces))
                scores = classification_metrics(labels, predicted).headline()
                row = {"cut": cut, "side": side, "reading": reading, "n": len(crops)}
                print(json.dumps({**row, **scores}))
    if args.no_detector:
        return 0

    grey = [
        cv2.copyMakeBorder(c, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=(128,) * 3)
        for c in crops
    ]
    unpadded = FaceFinder(mode="detector", margin=0.0, pad=0.0)
    sides = [
        face.box[2] / crop.shape[1]
        for crop, face in zip(crops, _centred(grey, unpadded), strict=True)
        if face
    ]
    quantiles = np.quantile(sides, [0.1, 0.25, 0.5, 0.75, 0.9]).round(3).tolist()
    print(
        json.dumps(
            {
                "split": args.split,
                "faces": len(crops),
                "found": len(sides),
                "haar_side_q10_q25_q50_q75_q90": quantiles,
                "margin_of_the_crops": round((1 / quantiles[2] - 1) / 2, 3),
            }
        )
    )

    mirrored = [cv2.copyMakeBorder(c, PAD, PAD, PAD, PAD, cv2.BORDER_REFLECT_101) for c in crops]
    found = {m: _centred(mirrored, FaceFinder(mode="detector", margin=m)) for m in args.margins}
    common = [i for i in range(len(crops)) if all(found[m][i] is not None for m in args.margins)]
    truth = [labels[i] for i in common]
    rows = {"the crop itself": [crops[i] for i in common]}
    rows.update({f"margin {m:g}": [found[m][i].crop for i in common] for m in args.margins})
    for name, faces in rows.items():
        predicted = argmax_labels(classify_faces(session, faces))
        scores = classification_metrics(truth, predicted).headline()
        print(json.dumps({"framing": name, "n": len(common), **scores}))
    return 0


def _scaled(crop: np.ndarray, scale: float) -> np.ndarray:
    """``crop`` framed tighter (its central part, ``scale`` < 1 of its side) or looser
    (continued by reflection to ``scale`` > 1 of its side)."""
    side = crop.shape[0]
    if scale < 1:
        kept = round(side * scale)
        start = (side - kept) // 2
        return crop[start : start + kept, start : start + kept]
    pad = round(side * (scale - 1) / 2)
    return cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_REFLECT)


def _cut(crop: np.ndarray, cut: float, side: str) -> np.ndarray:
    """``crop`` with ``1 - cut`` of its width taken from the left or of its height from the top,
    or of its width taken evenly from both sides."""
    height, width = crop.shape[:2]
    if side == "top":
        return crop[height - round(height * cut) :]
    kept = round(width * cut)
    start = width - kept if side == "left" else (width - kept) // 2
    return crop[:, start : start + kept]


def _stretched(crops: list[np.ndarray]) -> list[np.ndarray]:
    """Each crop resized to a square of its longer side (bicubic)."""
    return [cv2.resize(c, (max(c.shape[:2]),) * 2, interpolation=cv2.INTER_CUBIC) for c in crops]


def _centred(canvases: list[np.ndarray], finder: FaceFinder) -> list[Face | None]:
    """Per canvas the face ``finder`` finds where its box is centred on the canvas (the face
    placed there), else None."""
    out = []
    for canvas in canvases:
        try:
            face = finder.find(canvas)
        except StageError:
            out.append(None)
            continue
        x, y, w, h = face.box
        middle = canvas.shape[1] / 2
        centred = abs(x + w / 2 - middle) <= CENTRED and abs(y + h / 2 - middle) <= CENTRED
        out.append(face if centred else None)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
