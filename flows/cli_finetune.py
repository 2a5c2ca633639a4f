"""``expllm finetune`` (flows/finetune.py) and ``expllm export`` (engine/model/conversations.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flows.cli_options import add_field_options, from_args, quiet_model_loading


def cmd_finetune(args: argparse.Namespace) -> int:
    if args.quiet:  # before anything imports a Hugging Face library
        quiet_model_loading()
    from engine.model.conversations import parse_mix
    from flows.finetune import FinetuneConfig, finetune

    config = from_args(
        FinetuneConfig,
        args,
        mix=parse_mix(args.mix),
        eval_max_new_tokens=args.max_new_tokens,
        progress=not args.quiet,
    )
    log = finetune(shards=args.shards, out=args.out, config=config, data_root=args.data_root)
    print(json.dumps([e["eval"] | {"example": None} for e in log["epochs"]], indent=1))
    print(f"model folder: {Path(args.out)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from engine.model.conversations import (
        build_samples,
        dataset_root,
        parse_mix,
        read_rows,
        write_export,
    )

    frame = read_rows(args.shards)
    samples = build_samples(frame, parse_mix(args.mix), verified_cots=not args.all)
    root = dataset_root(args.shards, args.data_root) if args.images_dir else None
    count = write_export(samples, args.format, args.out, root=root, images_dir=args.images_dir)
    images = args.images_dir or dataset_root(args.shards, args.data_root)
    print(f"wrote {count} {args.format} samples to {args.out}; images relative to {images}")
    return 0


#: ``FinetuneConfig`` options of ``expllm finetune``: flag, field (its default and type), help.
_TRAINING_OPTIONS = (
    ("--epochs", "epochs", None),
    ("--batch-size", "batch_size", "training batch"),
    (
        "--generation-batch",
        "generation_batch",
        "faces the per-epoch evaluation writes CoTs for at once",
    ),
    ("--lr", "lr", None),
    ("--eval-samples", "eval_samples", "held-out faces per epoch"),
    ("--checkpoint-every", "checkpoint_every", "steps between checkpoints"),
    ("--max-new-tokens", "eval_max_new_tokens", "CoT tokens at evaluation"),
    ("--mixed-precision", "mixed_precision", "on GPUs: bf16"),
    ("--seed", "seed", None),
)
#: ``--mixed-precision`` choices (accelerate's).
PRECISIONS = ["no", "bf16", "fp16"]


def add_finetune_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``finetune`` to the ``expllm`` sub-commands (defaults: ``FinetuneConfig``'s)."""
    from engine.model.training import FinetuneConfig

    ft = subparsers.add_parser("finetune", help="fine-tune ExpLLM on Exp-CoT shards")
    ft.add_argument("--shards", required=True, help="Exp-CoT output folder")
    ft.add_argument("--base", default="nano", help="nano (default) or hf:<model id or folder>")
    ft.add_argument("--out", required=True, help="model folder (checkpoints inside; resumes)")
    ft.add_argument(
        "--init",
        help="start from this saved model folder (warm start, e.g. engine/weights/expllm_nano) "
        "instead of a fresh --base; it then reads the shards' AU back end",
    )
    ft.add_argument("--max-samples", type=int, help="train on at most N records")
    ft.add_argument(
        "--mix",
        default="3:1",
        help="FER:CoT sample shares among CoT-eligible records (default 3:1)",
    )
    add_field_options(ft, FinetuneConfig, _TRAINING_OPTIONS, {"mixed_precision": PRECISIONS})
    ft.add_argument("--data-root", help="dataset root (default: from the shards' manifest)")
    ft.add_argument("--quiet", action="store_true", help="no progress bar")
    ft.set_defaults(func=cmd_finetune)
    return ft


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export`` to the ``expllm`` sub-commands."""
    from engine.model.conversations import EXPORTS

    ex = subparsers.add_parser("export", help="write Exp-CoT shards as training conversations")
    ex.add_argument("--shards", required=True, help="Exp-CoT output folder")
    ex.add_argument("--format", default="paper", choices=sorted(EXPORTS))
    ex.add_argument("--out", required=True, help="output file (.jsonl; .json for llava)")
    ex.add_argument("--images-dir", help="write the images here and reference them from it")
    ex.add_argument(
        "--mix",
        default="3:1",
        help="FER:CoT sample shares among CoT-eligible records (default 3:1)",
    )
    ex.add_argument(
        "--all", action="store_true", help="CoT samples from records that did not verify too"
    )
    ex.add_argument("--data-root", help="dataset root (default: from the shards' manifest)")
    ex.set_defaults(func=cmd_export)
    return ex
