"""68-point iBUG landmarks on FER+ Test faces: dlib's predictor against the mapped face mesh.

    .venv/bin/python benchmarks/landmarks68.py [--n 600] [--seed 0] [--boxes]

Draws ``--n`` Test faces with ``--seed``, runs ``DlibLandmarks`` and ``MeshLandmarks`` on each
48-pixel crop as loaded by the pipeline (the whole image is the face box) and prints, per
source, the share of faces found and ms per face, then the normalised mean error (NME: mean
point distance / dlib's outer-eye-corner distance) between the two per region, over the faces
both read, also split by dlib's detector score (0 is dlib's own threshold).

``--boxes`` compares the boxes given to dlib's predictor: the detector's (at several score
thresholds), the best of a grid of fixed boxes (fractions of the crop; chosen on these faces,
so flattered) and the whole crop. Two references: dlib's points from confident detector boxes
(score >= 0), and, independent of dlib and of the mapping table, raw mesh vertices at
well-defined points (eye and mouth corners, lip midpoints, chin).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np

from engine.aus.mesh import open_face_mesh
from engine.aus.openface.landmarks import (
    REGIONS,
    DlibLandmarks,
    MeshLandmarks,
    mesh_points,
    normalised_error,
)
from engine.data.images import load_image
from engine.resources import shared_dir
from scripts._distil import FERPLUS_SPLITS, ferplus_names

#: iBUG point -> the mesh vertex at the same, well-defined place.
ANCHORS = {
    36: 33,
    39: 133,
    42: 362,
    45: 263,
    48: 61,
    54: 291,
    51: 0,
    57: 17,
    62: 13,
    66: 14,
    8: 152,
}
#: Detector score thresholds compared by ``--boxes`` (DlibLandmarks' default is -0.5).
THRESHOLDS = (0.0, -0.25, -0.5, -0.75)
#: Fixed boxes tried by ``--boxes``: left = top offsets, top offsets and sides, crop fractions.
GRID = ((0.0, 0.04, 0.08), (0.04, 0.08, 0.12, 0.16), (0.8, 0.85, 0.9, 0.95))


def run(source, images: list[np.ndarray]) -> tuple[list, float]:
    """``source.detect`` (dlib) or ``source(image)`` on every image, and the ms per image."""
    call = getattr(source, "detect", source)
    start = time.perf_counter()
    results = [call(image) for image in images]
    return results, 1000 * (time.perf_counter() - start) / len(images)


def nme_row(label: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> str:
    """NME per region, mean and median, of (points, reference) pairs."""
    if not pairs:
        return f"{label:<22} {0:>5}"
    cells = [np.mean([normalised_error(p, r, i) for p, r in pairs]) for i in REGIONS.values()]
    whole = [normalised_error(p, r) for p, r in pairs]
    figures = " ".join(f"{c:>6.4f}" for c in [*cells, np.mean(whole), np.median(whole)])
    return f"{label:<22} {len(pairs):>5} {figures}"


def anchor_error(points: np.ndarray, mesh: np.ndarray) -> float:
    """NME of iBUG points against the mesh's vertices at the same places (mesh eye corners)."""
    ibug, vertices = list(ANCHORS), list(ANCHORS.values())
    distance = np.linalg.norm(points[ibug] - mesh[vertices], axis=1).mean()
    return float(distance / np.linalg.norm(mesh[263] - mesh[33]))


def versus(found: list, reference: list, confident: list[bool]) -> list[float]:
    """NME of the ``found`` points against the ``reference`` ones on the confident faces."""
    pairs = zip(found, reference, confident, strict=True)
    return [normalised_error(f[0], r[0]) for f, r, c in pairs if c]


def compare_boxes(images: list[np.ndarray], reference: list) -> None:
    """The ``--boxes`` table (``reference``: dlib's detect() results at the default settings)."""
    face_mesh = open_face_mesh()
    meshes = [mesh_points(face_mesh, image) for image in images]
    face_mesh.close()
    confident = [r is not None and r[1] >= 0 for r in reference]
    conventions: dict[str, list] = {}
    for threshold in THRESHOLDS:
        conventions[f"detector, score >= {threshold:g}"] = run(
            DlibLandmarks(min_score=threshold), images
        )[0]
    best = None
    for offset, top, side in product(*GRID):
        box = (offset, top, offset + side, min(1.0, top + side))
        found = run(DlibLandmarks(fixed_box=box), images)[0]
        error = np.mean(versus(found, reference, confident))
        if best is None or error < best[0]:
            best = (error, box, found)
    conventions["fixed box " + " ".join(f"{v:.2f}" for v in best[1])] = best[2]
    conventions["whole crop"] = run(DlibLandmarks(fixed_box=(0.0, 0.0, 1.0, 1.0)), images)[0]
    print(
        f"\ndlib predictor boxes on {len(images)} faces: {sum(confident)} with a detection "
        "score >= 0 (A), the others (B); faces found, NME vs dlib on detector boxes (A), "
        "NME vs mesh anchor vertices (A, B)"
    )
    print(f"{'box':<32} {'found':>6} {'vs dlib A':>10} {'anchors A':>10} {'anchors B':>10}")
    for name, found in conventions.items():
        anchors: dict[bool, list[float]] = {True: [], False: []}
        for f, m, c in zip(found, meshes, confident, strict=True):
            if f is not None and m is not None:
                anchors[c].append(anchor_error(f[0], m))
        share = np.mean([f is not None for f in found])
        cells = [
            np.mean(v) if v else np.nan
            for v in (versus(found, reference, confident), anchors[True], anchors[False])
        ]
        print(f"{name:<32} {share:>6.1%} " + " ".join(f"{c:>10.4f}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferplus", type=Path, default=shared_dir() / "data" / "ferplus")
    parser.add_argument("--n", type=int, default=600, help="Test faces drawn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--boxes", action="store_true", help="also compare dlib's boxes")
    args = parser.parse_args(argv)
    names = random.Random(args.seed).sample(ferplus_names(args.ferplus, "test"), args.n)
    images = [load_image(args.ferplus / FERPLUS_SPLITS["test"] / name) for name in names]

    dlib, mesh = DlibLandmarks(), MeshLandmarks()
    dlib_found, dlib_ms = run(dlib, images)
    mesh_found, mesh_ms = run(mesh, images)
    mesh.close()
    print(f"{len(images)} FER+ Test faces (seed {args.seed}), 48 px crops, box = whole image")
    print(f"{'source':<8} {'found':>7} {'ms/face':>8}")
    for name, found, ms in (("dlib", dlib_found, dlib_ms), ("mesh", mesh_found, mesh_ms)):
        print(f"{name:<8} {np.mean([f is not None for f in found]):>7.1%} {ms:>8.1f}")

    both = [
        (m, d)
        for m, d in zip(mesh_found, dlib_found, strict=True)
        if m is not None and d is not None
    ]
    print("\nNME of mesh vs dlib (mean distance / dlib's outer-eye-corner distance)")
    print(f"{'faces':<22} {'n':>5} " + " ".join(f"{r:>6}" for r in [*REGIONS, "mean", "median"]))
    print(nme_row("both found", [(m, d[0]) for m, d in both]))
    print(nme_row("dlib score >= 0", [(m, d[0]) for m, d in both if d[1] >= 0]))
    print(nme_row("dlib score < 0", [(m, d[0]) for m, d in both if d[1] < 0]))
    if args.boxes:
        compare_boxes(images, dlib_found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
