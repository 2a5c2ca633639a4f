"""The ``expllm`` command line: a thin layer over ``engine`` and ``flows``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from engine.shards import SchemaMismatchError
from flows.runtime import configure_offline, mark_run

DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _au_options(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    options = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--au-option expects KEY=VALUE, got {pair!r}")
        options.append((key, value))
    return tuple(sorted(options))


def cmd_exp_cot(args: argparse.Namespace) -> int:
    from engine.pipeline import PipelineConfig

    face_mode = {None: "auto", True: "aligned", False: "detector"}[args.aligned]
    if args.face_mode:
        face_mode = args.face_mode
    config = PipelineConfig(
        au_backend=args.au_backend,
        au_options=_au_options(args.au_option),
        face_mode=face_mode,
        embed_images=args.embed_images,
        max_pixels=args.max_pixels,
    )
    out = Path(args.out)
    stopped = mark_run(out)
    if stopped:
        print(
            f"stopped {len(stopped)} process(es) left by a killed run on {out}: {stopped}",
            file=sys.stderr,
        )
    from flows.exp_cot import exp_cot, task_runner_for

    run = exp_cot.with_options(task_runner=task_runner_for(args.task_runner, args.workers))
    stats = run(
        spec=args.spec,
        out=str(out),
        split=args.split,
        limit=args.limit,
        protocol=args.protocol,
        config=config,
        shard_size=args.shard_size,
        progress=not args.quiet,
    )
    print(
        json.dumps(
            {
                k: stats[k]
                for k in (
                    "records",
                    "rejected",
                    "verified_share",
                    "faithfulness_mean",
                    "seconds_per_image",
                )
            }
        )
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from engine.report import text_summary, write_html

    print(text_summary(Path(args.dir), samples=args.samples))
    if args.html:
        target = write_html(Path(args.dir), Path(args.html), samples=args.html_samples)
        print(f"\nHTML report: {target}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import build_demo_dataset

    shared = Path(os.environ.get("EXPLLM_SHARED", DEFAULT_SHARED))
    data = build_demo_dataset(Path(args.out) / "data", shared / "data" / "ferplus")
    shards = Path(args.out) / "shards"
    ns = argparse.Namespace(
        spec=f"folder:{data}",
        out=str(shards),
        split=None,
        limit=None,
        protocol="majority",
        workers=1,
        task_runner="process",
        au_backend=args.au_backend,
        au_option=[],
        aligned=None,
        face_mode=None,
        embed_images=True,
        max_pixels=100_000_000,
        shard_size=16,
        quiet=False,
    )
    cmd_exp_cot(ns)
    return cmd_inspect(
        argparse.Namespace(
            dir=str(shards), samples=3, html_samples=40, html=str(Path(args.out) / "report.html")
        )
    )


def cmd_models(args: argparse.Namespace) -> int:
    from engine import models

    if args.action == "list":
        for spec in models.MODELS.values():
            try:
                where = str(models.resolve_model_path(spec.name))
            except FileNotFoundError:
                where = "not downloaded"
            print(f"{spec.name}\t{spec.licence}\t{where}")
        return 0
    path = models.fetch_model(args.name, dest_dir=args.dest, url=args.url)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from engine.aus import list_estimators

    parser = argparse.ArgumentParser(prog="expllm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("exp-cot", help="run the Exp-CoT flow on a dataset and write shards")
    run.add_argument("spec", help="KIND:PATH, e.g. ferplus:../shared/data/ferplus")
    run.add_argument("--out", required=True, help="output folder of Parquet shards")
    run.add_argument("--split", help="train, valid or test (default: all)")
    run.add_argument("--limit", type=int, help="deterministic stratified sample of N faces")
    run.add_argument("--protocol", default="majority", choices=["majority", "plurality"])
    run.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    run.add_argument(
        "--task-runner", default="process", choices=["process", "thread", "dask", "ray"]
    )
    run.add_argument("--au-backend", default="mesh", choices=list_estimators())
    run.add_argument(
        "--au-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="back-end option, e.g. path=aus.csv for the table back end",
    )
    aligned = run.add_mutually_exclusive_group()
    aligned.add_argument(
        "--aligned",
        dest="aligned",
        action="store_true",
        default=None,
        help="images are face crops (default for FER+, FER2013, RAF-DB, CK+)",
    )
    aligned.add_argument(
        "--detect", dest="aligned", action="store_false", help="detect faces with OpenCV"
    )
    run.add_argument("--face-mode", choices=["auto", "aligned", "dataset", "detector"])
    run.add_argument("--shard-size", type=int, default=256)
    run.add_argument("--embed-images", action="store_true", help="store image bytes in shards")
    run.add_argument(
        "--max-pixels",
        type=int,
        default=100_000_000,
        help="reject larger images (decompression bombs)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_exp_cot)

    insp = sub.add_parser("inspect", help="summarise an output folder")
    insp.add_argument("dir")
    insp.add_argument("--samples", type=int, default=3)
    insp.add_argument("--html", help="also write a self-contained HTML report here")
    insp.add_argument("--html-samples", type=int, default=24, help="faces shown in the report")
    insp.set_defaults(func=cmd_inspect)

    demo = sub.add_parser("demo", help="build the offline demo dataset, run the flow, inspect")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--au-backend", default="mesh", choices=list_estimators())
    demo.set_defaults(func=cmd_demo)

    mod = sub.add_parser("models", help="list or download external model files")
    mod.add_argument("action", choices=["list", "fetch"])
    mod.add_argument("name", nargs="?", default="face_landmarker")
    mod.add_argument("--dest", help="folder (default: $EXPLLM_MODEL_DIR or the user cache)")
    mod.add_argument("--url", help="download from this URL instead of the official one")
    mod.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_offline()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError, SchemaMismatchError) as exc:
        print(f"expllm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
