"""Teacher/student arrays for distilling the ``mesh`` AU head from the ``blendshapes`` back end.

Used by ``scripts/train_mesh_head.py``, ``scripts/calibrate_blendshape_table.py``,
``scripts/fit_mesh_to_ibug68.py``, ``benchmarks/mesh_agreement.py`` and
``benchmarks/landmarks68.py`` (importable as ``scripts._distil`` because the editable install
puts the checkout on ``sys.path``): FER+ faces are
put on the shared canvas, the Face Landmarker (teacher) gives 52 blendshapes and its
transformation matrix, the in-wheel face mesh (student input) gives 478 landmarks. Results
are cached per chunk of faces as ``.npz`` so that interrupted or larger runs reuse them.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.aus.blendshape_map import BLENDSHAPE_NAMES
from engine.aus.canvas import read_rgb, to_canvas

#: Bump when the preprocessing or the stored arrays change, to invalidate caches.
CACHE_VERSION = "v1"
CHUNK = 1000
FERPLUS_SPLITS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}


def ferplus_names(root: Path, split: str) -> list[str]:
    """Image names of a FER+ split in ``label.csv`` order (sorted)."""
    label_csv = root / FERPLUS_SPLITS[split] / "label.csv"
    if not label_csv.is_file():
        raise FileNotFoundError(f"FER+ label file {label_csv} is missing")
    with label_csv.open(newline="") as fh:
        return sorted(row[0] for row in csv.reader(fh) if row)


def split_order(names: list[str], seed: int | None) -> list[str]:
    """``names`` in a seeded random order (``seed=None`` keeps the order)."""
    if seed is None:
        return list(names)
    order = np.random.default_rng(seed).permutation(len(names))
    return [names[i] for i in order]


@dataclass(frozen=True)
class Arrays:
    """Per-face arrays; rows where a model found no face hold NaN."""

    names: np.ndarray  # (n,) str
    blendshapes: np.ndarray  # (n, 52) teacher scores
    matrices: np.ndarray  # (n, 4, 4) teacher transformation matrices
    landmarks: np.ndarray  # (n, 478, 3) student face mesh, canvas pixels

    @property
    def teacher_ok(self) -> np.ndarray:
        return ~np.isnan(self.blendshapes[:, 0])

    @property
    def student_ok(self) -> np.ndarray:
        return ~np.isnan(self.landmarks[:, 0, 0])

    @staticmethod
    def concat(parts: list[Arrays]) -> Arrays:
        return Arrays(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("names", "blendshapes", "matrices", "landmarks")
_WORKER: dict[str, object] = {}


def _init_worker(teacher_model: str) -> None:
    from engine.aus.blendshapes import open_landmarker
    from engine.aus.mesh import open_face_mesh

    _WORKER["teacher"] = open_landmarker(Path(teacher_model))
    _WORKER["student"] = open_face_mesh()


def _extract_chunk(job: tuple[str, list[str], str]) -> str:
    from engine.aus.blendshapes import run_landmarker
    from engine.aus.mesh import N_LANDMARKS, run_face_mesh

    folder, names, out_path = job
    n = len(names)
    blendshapes = np.full((n, len(BLENDSHAPE_NAMES)), np.nan, dtype=np.float32)
    matrices = np.full((n, 4, 4), np.nan, dtype=np.float32)
    landmarks = np.full((n, N_LANDMARKS, 3), np.nan, dtype=np.float32)
    for i, name in enumerate(names):
        canvas = to_canvas(read_rgb(Path(folder) / name))
        teacher = run_landmarker(_WORKER["teacher"], canvas)
        if teacher is not None:
            blendshapes[i] = [teacher.blendshapes.get(b, 0.0) for b in BLENDSHAPE_NAMES]
            matrices[i] = teacher.matrix
        points = run_face_mesh(_WORKER["student"], canvas)
        if points is not None:
            landmarks[i] = points
    tmp = Path(out_path).with_suffix(".tmp.npz")
    np.savez(
        tmp, names=np.array(names), blendshapes=blendshapes, matrices=matrices, landmarks=landmarks
    )
    os.replace(tmp, out_path)
    return out_path


def _load_chunk(path: Path, names: list[str]) -> Arrays | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        if list(data["names"]) != names:
            return None
        return Arrays(*(data[f] for f in _FIELDS))


def _report(split: str, paths: Iterator[str], total: int, progress: bool) -> None:
    for done, path in enumerate(paths, start=1):
        if progress:
            print(f"[extract {split}] {done}/{total} chunks -> {path}", flush=True)


def extract(
    ferplus_root: Path,
    split: str,
    cache_root: Path,
    teacher_model: Path,
    limit: int | None = None,
    seed: int | None = None,
    workers: int = 1,
    progress: bool = True,
) -> Arrays:
    """Teacher and student arrays for the first ``limit`` faces of ``split`` (seeded order)."""
    names = split_order(ferplus_names(ferplus_root, split), seed)[:limit]
    folder = ferplus_root / FERPLUS_SPLITS[split]
    cache = cache_root / f"{CACHE_VERSION}-{split}-seed{seed}"
    cache.mkdir(parents=True, exist_ok=True)
    chunks = [names[i : i + CHUNK] for i in range(0, len(names), CHUNK)]
    paths = [cache / f"chunk{i:04d}.npz" for i in range(len(chunks))]
    todo = [
        (str(folder), chunk, str(path))
        for chunk, path in zip(chunks, paths, strict=True)
        if _load_chunk(path, chunk) is None
    ]
    if todo and workers <= 1:
        _init_worker(str(teacher_model))
        done_paths: Iterator[str] = map(_extract_chunk, todo)
        _report(split, done_paths, len(todo), progress)
    elif todo:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, _init_worker, (str(teacher_model),)) as pool:
            _report(split, pool.imap_unordered(_extract_chunk, todo), len(todo), progress)
    parts = [_load_chunk(path, chunk) for chunk, path in zip(chunks, paths, strict=True)]
    return Arrays.concat([p for p in parts if p is not None])
