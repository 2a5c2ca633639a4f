"""``expllm rules``: fit rule tables to data and compare them (``engine/cot/rules_fit.py``,
``engine/cot/rules_card.py``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from flows.cli_options import add_field_options, from_args


def read_faces(shards: Sequence[Path | str], splits: Sequence[str] | None = None):
    """The labelled faces (of ``splits`` when given) of Exp-CoT output folders, one frame,
    read with the one shard reader (``engine.store.stats.read_shards``)."""
    import pandas as pd

    from engine.cot.rules_fit import FACE_REQUIRED, face_columns, labelled_faces
    from engine.store.stats import read_shards

    frames = [
        labelled_faces(read_shards(Path(folder), face_columns(), FACE_REQUIRED), splits)
        for folder in shards
    ]
    return pd.concat(frames, ignore_index=True)


def cmd_rules_fit(args: argparse.Namespace) -> int:
    from engine.cot.rules_card import fit_command
    from engine.cot.rules_fit import FitOptions

    options = from_args(FitOptions, args)
    command = "expllm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    shards = [Path(s) for s in args.shards]
    card = fit_command(
        read_faces(shards),
        shards,
        args.split,
        Path(args.out),
        eval_splits=args.eval_split or ["valid"],
        options=options,
        command=command,
    )
    print(f"fitted {card['au_backend']} table -> {args.out} ({card['links']['total']} links)")
    for name, figures in card["agreement"].items():
        hand = card["agreement_hand_set"][name]
        print(
            f"  {name:<6} n={figures['n']:<6} au_supports_label fitted "
            f"{figures['agreement']:.1%} (class mean {figures['mean_class_agreement']:.1%}), "
            f"hand-set {hand['agreement']:.1%} (class mean {hand['mean_class_agreement']:.1%})"
        )
    proto = card["prototype_check"]
    print(f"  posed prototypes: fitted {proto['fitted']:.1%}, hand-set {proto['hand_set']:.1%}")
    return 0


#: ``FitOptions`` options of ``expllm rules fit``: flag, field (its default and type), help.
_FIT_OPTIONS = (
    ("--l1", "l1", "L1 penalty (sparsity)"),
    ("--alpha", "alpha", "significance of a new link"),
    ("--min-lift", "min_lift", None),
    ("--min-count", "min_count", None),
    ("--anchors", "anchors", "weight of the posed prototype faces, as a share of the data's"),
    ("--class-weight", "class_weight", None),
    (
        "--threshold",
        "threshold",
        "active threshold of the table, 0-5 (default: that of data/rules.json, 1.5)",
    ),
)


def add_rules_parser(sub: argparse._SubParsersAction) -> None:
    """``expllm rules fit SHARDS... --split train --out DIR``."""
    from engine.cot.rules_fit import FitOptions

    rules = sub.add_parser("rules", help="fit AU -> emotion rule tables to an Exp-CoT run")
    actions = rules.add_subparsers(dest="rules_command", required=True)
    fit = actions.add_parser(
        "fit",
        help="fit a table on one split of one or more output folders (data/rules/<back end>/)",
        description="Fit non-negative, sparse AU -> emotion weights, prototype weights and "
        "priors on the --split faces (FACS links plus links the data supports), report "
        "agreement (au_supports_label) on that split and on --eval-split, and write the "
        "table with its card (table.json, CARD.md) into --out.",
    )
    fit.add_argument("shards", nargs="+", help="Exp-CoT output folder(s) with AUs and labels")
    fit.add_argument("--split", default="train", help="the split to fit on (default: train)")
    fit.add_argument("--out", required=True, help="table folder, e.g. data/rules/mesh/")
    fit.add_argument(
        "--eval-split",
        action="append",
        default=None,
        help="split(s) to report agreement on (default: valid)",
    )
    classes = {"class_weight": ["none", "sqrt", "balanced"]}
    add_field_options(fit, FitOptions, _FIT_OPTIONS, classes)
    fit.set_defaults(func=cmd_rules_fit)
