"""``expllm rules``: fit rule tables to data and compare them (``engine/cot/rules_fit.py``,
``engine/cot/rules_card.py``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def cmd_rules_fit(args: argparse.Namespace) -> int:
    from engine.cot.rules_card import fit_command
    from engine.cot.rules_fit import FitOptions

    options = FitOptions(
        l1=args.l1,
        alpha=args.alpha,
        min_lift=args.min_lift,
        min_count=args.min_count,
        anchors=args.anchors,
        class_weight=args.class_weight,
        threshold=args.threshold,
    )
    command = "expllm " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    card = fit_command(
        [Path(s) for s in args.shards],
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


def add_rules_parser(sub: argparse._SubParsersAction) -> None:
    """``expllm rules fit SHARDS... --split train --out DIR``."""
    from engine.cot.rules_fit import FitOptions

    defaults = FitOptions()
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
    fit.add_argument("--l1", type=float, default=defaults.l1, help="L1 penalty (sparsity)")
    fit.add_argument(
        "--alpha", type=float, default=defaults.alpha, help="significance of a new link"
    )
    fit.add_argument("--min-lift", type=float, default=defaults.min_lift)
    fit.add_argument("--min-count", type=int, default=defaults.min_count)
    fit.add_argument(
        "--anchors",
        type=float,
        default=defaults.anchors,
        help="weight of the posed prototype faces, as a share of the data's",
    )
    fit.add_argument(
        "--class-weight", default=defaults.class_weight, choices=["none", "sqrt", "balanced"]
    )
    fit.add_argument(
        "--threshold",
        type=float,
        help="active threshold of the table, 0-5 (default: that of data/rules.json, 1.5)",
    )
    fit.set_defaults(func=cmd_rules_fit)
