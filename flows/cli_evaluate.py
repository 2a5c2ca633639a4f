"""``expllm evaluate``: score a model and its peers on a labelled dataset (flows/evaluate.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from engine.data.datasets import TEST_OR_ALL
from flows.cli_options import from_args, quiet_model_loading

#: The option a bare ``NAME=VALUE`` in ``--peers`` sets, per predictor.
PRIMARY_OPTION = {"gpt4v": "path", "csv": "path", "nano": "path", "rules": "shards"}
#: What the printed summary shows of each predictor, and of its CoT texts.
SUMMARY_KEYS = ("n", "accuracy", "uar", "macro_f1", "faces_per_second", "outside_classes")
COT_SUMMARY_KEYS = (
    "complete",
    "evidence_as_measured",
    "cues_as_measured",
    "interpretation_agreement",
    "first_emotion_agreement",
    "non_word_tokens",
    "non_word_cots",
    "annotation_wording",
)


def option_value(text: str) -> Any:
    """A ``KEY=VALUE`` option's value: a JSON scalar (``true``, ``2``) or the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_peers(items: list[str], extra: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """``--peers`` entries (``NAME[=VALUE]``, comma-separated) -> (label, name, options).

    ``extra`` holds ``--peer-option NAME.KEY=VALUE`` settings. A ``csv`` peer is labelled
    ``csv:<file stem>`` so that several can be compared.
    """
    peers: list[tuple[str, str, dict[str, Any]]] = []
    for item in (p.strip() for chunk in items for p in chunk.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        options: dict[str, Any] = {}
        if sep:
            if name not in PRIMARY_OPTION:
                raise ValueError(f"peer {name!r} takes no value (got {item!r})")
            options[PRIMARY_OPTION[name]] = value
        label = f"csv:{Path(value).stem}" if name == "csv" and sep else name
        peers.append((label, name, options))
    for setting in extra:
        key, sep, value = setting.partition("=")
        name, dot, option = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"--peer-option expects NAME.KEY=VALUE, got {setting!r}")
        matching = [p for p in peers if p[1] == name]
        if not matching:
            raise ValueError(f"--peer-option {setting!r}: no peer {name!r} in --peers")
        for peer in matching:
            peer[2][option] = option_value(value)
    return peers


def summary(result: dict) -> dict:
    """The printed JSON summary: the class set, and per predictor its headline figures and the
    wording checks of its CoT texts."""
    out: dict[str, Any] = {"classes": result["classes"]}
    for label, metrics in result["predictors"].items():
        out[label] = {k: metrics[k] for k in SUMMARY_KEYS}
        if metrics["cot"] is not None:
            out[label]["cot"] = {k: metrics["cot"][k] for k in COT_SUMMARY_KEYS}
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.quiet:  # before anything imports a Hugging Face library
        quiet_model_loading()
    from engine.evaluation.scoring import DATASET_CLASSES, allowed_classes
    from flows.evaluate import PredictorSpec, evaluate
    from flows.exp_cot import task_runner_for

    if args.classes.strip().lower() != DATASET_CLASSES:
        allowed_classes(args.classes)  # a bad class name fails before Prefect starts

    model_options: tuple[tuple[str, Any], ...] = (("path", args.model),)
    if args.no_tta:
        model_options += (("tta", False),)
    for setting in args.model_option:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-option expects KEY=VALUE, got {setting!r}")
        model_options += ((key, option_value(value)),)
    model = PredictorSpec(args.model_name or args.model_kind, args.model_kind, model_options)
    peers = tuple(
        PredictorSpec(label, name, tuple(sorted(options.items())))
        for label, name, options in parse_peers(args.peers, args.peer_option)
    )
    au_source: tuple[tuple[str, Any], ...] = ()
    if args.au_shards:
        au_source = (("shards", args.au_shards),)
    elif args.au_backend:
        au_source = (("au_backend", args.au_backend),)
    run = evaluate.with_options(task_runner=task_runner_for("process", args.workers))
    result = from_args(
        run, args, model=model, peers=peers, au_source=au_source, progress=not args.quiet
    )
    print(json.dumps(summary(result), indent=1))
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``evaluate`` to the ``expllm`` sub-commands."""
    from engine.aus import list_estimators

    ev = subparsers.add_parser(
        "evaluate", help="score a model and its peers on a labelled dataset, write reports"
    )
    ev.add_argument("--model", required=True, help="model folder (nano: holds nano_encoder.onnx)")
    ev.add_argument("--model-kind", default="nano", help="predictor that reads --model")
    ev.add_argument("--model-name", help="the model's label in the reports (default: its kind)")
    ev.add_argument("--no-tta", action="store_true", help="no horizontal-flip averaging")
    ev.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option of the model's predictor, e.g. grounded=false or label_guidance=0",
    )
    ev.add_argument("--data", required=True, help="KIND:PATH, e.g. ferplus:../shared/data/ferplus")
    ev.add_argument(
        "--split",
        default=TEST_OR_ALL,
        help="train, valid or test (default: test, or every face of a dataset without splits)",
    )
    ev.add_argument("--protocol", default="majority", choices=["majority", "plurality"])
    ev.add_argument("--limit", type=int, help="deterministic stratified sample of N faces")
    ev.add_argument(
        "--classes",
        default="all",
        metavar="dataset|all|LIST",
        help="the classes predictors may answer: all eight (default), those of the dataset's "
        "labels, or a comma list such as happiness,sadness",
    )
    ev.add_argument("--out", required=True, help="output folder of the reports")
    ev.add_argument(
        "--peers",
        action="append",
        default=[],
        metavar="NAME[=VALUE],...",
        help="peers: gpt4v[=CSV], fer, rules[=SHARDS_DIR], csv=PATH (repeatable)",
    )
    ev.add_argument(
        "--peer-option",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="peer option, e.g. rules.au_backend=blendshapes or fer.tflite=false",
    )
    ev.add_argument(
        "--au-shards", help="Exp-CoT shards with the faces' AUs (CoT faithfulness of the model)"
    )
    ev.add_argument(
        "--au-backend",
        choices=list_estimators(),
        help="AU back end measuring the faces for CoT faithfulness, without --au-shards "
        "(default: the model's own where it measures AUs, else mesh)",
    )
    ev.add_argument("--chunk-size", type=int, default=512, help="records per task")
    ev.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_evaluate)
    return ev
