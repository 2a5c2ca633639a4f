"""Hand-set vs fitted rule tables on one Exp-CoT run, per class, in one go.

    python benchmarks/rule_tables.py runs/ferplus-test-mesh [--fitted data/rules/mesh]

Reads the measured AUs and labels of the run's shards and, for the hand-set tables of ``data/``
and the fitted table (default: ``data/rules/<the run's AU back end>/``), prints per class:

* ``au_supports_label``: the rules' dominant emotion = label (``RuleBook.evaluate``);
* ``des2exp``: the label read back from the description alone (Key Observations and
  Interpretation, ``engine.cot.verify.infer_label``) of the template writer's CoT for that face
  and table (the text is rendered here, as ``expllm exp-cot`` would write it).

It also prints the posed-prototype check of each table (``engine.cot.rules_fit.prototype_check``).
The figures of the README and of ``data/rules/<back end>/CARD.md`` come from this script.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from engine.cot.render import CoTRenderer
from engine.cot.rules import RuleBook, fitted_dir
from engine.cot.rules_fit import prototype_check, readings
from engine.cot.verify import infer_label
from engine.types import EMOTIONS
from flows.cli_rules import read_faces


def score(book: RuleBook, faces: pd.DataFrame, reads: list) -> pd.DataFrame:
    """Per face: whether the rules support the label, and the description-only reading."""
    renderer = CoTRenderer(threshold=book.active_threshold, max_aus=book.max_cited_aus)
    supported, described = [], []
    for record_id, label, reading in zip(faces["record_id"], faces["label"], reads, strict=True):
        evidence = book.evaluate(reading)
        supported.append(evidence.dominant == label)
        text = renderer.render(record_id, label, evidence).cot.text
        described.append(infer_label(text) == label)
    return pd.DataFrame(
        {"label": faces["label"].to_numpy(), "supported": supported, "des2exp": described}
    )


def per_class(frame: pd.DataFrame) -> pd.DataFrame:
    rows = {}
    for name in (*EMOTIONS, "total"):
        part = frame if name == "total" else frame[frame["label"] == name]
        if len(part):
            rows[name] = {
                "n": len(part),
                "supported": part["supported"].mean(),
                "des2exp": part["des2exp"].mean(),
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    present = table.drop(index="total", errors="ignore")
    table.loc["class mean"] = [
        float(present["n"].sum()),
        present["supported"].mean(),
        present["des2exp"].mean(),
    ]
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="an Exp-CoT output folder (shards with AUs and labels)")
    parser.add_argument("--fitted", help="fitted table (default: data/rules/<AU back end>/)")
    parser.add_argument("--split", help="only this split of the run")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    faces = read_faces([args.run], [args.split] if args.split else None)
    if faces.empty:
        raise SystemExit(f"{args.run}: no labelled faces")
    backends = sorted(faces["au_backend"].dropna().unique())
    fitted_path = Path(args.fitted) if args.fitted else fitted_dir(backends[0])
    if fitted_path is None:
        raise SystemExit(f"no fitted table for the {backends[0]!r} AU back end; pass --fitted")
    hand = RuleBook.load()
    fitted = RuleBook.for_backend(backends[0], fitted_path)
    reads = readings(faces)
    results = {"hand-set": per_class(score(hand, faces, reads))}
    results["fitted"] = per_class(score(fitted, faces, reads))

    print(
        f"{args.run}: {len(faces)} labelled faces, AU back end {', '.join(backends)}; "
        f"hand-set {hand.table_id}, fitted {fitted.table_id}"
    )
    print(
        "au_supports_label = the rules' dominant emotion is the label; des2exp = the label "
        "read back from the template CoT's description alone\n"
    )
    counts = results["fitted"]["n"].astype(int).astype(str)
    counts["class mean"] = ""
    joined = pd.DataFrame({"n": counts})
    for name, table in results.items():
        for column in ("supported", "des2exp"):
            label = f"{name} {'au_supports_label' if column == 'supported' else column}"
            joined[label] = table[column].map(lambda v: f"{100 * v:.1f} %")
    print(joined.to_string())
    print(
        f"\nposed prototypes (each EMFACS / Du et al. prototype whole and with one AU left out, "
        f"at intensities 2, 3, 4, and a face at rest): hand-set "
        f"{100 * prototype_check(hand)['agreement']:.1f} %, fitted "
        f"{100 * prototype_check(fitted, hand)['agreement']:.1f} %"
    )
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
