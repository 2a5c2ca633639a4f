"""Calibrate ``rest`` and ``gain`` of each row of ``data/blendshape_to_au.csv`` on FER+ Train.

An AU reads ``clip(gain * (score - rest), 0, 5)`` from its blendshape score. FACS intensity is a
departure from the face at rest, so:

* ``rest`` = the ``--rest-quantile`` (default 0.5, the median) of the blendshape over FER+
  Train faces whose majority label is neutral: the typical resting face reads 0 for that AU
  (a higher quantile silences more resting noise but lowers the mesh head's agreement with
  its teacher: mean r 0.808 at 0.5, 0.784 at 0.75, 0.734 at 0.9);
* ``gain`` = 5 / (``--top-quantile`` (default 0.995) over all Train faces - ``rest``), so the
  strongest displays reach level E; bounded to [``--min-gain``, ``--max-gain``].

Rows whose blendshape barely varies on FER+ (top quantile - rest < 0.02) keep rest 0 and gain 5.
Teacher scores come from the distillation cache of ``scripts/train_mesh_head.py`` (Face
Landmarker on the same canvases), so this runs in seconds once that cache exists:

    python scripts/calibrate_blendshape_table.py [--dry-run]
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from engine.aus.blendshape_map import BLENDSHAPE_NAMES, TABLE_FILE
from engine.resources import data_file, shared_dir
from engine.types import EMOTIONS
from scripts._distil import FERPLUS_SPLITS, extract

REPO = Path(__file__).resolve().parents[1]


def majority_labels(ferplus: Path) -> dict[str, str | None]:
    """FER+ Train image name -> majority emotion (None for ties and unknown/NF)."""
    labels = {}
    with (ferplus / FERPLUS_SPLITS["train"] / "label.csv").open(newline="") as fh:
        for row in csv.reader(fh):
            votes = [int(v) for v in row[2:12]]
            best = max(votes)
            index = votes.index(best)
            unique = votes.count(best) == 1
            labels[row[0]] = EMOTIONS[index] if unique and index < len(EMOTIONS) else None
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ferplus", type=Path, default=shared_dir() / "data" / "ferplus")
    parser.add_argument("--cache", type=Path, default=REPO / ".work" / "mesh_distil")
    parser.add_argument(
        "--teacher", type=Path, default=shared_dir() / "models" / "face_landmarker.task"
    )
    parser.add_argument("--rest-quantile", type=float, default=0.5)
    parser.add_argument("--top-quantile", type=float, default=0.995)
    parser.add_argument("--min-gain", type=float, default=5.0)
    parser.add_argument("--max-gain", type=float, default=25.0)
    parser.add_argument("--dry-run", action="store_true", help="print the table, do not write")
    args = parser.parse_args()

    arrays = extract(args.ferplus, "train", args.cache, args.teacher, seed=0, progress=True)
    ok = arrays.teacher_ok
    scores, names = arrays.blendshapes[ok], arrays.names[ok]
    labels = majority_labels(args.ferplus)
    neutral = np.array([labels.get(str(n)) == "neutral" for n in names])
    print(f"{len(names)} Train faces with teacher scores, {neutral.sum()} neutral")

    path = data_file(TABLE_FILE)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        if not row["au"]:
            row["rest"] = ""
            continue
        column = scores[:, BLENDSHAPE_NAMES.index(row["blendshape"])]
        rest = float(np.quantile(column[neutral], args.rest_quantile))
        top = float(np.quantile(column, args.top_quantile))
        if top - rest < 0.02:
            rest, gain = 0.0, 5.0
        else:
            gain = float(np.clip(5.0 / (top - rest), args.min_gain, args.max_gain))
        row["rest"], row["gain"] = f"{rest:.3f}", f"{gain:.2f}"
        print(f"{row['blendshape']:<20} {row['au']}  rest {rest:.3f}  gain {gain:5.2f}")
    out = io.StringIO()
    writer = csv.DictWriter(
        out, ["blendshape", "au", "side", "rest", "gain", "notes"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows({k: r.get(k, "") for k in writer.fieldnames} for r in rows)
    if not args.dry_run:
        path.write_text(out.getvalue())
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
