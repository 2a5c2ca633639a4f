"""``expllm exp-cot`` (dataset -> verified CoT shards) and ``expllm serve-llm`` (the writer's model
over HTTP). Option defaults come from ``engine.pipeline_config.PipelineConfig``, choices from the
writer and reader registries (``engine.cot.writers``)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from engine.store.shards import ShardStore
from flows.cli_evaluate import option_value
from flows.cli_options import add_field_options, from_args
from flows.runtime import mark_run

#: Figures of the run statistics printed when a run ends.
_SUMMARY = (
    "records",
    "rejected",
    "acceptance",
    "verified_share",
    "faithfulness_mean",
    "rounds_mean",
    "seconds_per_image",
)


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
    from engine.pipeline_config import PipelineConfig

    backend, why = resolve_backend(args.au_backend)

    face_mode = {None: "auto", True: "aligned", False: "detector"}[args.aligned]
    if args.face_mode:
        face_mode = args.face_mode
    if args.api_key:
        os.environ["OPENAI_API_KEY"] = args.api_key  # workers inherit it; never in the manifest
    config = from_args(
        PipelineConfig,
        args,
        au_backend=backend,
        au_options=_au_options(args.au_option),
        face_mode=face_mode,
        llm_model=args.model,
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
    stats = from_args(run, args, out=str(out), config=config, progress=not args.quiet)
    summary = {k: stats[k] for k in _SUMMARY}
    print(json.dumps(summary | ({"llm": stats["llm"]["total"]} if "llm" in stats else {})))
    return 0


def cmd_serve_llm(args: argparse.Namespace) -> int:
    from engine.cot.writers.server import serve

    serve(
        host=args.host,
        port=args.port,
        backend=args.backend,
        model=args.model,
        port_file=args.port_file,
    )
    return 0


def add_exp_cot_parser(sub: argparse._SubParsersAction) -> None:
    """``expllm exp-cot SPEC --out DIR [options]``."""
    from engine.aus import list_estimators
    from engine.pipeline_config import KEEP, PipelineConfig

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
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--rules",
        metavar="DIR",
        help="rule tables (default: data/rules/<AU back end>/ when fitted, else data/); an "
        "error when DIR was fitted on another AU back end",
    )
    choices = {"au_backend": list_estimators(), "keep": KEEP}
    add_field_options(run, PipelineConfig, _RUN_OPTIONS, choices)
    _add_loop_options(run)
    run.set_defaults(func=cmd_exp_cot)


#: ``PipelineConfig`` options of the run: flag, field (its default and type), help.
_RUN_OPTIONS = (
    (
        "--au-backend",
        "au_backend",
        "auto (default): fused when OpenFace's model files are found, else mesh",
    ),
    ("--max-pixels", "max_pixels", "reject larger images (decompression bombs)"),
    (
        "--keep",
        "keep",
        "all records (default), or only those whose measured AUs support the label",
    ),
)
#: The engine loop's options: flag, ``PipelineConfig`` field (its default and type), help.
_LOOP_OPTIONS = (
    ("--writer", "writer", None),
    (
        "--model",
        "llm_model",
        "LLM: model id for --writer openai (default $EXPLLM_LLM_MODEL or gpt-4o); "
        "a .gguf file or model folder for --writer local (default SmolLM2-135M-Instruct)",
    ),
    ("--base-url", "base_url", "OpenAI-compatible endpoint (default $OPENAI_BASE_URL)"),
    ("--api-key", None, "API key (default $OPENAI_API_KEY)"),
    ("--llm-concurrency", "llm_concurrency", "requests in flight"),
    (
        "--llm-timeout",
        "llm_timeout",
        "seconds per request before a retry (raise it for a busy CPU server)",
    ),
    ("--llm-retries", "llm_retries", "retries on 429, 5xx and time-outs"),
    (
        "--rewrite",
        "rewrite",
        "LLM rewrites each section of the reference draft (default; headers kept by the "
        "engine) or the whole text",
    ),
    ("--reader", "reader", "Des2Exp reader"),
    ("--max-rounds", "max_rounds", "write-verify rounds per face"),
    ("--word-cap", "word_cap", "most words of an LLM draft"),
    ("--max-new-tokens", "max_new_tokens", "LLM tokens per draft"),
    (
        "--fallback",
        "fallback",
        "faces no LLM draft verified: rejected (default) or given the template's text",
    ),
)


def _add_loop_options(run: argparse.ArgumentParser) -> None:
    from engine.cot.writers import FALLBACKS, READERS, REWRITES, WRITERS
    from engine.pipeline_config import PipelineConfig

    choices = {
        "writer": WRITERS.names(),
        "reader": READERS.names(),
        "rewrite": REWRITES,
        "fallback": FALLBACKS,
    }
    loop = run.add_argument_group("engine loop (writer, reader, verification rounds)")
    add_field_options(loop, PipelineConfig, _LOOP_OPTIONS, choices)


def add_serve_llm_parser(sub: argparse._SubParsersAction) -> None:
    """``expllm serve-llm [--backend local|template]``."""
    from engine.cot.writers.server import SERVED

    srv = sub.add_parser(
        "serve-llm", help="serve the local writer's model as an OpenAI-compatible endpoint"
    )
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    srv.add_argument("--backend", default=SERVED[0], choices=SERVED)
    srv.add_argument("--model", help="local: a .gguf file or model folder")
    srv.add_argument("--port-file", help="write the bound port here once listening")
    srv.set_defaults(func=cmd_serve_llm)
