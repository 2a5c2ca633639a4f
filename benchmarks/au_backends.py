"""AU back ends side by side on one dataset split, in one run: speed, label support, AU quality.

    python benchmarks/au_backends.py [--spec ferplus:../shared/data/ferplus] [--split test]
        [--backends mesh openface fused] [--workers 2] [--out runs/bench-aus] [--limit N]

For each back end it runs the whole Exp-CoT flow (``expllm exp-cot ... --workers N``, a fresh
output folder) and reports:

* faces/s of the whole flow (wall clock of the command, Prefect start-up included, and the
  processing rate from the run's own ``seconds_per_image``);
* the share of records whose AU evidence supports the label (``au_supports_label``, with the
  rule table the pipeline picked for that back end);
* a 5-fold (stratified, seed 0) multinomial logistic-regression AU -> emotion accuracy: how much
  the AUs say about the label whatever the rule table;
* active rates (intensity >= the rules' threshold) of AU06 on happiness, AU09 on disgust and
  AU25 / AU26 on surprise.

Figures are printed as a Markdown table and saved as JSON in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from engine.cot.rules import RuleBook
from engine.resources import shared_dir
from engine.store.stats import read_shards
from engine.types import EMOTIONS

EXPLLM = str(Path(sys.executable).with_name("expllm"))
ACTIVE_CHECKS = (("AU06", "happiness"), ("AU09", "disgust"), ("AU25", "surprise"),
                 ("AU26", "surprise"))  # fmt: skip


def run_flow(spec: str, split: str, backend: str, out: Path, workers: int, limit: int | None):
    """Run ``expllm exp-cot`` into a fresh ``out``; returns wall seconds."""
    command = [EXPLLM, "exp-cot", spec, "--split", split, "--out", str(out), "--quiet",
               "--au-backend", backend, "--workers", str(workers)]  # fmt: skip
    if limit:
        command += ["--limit", str(limit)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def logistic_cv_accuracy(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Stratified k-fold accuracy of an L2 multinomial logistic regression (numpy, full batch)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=int)
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        fold[members] = np.arange(len(members)) % folds
    correct = 0
    for k in range(folds):
        train, test = fold != k, fold == k
        mean, sd = x[train].mean(0), x[train].std(0) + 1e-6
        weights, bias = _fit_softmax((x[train] - mean) / sd, y[train], int(y.max()) + 1)
        scores = ((x[test] - mean) / sd) @ weights + bias
        correct += int((scores.argmax(1) == y[test]).sum())
    return correct / len(y)


def _fit_softmax(x: np.ndarray, y: np.ndarray, classes: int, steps: int = 500, l2: float = 1e-3):
    onehot = np.eye(classes)[y]
    weights, bias = np.zeros((x.shape[1], classes)), np.zeros(classes)
    rate = 0.5
    for _ in range(steps):
        logits = x @ weights + bias
        logits -= logits.max(1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(1, keepdims=True)
        grad = prob - onehot
        weights -= rate * (x.T @ grad / len(y) + l2 * weights)
        bias -= rate * grad.mean(0)
    return weights, bias


def summarise(out: Path, wall: float, threshold: float) -> dict:
    """The figures of one back end's run folder."""
    frame = read_shards(out)
    stats = json.loads((out / "_stats.json").read_text())
    rejected = stats.get("rejected", 0)
    codes = [c for c in frame.columns if c.startswith("AU") and len(c) == 4]
    codes = [c for c in codes if frame[c].notna().any()]
    labelled = frame[frame["label"].isin(EMOTIONS)]
    x = labelled[codes].fillna(0.0).to_numpy(dtype=np.float64)
    y = labelled["label"].map(EMOTIONS.index).to_numpy()
    figures = {
        "records": len(frame),
        "rejected": rejected,
        "wall_seconds": round(wall, 1),
        "faces_per_second_wall": round((len(frame) + rejected) / wall, 1),
        "faces_per_second_processing": round(1.0 / stats["seconds_per_image"], 1)
        if stats.get("seconds_per_image")
        else None,
        "au_supports_label": round(float(labelled["au_supports_label"].mean()), 4),
        "logistic_5fold_accuracy": round(logistic_cv_accuracy(x, y), 4),
        "aus": len(codes),
    }
    for au, emotion in ACTIVE_CHECKS:
        subset = labelled[labelled["label"] == emotion]
        rate = (subset[au] >= threshold).mean() if au in codes and len(subset) else 0.0
        figures[f"{au}_active_on_{emotion}"] = round(float(rate), 4)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default=f"ferplus:{shared_dir() / 'data' / 'ferplus'}")
    parser.add_argument("--split", default="test")
    parser.add_argument("--backends", nargs="+", default=["mesh", "openface", "fused"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--out", default="runs/bench-aus")
    parser.add_argument("--reuse", action="store_true", help="summarise existing run folders")
    args = parser.parse_args()
    threshold = RuleBook.load().active_threshold
    results = {}
    for backend in args.backends:
        out = Path(args.out) / backend
        if args.reuse and (out / "_stats.json").is_file():
            wall = json.loads((Path(args.out) / "au_backends.json").read_text())[backend][
                "wall_seconds"
            ]
        else:
            if out.exists():
                raise SystemExit(f"{out} exists; remove it or pass --reuse")
            wall = run_flow(args.spec, args.split, backend, out, args.workers, args.limit)
        results[backend] = summarise(out, wall, threshold)
        print(f"{backend}: {results[backend]}", file=sys.stderr)
    (Path(args.out) / "au_backends.json").write_text(json.dumps(results, indent=2))
    keys = list(next(iter(results.values())))
    print("| figure | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for key in keys:
        print(f"| {key} | " + " | ".join(str(results[b][key]) for b in results) + " |")


if __name__ == "__main__":
    main()
