"""Images per second of the whole Exp-CoT flow beside the bare AU back end, same images, same run.

    python benchmarks/flow_throughput.py [--spec ferplus:../shared/data/ferplus] [--limit 600]
        [--au-backend mesh] [--workers 2]

The bare back end runs in this process (image read + face + AU estimate, model already
loaded). The flow runs through Prefect with ``--workers`` workers (threads by default, as the
CLI; ``--task-runner process`` for processes), writing shards to a temporary
folder; its rate counts from submitting the first shard to the last shard written (the
processing rate), and separately the whole call including Prefect's start and the dataset read.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from flows.runtime import configure_offline

configure_offline()

from engine.aus import create_estimator  # noqa: E402
from engine.data.datasets import read_dataset  # noqa: E402
from engine.data.faces import FaceFinder  # noqa: E402
from engine.data.images import load_image  # noqa: E402
from engine.pipeline import PipelineConfig  # noqa: E402
from engine.resources import shared_dir  # noqa: E402
from engine.types import StageError  # noqa: E402


def bare_backend(records, backend: str, options: dict) -> tuple[float, int]:
    estimator = create_estimator(backend, **options)
    finder = FaceFinder()
    estimator.estimate(finder.find(load_image(records[0]), records[0]), records[0])  # warm-up
    ok = 0
    started = time.perf_counter()
    for record in records:
        try:
            image = load_image(record)
            estimator.estimate(finder.find(image, record), record)
            ok += 1
        except StageError:
            pass
    elapsed = time.perf_counter() - started
    estimator.close()
    return len(records) / elapsed, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default=f"ferplus:{shared_dir() / 'data' / 'ferplus'}")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=600)
    parser.add_argument("--au-backend", default="mesh")
    parser.add_argument("--au-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--task-runner", default="thread", choices=["process", "thread"])
    parser.add_argument("--shard-size", type=int, default=256)  # the CLI default
    args = parser.parse_args()
    options = dict(pair.split("=", 1) for pair in args.au_option)
    records = read_dataset(args.spec, split=args.split, limit=args.limit).records

    bare_rate, ok = bare_backend(records, args.au_backend, options)
    print(
        f"bare {args.au_backend} back end (1 process): {bare_rate:.1f} images/s "
        f"({ok}/{len(records)} with a face)"
    )

    from flows.exp_cot import exp_cot, task_runner_for

    config = PipelineConfig(au_backend=args.au_backend, au_options=tuple(sorted(options.items())))
    with tempfile.TemporaryDirectory() as tmp:
        run = exp_cot.with_options(task_runner=task_runner_for(args.task_runner, args.workers))
        started = time.perf_counter()
        stats = run(
            spec=args.spec,
            out=tmp,
            split=args.split,
            limit=args.limit,
            config=config,
            shard_size=args.shard_size,
        )
        total = time.perf_counter() - started
    flow_rate = len(records) / stats["wall_seconds_this_run"]
    print(
        f"exp_cot flow, {args.workers} {args.task_runner} workers: {flow_rate:.1f} images/s "
        f"processing ({len(records) / total:.1f} images/s including Prefect start-up and the "
        f"dataset read, {total:.1f} s)"
    )
    print(f"flow / bare back end: {flow_rate / bare_rate:.0%} (bar: >= 80%)")


if __name__ == "__main__":
    main()
