"""Distil the ``mesh`` AU head from the Face Landmarker blendshapes on FER+ (reproducible).

    .venv/bin/python scripts/train_mesh_head.py --workers 1

Runs the teacher (``face_landmarker.task`` blendshapes) and the student's in-wheel face mesh
on FER+ Train and Test faces (cached under ``.work/mesh_distil/``), trains the numpy MLP head,
writes ``engine/weights/mesh_au_head.npz`` and the model card ``MESH_AU_HEAD.md`` with the
per-AU Pearson r against the teacher on FER+ Test. Seeds are fixed and BLAS runs on one
thread, so a rerun gives the same weights.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.aus.blendshape_map import (  # noqa: E402
    BLENDSHAPE_NAMES,
    blendshapes_to_reading,
    mapped_aus,
    table_version,
    used_blendshapes,
)
from engine.aus.distil import Arrays, extract, shared_dir  # noqa: E402
from engine.aus.mesh import WEIGHTS_PATH, MeshAUHead, align, normalise_shape  # noqa: E402

HEAD_VERSION = "mesh-au-head-1"
CARD_PATH = WEIGHTS_PATH.parent / "MESH_AU_HEAD.md"
#: Blendshapes whose 99th percentile on the training faces is below this are not learnt: the
#: teacher leaves them at about 0 on FER+ (the head then outputs 0 for them, as the teacher).
MIN_P99 = 0.05


@dataclass(frozen=True)
class Config:
    """Training hyper-parameters (recorded in the model card)."""

    seed: int = 0
    components: int = 160
    hidden: tuple[int, ...] = (256, 128)
    epochs: int = 60
    batch: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.05


def mean_shape(points: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Generalised Procrustes mean of (n, 478, 3) shapes, kept in the image's axes."""
    reference = normalise_shape(normalise_shape(points).mean(axis=0))
    mean = reference
    for _ in range(iterations):
        aligned, _ = align(points, mean)
        mean = normalise_shape(aligned.mean(axis=0))
        mean, _ = align(mean, reference)
    return mean


def au_matrix(scores: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(n, n_aus) AU intensities of blendshape score rows via the table."""
    aus = mapped_aus()
    out = np.empty((len(scores), len(aus)))
    for i, row in enumerate(scores):
        intensities, _ = blendshapes_to_reading(dict(zip(names, row.tolist(), strict=True)))
        out[i] = [intensities[au] for au in aus]
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson r (NaN where a column is constant)."""
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    denom = np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=0) / denom


class MLP:
    """ReLU MLP with sigmoid outputs, trained with Adam on a per-output standardised MSE."""

    def __init__(self, sizes: list[int], rng: np.random.Generator):
        self.w = [rng.normal(0, np.sqrt(2.0 / m), (m, n)) for m, n in zip(sizes, sizes[1:])]
        self.b = [np.zeros(n) for n in sizes[1:]]

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        acts = [x]
        for w, b in zip(self.w[:-1], self.b[:-1], strict=True):
            acts.append(np.maximum(acts[-1] @ w + b, 0.0))
        acts.append(0.5 * (1.0 + np.tanh(0.5 * (acts[-1] @ self.w[-1] + self.b[-1]))))
        return acts

    def fit(self, x, y, cfg: Config, rng, x_val, y_val, inv_var) -> list[tuple[int, float]]:
        params = self.w + self.b
        m1 = [np.zeros_like(p) for p in params]
        m2 = [np.zeros_like(p) for p in params]
        steps_per_epoch = int(np.ceil(len(x) / cfg.batch))
        total, step, history = cfg.epochs * steps_per_epoch, 0, []
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x), cfg.batch):
                idx = order[start : start + cfg.batch]
                acts = self.forward(x[idx])
                out = acts[-1]
                delta = (out - y[idx]) * inv_var / (len(idx) * y.shape[1])
                grads_w, grads_b = [], []
                for layer in range(len(self.w) - 1, -1, -1):
                    grads_w.insert(0, acts[layer].T @ delta)
                    grads_b.insert(0, delta.sum(axis=0))
                    if layer:
                        delta = (delta @ self.w[layer].T) * (acts[layer] > 0)
                step += 1
                lr = cfg.lr * 0.5 * (1.0 + np.cos(np.pi * step / total))
                for i, (p, g) in enumerate(zip(params, grads_w + grads_b, strict=True)):
                    if i < len(self.w):
                        g = g + cfg.weight_decay * p
                    m1[i] = 0.9 * m1[i] + 0.1 * g
                    m2[i] = 0.999 * m2[i] + 0.001 * g * g
                    p -= lr * (m1[i] / (1 - 0.9**step)) / (np.sqrt(m2[i] / (1 - 0.999**step)) + 1e-8)
            if x_val is not None and (epoch + 1) % 10 == 0:
                val = float(np.mean(((self.forward(x_val)[-1] - y_val) ** 2) * inv_var))
                history.append((epoch + 1, val))
                print(f"epoch {epoch + 1}: validation standardised MSE {val:.4f}", flush=True)
        return history


def paired(arrays: Arrays) -> Arrays:
    keep = arrays.teacher_ok & arrays.student_ok
    return Arrays(*(getattr(arrays, f)[keep] for f in ("names", "blendshapes", "matrices",
                                                         "landmarks")))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferplus", type=Path, default=shared_dir() / "data" / "ferplus")
    parser.add_argument(
        "--teacher-model", type=Path, default=shared_dir() / "models" / "face_landmarker.task"
    )
    parser.add_argument("--cache", type=Path, default=REPO / ".work" / "mesh_distil")
    parser.add_argument("--limit", type=int, default=None, help="FER+ Train faces (default all)")
    parser.add_argument("--test-limit", type=int, default=None, help="FER+ Test faces")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=Config.epochs)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--card", type=Path, default=CARD_PATH)
    parser.add_argument("--extract-only", action="store_true")
    args = parser.parse_args(argv)
    cfg = Config(epochs=args.epochs)
    started = time.time()

    common = {"cache_root": args.cache, "teacher_model": args.teacher_model,
              "workers": args.workers}  # fmt: skip
    train_all = extract(args.ferplus, "train", limit=args.limit, seed=cfg.seed, **common)
    test_all = extract(args.ferplus, "test", limit=args.test_limit, seed=None, **common)
    if args.extract_only:
        return 0
    train, test = paired(train_all), paired(test_all)
    n_val = int(round(len(train.names) * cfg.val_fraction))
    fit = slice(0, len(train.names) - n_val)
    val = slice(len(train.names) - n_val, None)

    p99 = np.percentile(train.blendshapes[fit], 99, axis=0)
    outputs = tuple(n for n in used_blendshapes() if p99[BLENDSHAPE_NAMES.index(n)] >= MIN_P99)
    columns = [BLENDSHAPE_NAMES.index(n) for n in outputs]
    y_train = train.blendshapes[:, columns].astype(np.float64)

    shape = mean_shape(train.landmarks[fit].astype(np.float64))
    stub = MeshAUHead(shape, np.zeros(1), np.zeros((1, 1)), (), (), outputs, HEAD_VERSION)
    feats, _ = stub.features(train.landmarks.astype(np.float64))
    feature_mean = feats[fit].mean(axis=0)
    _, sv, vt = np.linalg.svd(feats[fit] - feature_mean, full_matrices=False)
    scale = sv[: cfg.components] / np.sqrt(len(feats[fit]) - 1)
    projection = vt[: cfg.components].T / scale
    z = (feats - feature_mean) @ projection
    inv_var = 1.0 / np.maximum(y_train[fit].var(axis=0), 1e-3)

    rng = np.random.default_rng(cfg.seed)
    mlp = MLP([cfg.components, *cfg.hidden, len(outputs)], rng)
    history = mlp.fit(z[fit], y_train[fit], cfg, rng, z[val], y_train[val], inv_var)

    np.savez_compressed(
        args.out,
        version=np.array(HEAD_VERSION),
        n_layers=np.array(len(mlp.w)),
        outputs=np.array(outputs),
        mean_shape=shape.astype(np.float32),
        feature_mean=feature_mean.astype(np.float32),
        projection=projection.astype(np.float32),
        **{f"W{i}": w.astype(np.float32) for i, w in enumerate(mlp.w)},
        **{f"b{i}": b.astype(np.float32) for i, b in enumerate(mlp.b)},
    )
    head = MeshAUHead.load(args.out)
    test_feats, _ = head.features(test.landmarks.astype(np.float64))
    student = au_matrix(head.predict_features(test_feats), outputs)
    teacher = au_matrix(test.blendshapes.astype(np.float64), BLENDSHAPE_NAMES)
    r = pearson(student, teacher)
    for au, value, t_mean, t_std in zip(mapped_aus(), r, teacher.mean(0), teacher.std(0),
                                        strict=True):  # fmt: skip
        print(f"{au}: r={value:.3f} teacher mean={t_mean:.2f} sd={t_std:.2f}")
    print(f"mean r = {np.nanmean(r):.3f}; {time.time() - started:.0f} s; {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
