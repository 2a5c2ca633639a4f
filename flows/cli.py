"""The ``expllm`` command line: a thin layer over ``engine`` and ``flows``."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from engine.store.shards import SchemaMismatchError, ShardStore
from flows.cli_evaluate import option_value
from flows.runtime import configure_offline, mark_run

DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _au_options(pairs: list[str]) -> tuple[tuple[str, Any], ...]:
    """``--au-option KEY=VALUE`` settings, values read as ``--model-option``'s are."""
    options = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--au-option expects KEY=VALUE, got {pair!r}")
        options.append((key, option_value(value)))
    return tuple(sorted(options))


def check_output_folder(out: Path) -> None:
    """Create ``out`` and prove it writable, before any run starts: OSError naming the path."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(out))
    out.mkdir(parents=True, exist_ok=True)
    try:
        fd, probe = tempfile.mkstemp(prefix=".expllm-probe.", suffix=".tmp", dir=out)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"output folder is not writable ({reason})", str(out)) from None
    os.close(fd)
    os.unlink(probe)


def cmd_exp_cot(args: argparse.Namespace) -> int:
    from engine.aus import resolve_backend
    from engine.data.datasets import read_dataset
    from engine.pipeline import PipelineConfig

    backend, why = resolve_backend(args.au_backend)

    face_mode = {None: "auto", True: "aligned", False: "detector"}[args.aligned]
    if args.face_mode:
        face_mode = args.face_mode
    if getattr(args, "api_key", None):
        os.environ["OPENAI_API_KEY"] = args.api_key  # workers inherit it; never in the manifest
    config = PipelineConfig(
        au_backend=backend,
        au_options=_au_options(args.au_option),
        face_mode=face_mode,
        embed_images=args.embed_images,
        max_pixels=args.max_pixels,
        writer=args.writer,
        llm_model=args.model,
        base_url=args.base_url,
        llm_concurrency=args.llm_concurrency,
        llm_timeout=args.llm_timeout,
        llm_retries=args.llm_retries,
        rewrite=args.rewrite,
        reader=args.reader,
        max_rounds=args.max_rounds,
        word_cap=args.word_cap,
        max_new_tokens=args.max_new_tokens,
        fallback=args.fallback,
        rules=getattr(args, "rules", None),
        keep=getattr(args, "keep", "all"),
    )
    if config.rules:  # fail before the run: a table fitted on another AU back end is an error
        from engine.cot.rules import RuleBook

        RuleBook.for_backend(config.au_backend, config.rules)
    # Spec, split and protocol errors and an unusable output folder stop here, in well under
    # a second, before the AU models load and Prefect starts.
    read_dataset(args.spec, split=args.split, protocol=args.protocol, limit=args.limit)
    check_output_folder(Path(args.out))
    ShardStore(Path(args.out)).manifest()  # a broken manifest: an error naming it, now
    if args.au_backend != backend:
        print(f"AU back end: {backend} ({why})", file=sys.stderr)
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
                    "acceptance",
                    "verified_share",
                    "faithfulness_mean",
                    "rounds_mean",
                    "seconds_per_image",
                )
            }
            | ({"llm": stats["llm"]["total"]} if "llm" in stats else {})
        )
    )
    return 0


def cmd_serve_llm(args: argparse.Namespace) -> int:
    from flows.serve_llm import serve

    serve(
        host=args.host,
        port=args.port,
        backend=args.backend,
        model=args.model,
        port_file=args.port_file,
    )
    return 0


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
        task_runner="thread",
        au_backend=args.au_backend,
        au_option=[],
        aligned=None,
        face_mode=None,
        embed_images=True,
        max_pixels=100_000_000,
        shard_size=16,
        quiet=False,
        **_LLM_DEFAULTS,
    )
    cmd_exp_cot(ns)
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


#: The engine-loop options of ``exp-cot`` at their defaults (the template writer).
_LLM_DEFAULTS = {
    "writer": "template",
    "model": None,
    "base_url": None,
    "api_key": None,
    "llm_concurrency": 4,
    "llm_timeout": 120.0,
    "llm_retries": 5,
    "rewrite": "sections",
    "reader": "rules",
    "max_rounds": 3,
    "word_cap": 130,
    "max_new_tokens": 200,
    "fallback": "reject",
}


def _add_loop_options(run: argparse.ArgumentParser) -> None:
    from engine.cot.writers import READERS, REWRITES, WRITERS

    loop = run.add_argument_group("engine loop (writer, reader, verification rounds)")
    loop.add_argument("--writer", default="template", choices=WRITERS)
    loop.add_argument(
        "--model",
        help="LLM: model id for --writer openai (default $EXPLLM_LLM_MODEL or gpt-4o); "
        "a .gguf file or model folder for --writer local (default SmolLM2-135M-Instruct)",
    )
    loop.add_argument("--base-url", help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL)")
    loop.add_argument("--api-key", help="API key (default $OPENAI_API_KEY)")
    loop.add_argument("--llm-concurrency", type=int, default=4, help="requests in flight")
    loop.add_argument(
        "--llm-timeout",
        type=float,
        default=120.0,
        help="seconds per request before a retry (raise it for a busy CPU server)",
    )
    loop.add_argument(
        "--llm-retries", type=int, default=5, help="retries on 429, 5xx and time-outs"
    )
    loop.add_argument(
        "--rewrite",
        default="sections",
        choices=REWRITES,
        help="LLM rewrites each section of the reference draft (default; headers kept by the "
        "engine) or the whole text",
    )
    loop.add_argument("--reader", default="rules", choices=READERS, help="Des2Exp reader")
    loop.add_argument("--max-rounds", type=int, default=3, help="write-verify rounds per face")
    loop.add_argument("--word-cap", type=int, default=130, help="most words of an LLM draft")
    loop.add_argument("--max-new-tokens", type=int, default=200, help="LLM tokens per draft")
    loop.add_argument(
        "--fallback",
        default="reject",
        choices=["reject", "template"],
        help="faces no LLM draft verified: rejected (default) or given the template's text",
    )


def build_parser() -> argparse.ArgumentParser:
    from engine.aus import list_estimators

    parser = argparse.ArgumentParser(prog="expllm", description=__doc__)
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show native libraries' log lines and the full traceback of an error",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("exp-cot", help="run the Exp-CoT flow on a dataset and write shards")
    run.add_argument("spec", help="KIND:PATH, e.g. ferplus:../shared/data/ferplus")
    run.add_argument("--out", required=True, help="output folder of Parquet shards")
    run.add_argument("--split", help="train, valid or test (default: all)")
    run.add_argument("--limit", type=int, help="deterministic stratified sample of N faces")
    run.add_argument("--protocol", default="majority", choices=["majority", "plurality"])
    run.add_argument("--workers", type=int, default=1, help="parallel workers (see --task-runner)")
    run.add_argument(
        "--task-runner",
        default="thread",
        choices=["thread", "process", "dask", "ray"],
        help="thread (default: the AU models run native code outside the GIL, one pipeline "
        "per thread, no start-up cost), process, dask or ray",
    )
    run.add_argument(
        "--au-backend",
        default="auto",
        choices=list_estimators(),
        help="auto (default): fused when OpenFace's model files are found, else mesh",
    )
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
    run.add_argument(
        "--rules",
        metavar="DIR",
        help="rule tables (default: data/rules/<AU back end>/ when fitted, else data/); an "
        "error when DIR was fitted on another AU back end",
    )
    run.add_argument(
        "--keep",
        default="all",
        choices=["all", "supported"],
        help="all records (default), or only those whose measured AUs support the label",
    )
    _add_loop_options(run)
    run.set_defaults(func=cmd_exp_cot)

    srv = sub.add_parser(
        "serve-llm", help="serve the local writer's model as an OpenAI-compatible endpoint"
    )
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    srv.add_argument("--backend", default="local", choices=["local", "template"])
    srv.add_argument("--model", help="local: a .gguf file or model folder")
    srv.add_argument("--port-file", help="write the bound port here once listening")
    srv.set_defaults(func=cmd_serve_llm)

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
    from flows.cli_evaluate import add_evaluate_parser
    from flows.cli_finetune import add_export_parser, add_finetune_parser

    add_evaluate_parser(sub)
    from flows.cli_rules import add_rules_parser

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
