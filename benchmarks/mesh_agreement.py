"""Agreement of the ``mesh`` back end with its teacher, ``blendshapes``, on FER+ Test faces.

    .venv/bin/python benchmarks/mesh_agreement.py [--limit N]

Loads each Test image as the pipeline does, runs both estimators end to end, and prints the
per-AU Pearson r, the mean r over AUs whose teacher intensity varies, and ms per face.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from engine.aus import create_estimator
from engine.aus.blendshape_map import mapped_aus
from engine.data.images import load_image
from engine.resources import shared_dir
from engine.types import Face, FaceRecord, StageError

MIN_AU_SD = 0.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferplus", type=Path, default=shared_dir() / "data" / "ferplus")
    parser.add_argument(
        "--teacher-model", type=Path, default=shared_dir() / "models" / "face_landmarker.task"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N Test faces")
    args = parser.parse_args(argv)
    with (args.ferplus / "FER2013Test" / "label.csv").open(newline="") as fh:
        names = sorted(row[0] for row in csv.reader(fh) if row)[: args.limit]
    estimators = {
        "mesh": create_estimator("mesh"),
        "blendshapes": create_estimator("blendshapes", model_path=args.teacher_model),
    }
    aus = mapped_aus()
    values: dict[str, list[list[float]]] = {name: [] for name in estimators}
    seconds = dict.fromkeys(estimators, 0.0)
    misses = dict.fromkeys(estimators, 0)
    for name in names:
        rel = f"FER2013Test/{name}"
        record = FaceRecord(f"ferplus/test/{name}", "ferplus", "test", args.ferplus, rel, None)
        image = load_image(record)
        face = Face((0, 0, image.shape[1], image.shape[0]), image, "aligned")
        row = {}
        for backend, estimator in estimators.items():
            start = time.perf_counter()
            try:
                row[backend] = estimator.estimate(face, record).intensities
            except StageError:
                misses[backend] += 1
            seconds[backend] += time.perf_counter() - start
        if len(row) == len(estimators):
            for backend, intensities in row.items():
                values[backend].append([intensities[au] for au in aus])
    for estimator in estimators.values():
        estimator.close()
    student, teacher = np.array(values["mesh"]), np.array(values["blendshapes"])
    print(f"{len(names)} FER+ Test faces, {len(student)} read by both back ends")
    for backend in estimators:
        print(
            f"{backend}: {1000 * seconds[backend] / len(names):.1f} ms/face, "
            f"{misses[backend]} without a face"
        )
    kept = []
    for i, au in enumerate(aus):
        sd = teacher[:, i].std()
        if sd < MIN_AU_SD:
            print(f"{au}: r = n/a (teacher constant, sd {sd:.3f})")
            continue
        r = float(np.corrcoef(student[:, i], teacher[:, i])[0, 1])
        kept.append(r)
        print(f"{au}: r = {r:.3f}")
    print(f"mean r over {len(kept)} AUs = {np.mean(kept):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
