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
from dataclasses import fields
from pathlib import Path
from typing import Any

from engine.store.shards import ShardStore
from flows.cli_evaluate import option_value
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
        rules=args.rules,
        keep=args.keep,
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

    default = {f.name: f.default for f in fields(PipelineConfig)}
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
        default=default["au_backend"],
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
        default=default["max_pixels"],
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
        default=default["keep"],
        choices=KEEP,
        help="all records (default), or only those whose measured AUs support the label",
    )
    _add_loop_options(run, default)
    run.set_defaults(func=cmd_exp_cot)


def _add_loop_options(run: argparse.ArgumentParser, default: dict[str, Any]) -> None:
    from engine.cot.writers import FALLBACKS, READERS, REWRITES, WRITERS

    loop = run.add_argument_group("engine loop (writer, reader, verification rounds)")
    loop.add_argument("--writer", default=default["writer"], choices=WRITERS.names())
    loop.add_argument(
        "--model",
        default=default["llm_model"],
        help="LLM: model id for --writer openai (default $EXPLLM_LLM_MODEL or gpt-4o); "
        "a .gguf file or model folder for --writer local (default SmolLM2-135M-Instruct)",
    )
    loop.add_argument(
        "--base-url",
        default=default["base_url"],
        help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL)",
    )
    loop.add_argument("--api-key", help="API key (default $OPENAI_API_KEY)")
    loop.add_argument(
        "--llm-concurrency",
        type=int,
        default=default["llm_concurrency"],
        help="requests in flight",
    )
    loop.add_argument(
        "--llm-timeout",
        type=float,
        default=default["llm_timeout"],
        help="seconds per request before a retry (raise it for a busy CPU server)",
    )
    loop.add_argument(
        "--llm-retries",
        type=int,
        default=default["llm_retries"],
        help="retries on 429, 5xx and time-outs",
    )
    loop.add_argument(
        "--rewrite",
        default=default["rewrite"],
        choices=REWRITES,
        help="LLM rewrites each section of the reference draft (default; headers kept by the "
        "engine) or the whole text",
    )
    loop.add_argument(
        "--reader", default=default["reader"], choices=READERS.names(), help="Des2Exp reader"
    )
    loop.add_argument(
        "--max-rounds", type=int, default=default["max_rounds"], help="write-verify rounds per face"
    )
    loop.add_argument(
        "--word-cap", type=int, default=default["word_cap"], help="most words of an LLM draft"
    )
    loop.add_argument(
        "--max-new-tokens",
        type=int,
        default=default["max_new_tokens"],
        help="LLM tokens per draft",
    )
    loop.add_argument(
        "--fallback",
        default=default["fallback"],
        choices=FALLBACKS,
        help="faces no LLM draft verified: rejected (default) or given the template's text",
    )


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
