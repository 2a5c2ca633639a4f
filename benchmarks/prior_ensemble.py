"""The prior the nano ExpLLM's label guidance and planned reading weigh: the encoder's classifier
alone and averaged with partner classifiers of the same interface (ONNX files), per prior
correction (``class_balance``), on FER+ Valid and Test; no torch (onnxruntime).

    .venv/bin/python benchmarks/prior_ensemble.py --partners DIR/nano_encoder_w32.onnx
    .venv/bin/python benchmarks/prior_ensemble.py --views shifts rotations
    .venv/bin/python benchmarks/prior_ensemble.py --label-counts anger=135 contempt=54 \
        disgust=177 fear=75 happiness=207 sadness=84 surprise=249     # CK+48's classes

Prints, per split, set of classifiers and ``class_balance``, the accuracy and UAR of the best
class (face + mirror probabilities, averaged over the classifiers). Choose on Valid, report
Test (printed last): ``class_balance``, the smallest correction whose UAR reaches ``--uar-bar``,
and ``transfer_balance``, the one of the best UAR (balanced accuracy: the correction for faces
of another dataset, whose class frequencies are unknown). ``--views`` adds test-time views of
each face to the face + mirror average of every classifier: ``shifts`` (2 px left, right, up,
down) and ``rotations`` (+-4 degrees about the centre), each with its mirror.

``--label-counts`` adds the cross-dataset protocol's rows (``expllm evaluate --classes``): the
best class among those named, on each split's faces of those classes drawn (with replacement,
``--draws`` times, seed 0) to the counts given, as a set with those class frequencies would
hold them: the mean accuracy and UAR over the draws per correction, and their spread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from engine.data.datasets import read_dataset
from engine.data.images import load_image
from engine.evaluation.classifiers import NanoPredictor
from engine.evaluation.scoring import argmax_labels, classification_metrics
from engine.model.config import SHIPPED_MODEL, ModelConfig
from engine.model.encoder import NANO_ENCODER, grey_faces, mirror_average
from engine.resources import shared_dir
from engine.types import EMOTIONS

#: Test-time views (x shift px, y shift px, rotation degrees) by name, beside the face itself.
VIEWS = {
    "shifts": [(2, 0, 0), (-2, 0, 0), (0, 2, 0), (0, -2, 0)],
    "rotations": [(0, 0, -4), (0, 0, 4)],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferplus", type=Path, default=shared_dir() / "data" / "ferplus")
    parser.add_argument("--encoder", type=Path, default=NANO_ENCODER)
    parser.add_argument("--partners", type=Path, nargs="*", default=[])
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="class frequencies")
    parser.add_argument(
        "--balances", type=float, nargs="+", default=[round(0.1 * i, 1) for i in range(11)]
    )
    parser.add_argument("--uar-bar", type=float, default=0.72)
    parser.add_argument("--views", nargs="*", choices=sorted(VIEWS), default=[])
    parser.add_argument("--label-counts", nargs="*", default=[], metavar="LABEL=N")
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        counts = {k: int(n) for k, n in (item.split("=") for item in args.label_counts)}
    except ValueError:
        parser.error(f"--label-counts: LABEL=N expected, got {args.label_counts}")
    if unknown := sorted(set(counts) - set(EMOTIONS)):
        parser.error(f"--label-counts: {unknown} are not among {list(EMOTIONS)}")
    frequencies = np.asarray(ModelConfig.read(args.model).decoding.class_frequencies)
    if frequencies.shape != (len(EMOTIONS),):
        parser.error(f"{args.model}: no class_frequencies for the {len(EMOTIONS)} classes")
    classifiers = [NanoPredictor(path) for path in [args.encoder, *args.partners]]
    views = [view for name in args.views for view in VIEWS[name]]
    chosen, transfer = None, (None, -1.0)
    for split in ("valid", "test"):
        records = read_dataset(f"ferplus:{args.ferplus}", split).records
        truth = [r.label for r in records]
        faces = [load_image(r) for r in records]
        each = [_with_views(classifier, faces, views) for classifier in classifiers]
        sets = {"encoder": each[:1]}
        if args.partners:
            sets["ensemble"] = each
        for name, members in sets.items():
            log_prior = np.log(np.mean(members, axis=0) + 1e-9)
            last = name == list(sets)[-1]
            for balance in args.balances:
                scores = log_prior - balance * np.log(frequencies)
                metrics = classification_metrics(truth, argmax_labels(scores))
                row = {"split": split, "prior": name, "class_balance": balance, "n": len(truth)}
                print(json.dumps({**row, **metrics.headline()}))
                if split == "valid" and last and chosen is None and metrics.uar >= args.uar_bar:
                    chosen = balance
                if split == "valid" and last and metrics.uar > transfer[1]:
                    transfer = (balance, metrics.uar)
            if counts and last:
                for balance in args.balances:
                    scores = log_prior - balance * np.log(frequencies)
                    drawn = _drawn(scores, truth, counts, args.draws)
                    row = {"split": split, "label_counts": counts, "class_balance": balance}
                    print(json.dumps({**row, **drawn}))
    choice = {"class_balance": chosen, "uar_bar": args.uar_bar, "transfer_balance": transfer[0]}
    print(json.dumps({"chosen_on_valid": choice}))
    return 0


def _drawn(scores: np.ndarray, truth: list[str], counts: dict[str, int], draws: int) -> dict:
    """Mean and spread of the accuracy and UAR of the best class among those of ``counts`` on
    faces drawn to ``counts`` (``draws`` draws, seed 0)."""
    allowed = np.array([EMOTIONS.index(label) for label in counts])
    restricted = np.full_like(scores, -np.inf)
    restricted[:, allowed] = scores[:, allowed]
    predicted = np.array(argmax_labels(restricted))
    faces_of = {label: np.flatnonzero(np.asarray(truth) == label) for label in counts}
    rng = np.random.default_rng(0)
    accuracies, uars = [], []
    for _ in range(draws):
        drawn = np.concatenate([rng.choice(faces_of[label], n) for label, n in counts.items()])
        metrics = classification_metrics([truth[i] for i in drawn], list(predicted[drawn]))
        accuracies.append(metrics.accuracy)
        uars.append(metrics.uar)
    return {
        "draws": draws,
        "accuracy": round(float(np.mean(accuracies)), 4),
        "accuracy_sd": round(float(np.std(accuracies)), 4),
        "uar": round(float(np.mean(uars)), 4),
    }


def _with_views(classifier: NanoPredictor, faces, views) -> np.ndarray:
    """The classifier's face + mirror probabilities of ``faces`` (weight 2) averaged with those
    of each of ``views`` of the faces and its mirror (``mirror_average``)."""
    probabilities = classifier.classify(faces)
    if not views:
        return probabilities
    height, width = classifier.size
    batch = grey_faces(faces, classifier.size)
    centre = ((width - 1) / 2, (height - 1) / 2)
    total = 2 * probabilities
    for dx, dy, angle in views:
        matrix = cv2.getRotationMatrix2D(centre, angle, 1.0) + np.array([[0, 0, dx], [0, 0, dy]])
        moved = np.stack(
            [
                cv2.warpAffine(g[0], matrix, (width, height), borderMode=cv2.BORDER_REFLECT_101)
                for g in batch
            ]
        )[:, None]
        for start in range(0, len(moved), 256):
            chunk = moved[start : start + 256]
            logits = classifier.session.run(["logits"], {"image": chunk})[0]
            total[start : start + 256] += 2 * mirror_average(classifier.session, chunk, logits)
    return total / (2 + 2 * len(views))


if __name__ == "__main__":
    raise SystemExit(main())
