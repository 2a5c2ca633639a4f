"""Fit ``data/mesh_to_ibug68.csv``: each iBUG-68 point as a sparse mix of face-mesh vertices.

Teacher: dlib's 68-point predictor (``DlibLandmarks`` with ``min_score`` 0, i.e. confident
detections only) on ``--n`` FER+ Train faces drawn with ``--seed``; input: MediaPipe's 478 mesh
points of the same faces (``engine.aus.openface.landmarks.mesh_points``). Coordinates are
centred on the mesh centroid and divided by the teacher's outer-eye-corner distance; the
training faces are also used mirrored (x negated, left/right points and vertices swapped).

For each iBUG point, non-negative weights summing to 1 (a heavily weighted extra row) of the
``--candidates`` vertices nearest to it on the mean shape are fitted by least squares and
pruned to ``--max-vertices`` (see ``fit_point``); the table is averaged with its mirror image,
so it is left/right symmetric. Faces whose error is above the ``--keep`` quantile (teacher
failures) are dropped and the fit is repeated once. A held-out fifth of the faces gives the
printed figures: normalised mean error per region against dlib, for several vertex budgets.

    .venv/bin/python scripts/fit_mesh_to_ibug68.py [--n 3000] [--seed 0] [--dry-run]
"""

from __future__ import annotations

import argparse
import io
import random
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment, nnls  # scipy: dev extra (scikit-image)

from engine.aus.mesh import MeshAUHead, open_face_mesh
from engine.aus.openface.landmarks import (
    MAPPING_FILE,
    N_IBUG,
    OUTER_EYE_CORNERS,
    REGIONS,
    DlibLandmarks,
    mesh_points,
)
from engine.data.images import load_image
from engine.resources import data_dir, shared_dir
from scripts._distil import FERPLUS_SPLITS, ferplus_names

#: The iBUG-68 point that each point becomes in the mirrored face.
IBUG_MIRROR = np.array(
    [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)
SUM_TO_ONE_WEIGHT = 1e3
BUDGETS = (1, 2, 3, 4, 6)
#: Smaller weights (numerical noise of mirrored fits) are dropped from the table.
MIN_WEIGHT = 1e-6


def collect(ferplus: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Teacher (m, 68, 2) and mesh (m, 478, 2) points of the sampled faces both sources read."""
    names = random.Random(seed).sample(ferplus_names(ferplus, "train"), n)
    teacher, student = DlibLandmarks(min_score=0.0), open_face_mesh()
    ibug, mesh = [], []
    for name in names:
        image = load_image(ferplus / FERPLUS_SPLITS["train"] / name)
        points, points478 = teacher(image), mesh_points(student, image)
        if points is not None and points478 is not None:
            ibug.append(points)
            mesh.append(points478)
    student.close()
    return np.array(ibug), np.array(mesh), len(names)


def normalise(ibug: np.ndarray, mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both centred on the mesh centroid and scaled by the teacher's inter-ocular distance."""
    left, right = OUTER_EYE_CORNERS
    scale = np.linalg.norm(ibug[:, right] - ibug[:, left], axis=-1)[:, None, None]
    centre = mesh.mean(axis=1, keepdims=True)
    return (ibug - centre) / scale, (mesh - centre) / scale


def mesh_mirror(shape: np.ndarray) -> np.ndarray:
    """Each mesh vertex's left/right partner: the best one-to-one matching of the (478, 3) mean
    shape to its mirror image, which is an involution (the head's nearest-neighbour pairs are
    not quite)."""
    cost = ((shape[:, None] * np.array([-1.0, 1.0, 1.0]) - shape[None]) ** 2).sum(axis=-1)
    pairs = linear_sum_assignment(cost)[1]
    if not np.array_equal(pairs[pairs], np.arange(len(pairs))):
        raise ValueError("the mean shape's mirror matching is not a set of pairs")
    return pairs


def mirrored(ibug: np.ndarray, mesh: np.ndarray, pairs: np.ndarray):
    """The faces mirrored: x negated, left/right points and vertices swapped."""
    flip = np.array([-1.0, 1.0])
    return (ibug * flip)[:, IBUG_MIRROR], (mesh * flip)[:, pairs]


def fit_point(mesh: np.ndarray, target: np.ndarray, candidates: np.ndarray, budget: int):
    """(vertices, weights) of one iBUG point from ``budget`` of the ``candidates`` vertices.

    Budgets of 1 and 2 are searched exhaustively; larger ones start from the NNLS solution on
    all candidates and drop, one at a time, the vertex whose loss raises the residual least.
    """
    columns = mesh[:, candidates].transpose(0, 2, 1).reshape(-1, len(candidates))
    system = np.column_stack([columns, target.reshape(-1)])
    system = np.vstack([system, np.full(len(candidates) + 1, SUM_TO_ONE_WEIGHT)])
    r = np.linalg.qr(system, mode="r")  # same least-squares problem, (k + 1) rows

    def residual(keep) -> float:
        return nnls(r[:, list(keep)], r[:, -1])[1]

    if budget <= 2:
        keep = np.array(min(combinations(range(len(candidates)), budget), key=residual))
    else:
        weights, _ = nnls(r[:, :-1], r[:, -1])
        keep = np.flatnonzero(weights)
        while len(keep) > budget:
            losses = [residual(np.delete(keep, i)) for i in range(len(keep))]
            keep = np.delete(keep, int(np.argmin(losses)))
    weights, _ = nnls(r[:, keep], r[:, -1])
    return candidates[keep], weights / weights.sum()


def fit_table(ibug: np.ndarray, mesh: np.ndarray, n_candidates: int, budget: int) -> np.ndarray:
    """The (68, 478) weight table fitted on normalised faces."""
    mean_mesh, mean_ibug = mesh.mean(axis=0), ibug.mean(axis=0)
    table = np.zeros((N_IBUG, mesh.shape[1]))
    for point in range(N_IBUG):
        distance = np.linalg.norm(mean_mesh - mean_ibug[point], axis=1)
        candidates = np.argsort(distance)[:n_candidates]
        vertices, weights = fit_point(mesh, ibug[:, point], candidates, budget)
        table[point, vertices] = weights
    return table


def symmetrised(table: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The table averaged with its mirror image: a no-op for left/right points (their fits are
    mirror images), while a midline point's sparse fit is averaged with its mirror fit (which
    may double its vertices and cannot raise its error on the mirrored training set)."""
    average = 0.5 * (table + table[IBUG_MIRROR][:, pairs])
    return np.where(average > MIN_WEIGHT, average, 0.0)


def errors(table: np.ndarray, ibug: np.ndarray, mesh: np.ndarray) -> np.ndarray:
    """(m, 68) point errors over inter-ocular distance (inputs already normalised)."""
    return np.linalg.norm(np.einsum("pv,mvc->mpc", table, mesh) - ibug, axis=-1)


def region_row(point_errors: np.ndarray) -> str:
    cells = [f"{point_errors[:, list(r)].mean():.4f}" for r in REGIONS.values()]
    per_face = point_errors.mean(axis=1)
    figures = [*cells, f"{per_face.mean():.4f}", f"{np.median(per_face):.4f}"]
    return " ".join(f"{c:>7}" for c in figures)


def table_csv(table: np.ndarray) -> str:
    """CSV text (ibug, vertex, weight), weights to 6 decimals summing exactly to 1 per point."""
    out = io.StringIO()
    out.write("ibug,vertex,weight\n")
    for point, row in enumerate(table):
        vertices = np.flatnonzero(row)[np.argsort(-row[np.flatnonzero(row)])]
        micro = np.round(row[vertices] * 1e6).astype(int)
        micro[0] += 1_000_000 - micro.sum()
        for vertex, weight in zip(vertices, micro, strict=True):
            out.write(f"{point},{vertex},{weight / 1e6:.6f}\n")
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ferplus", type=Path, default=shared_dir() / "data" / "ferplus")
    parser.add_argument("--n", type=int, default=3000, help="FER+ Train faces sampled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--candidates", type=int, default=30, help="nearest vertices tried")
    parser.add_argument("--max-vertices", type=int, default=4, help="vertices per iBUG point")
    parser.add_argument("--keep", type=float, default=0.95, help="quantile of faces refitted")
    parser.add_argument("--out", type=Path, default=data_dir() / MAPPING_FILE)
    parser.add_argument("--dry-run", action="store_true", help="print figures, write nothing")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    ibug, mesh, n = collect(args.ferplus, args.n, args.seed)
    print(
        f"{n} FER+ Train faces, {len(ibug)} read by both dlib (score >= 0) and the mesh "
        f"({time.perf_counter() - start:.0f} s)"
    )
    ibug, mesh = normalise(ibug, mesh)
    order = np.random.default_rng(args.seed).permutation(len(ibug))
    held = order[: len(order) // 5]
    train = order[len(order) // 5 :]
    pairs = mesh_mirror(MeshAUHead.load().mean_shape)
    flipped = mirrored(ibug[train], mesh[train], pairs)
    fit_ibug = np.concatenate([ibug[train], flipped[0]])
    fit_mesh = np.concatenate([mesh[train], flipped[1]])

    print(f"held-out NME vs dlib ({len(held)} faces; fit on {len(train)} + mirrored)")
    print("vertices " + " ".join(f"{r:>7}" for r in [*REGIONS, "mean", "median"]))
    for budget in sorted({*BUDGETS, args.max_vertices}):
        table = fit_table(fit_ibug, fit_mesh, args.candidates, budget)
        per_face = errors(table, fit_ibug, fit_mesh).mean(axis=1)
        kept = per_face <= np.quantile(per_face, args.keep)
        table = symmetrised(
            fit_table(fit_ibug[kept], fit_mesh[kept], args.candidates, budget), pairs
        )
        print(f"{budget:>8} " + region_row(errors(table, ibug[held], mesh[held])))
        if budget == args.max_vertices:
            chosen = table
    print(
        f"table: {args.max_vertices} vertices per point ({np.count_nonzero(chosen, axis=1).max()}"
        f" at most on the midline), {np.count_nonzero(chosen)} weights; refitted on the best "
        f"{args.keep:.0%} of faces"
    )
    if args.dry_run:
        return
    args.out.write_text(table_csv(chosen))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
