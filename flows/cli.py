"""The ``expllm`` command line: a thin layer over ``engine`` and ``flows``.

This module holds the parser, error handling and the small commands (``inspect``, ``demo``,
``models``); each command group has its module: ``flows/cli_exp_cot.py`` (``exp-cot``,
``serve-llm``), ``flows/cli_evaluate.py``, ``flows/cli_finetune.py``, ``flows/cli_rules.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.store.shards import SchemaMismatchError
from flows.runtime import configure_offline


def cmd_inspect(args: argparse.Namespace) -> int:
    from engine.store.inspection import compare_text, write_html
    from engine.store.report import text_summary

    print(text_summary(Path(args.dir), samples=args.samples))
    compare = Path(args.compare) if getattr(args, "compare", None) else None
    if compare is not None:
        print("\n" + compare_text(Path(args.dir), compare))
    if args.html:
        target = write_html(
            Path(args.dir), Path(args.html), page_size=args.html_samples, compare=compare
        )
        print(f"\nHTML report: {target} ({target.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.data.demo import build_demo_dataset
    from engine.resources import shared_dir

    data = build_demo_dataset(Path(args.out) / "data", shared_dir() / "data" / "ferplus")
    shards = Path(args.out) / "shards"
    run = ["exp-cot", f"folder:{data}", "--out", str(shards), "--au-backend", args.au_backend]
    run_args = build_parser().parse_args([*run, "--embed-images", "--shard-size", "16"])
    run_args.func(run_args)
    return cmd_inspect(
        argparse.Namespace(
            dir=str(shards), samples=3, html_samples=40, html=str(Path(args.out) / "report.html")
        )
    )


def cmd_models(args: argparse.Namespace) -> int:
    from engine import model_files as models

    if args.action == "list":
        for spec in models.list_models():
            where = models.find_model(spec.name)
            print(f"{spec.name}\t{where or 'not downloaded'}\t{spec.licence}")
        return 0
    path = models.fetch_model(
        args.name, dest_dir=args.dest, url=args.url, accept_licence=args.accept_licence
    )
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from engine.aus import list_estimators
    from flows.cli_evaluate import add_evaluate_parser
    from flows.cli_exp_cot import add_exp_cot_parser, add_serve_llm_parser
    from flows.cli_finetune import add_export_parser, add_finetune_parser
    from flows.cli_rules import add_rules_parser

    parser = argparse.ArgumentParser(prog="expllm", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show native libraries' log lines and the full traceback of an error",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    add_exp_cot_parser(sub)
    add_serve_llm_parser(sub)

    insp = sub.add_parser("inspect", help="summarise an output folder")
    insp.add_argument("dir")
    insp.add_argument("--samples", type=int, default=3)
    insp.add_argument(
        "--html", metavar="OUT", help="also write a self-contained HTML report page here"
    )
    insp.add_argument(
        "--html-samples", type=int, default=24, help="faces per page of the report's browser"
    )
    insp.add_argument(
        "--compare",
        metavar="DIR2",
        help="a second output folder: per-class deltas and records whose dominant emotion "
        "changed (printed, and in the --html page)",
    )
    insp.set_defaults(func=cmd_inspect)

    demo = sub.add_parser("demo", help="build the offline demo dataset, run the flow, inspect")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--au-backend", default="auto", choices=list_estimators())
    demo.set_defaults(func=cmd_demo)

    mod = sub.add_parser("models", help="list or download external model files")
    mod.add_argument("action", choices=["list", "fetch"])
    mod.add_argument("name", nargs="?", default="face_landmarker")
    mod.add_argument("--dest", help="folder (default: $EXPLLM_MODEL_DIR or the user cache)")
    mod.add_argument(
        "--url", help="download from this URL (a folder's base URL) instead of the official one"
    )
    mod.add_argument(
        "--accept-licence",
        action="store_true",
        help="accept the model's licence (required for openface: non-commercial research only)",
    )
    mod.set_defaults(func=cmd_models)
    add_evaluate_parser(sub)
    add_rules_parser(sub)
    add_finetune_parser(sub)
    add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_offline()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError, SchemaMismatchError) as exc:
        if getattr(args, "verbose", False):
            raise
        print(f"expllm: error: {error_text(exc)}", file=sys.stderr)
        return 2


def error_text(exc: BaseException) -> str:
    """One line for an error: ``<path>: <reason>`` for OS errors naming a file."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc).replace("\n", " ") or type(exc).__name__


def quiet_native_logs() -> None:
    """Send what native libraries write straight to file descriptor 2 (MediaPipe's absl and
    TF Lite lines, also in worker threads and child processes) to /dev/null; Python's own
    ``sys.stderr`` (errors, progress bars, logging) keeps the terminal."""
    sys.stderr.flush()
    terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, errors="backslashreplace")


def run() -> None:
    """The ``expllm`` console command: ``main`` with native log noise silenced (``--verbose``
    keeps it)."""
    if "--verbose" not in sys.argv[1:]:
        quiet_native_logs()
    sys.exit(main())


if __name__ == "__main__":
    run()
