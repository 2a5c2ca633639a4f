"""The ``exp_cot`` Prefect flow: dataset -> verified CoT Parquet shards.

One task per shard (coarse on purpose: thousands of tiny tasks overload Prefect's local SQLite
event pipeline). Each task builds the engine pipeline once per worker process, processes its
records and writes its shard atomically; a rerun skips shards already in the manifest, so a
killed run resumes without losing or duplicating records.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from tqdm import tqdm

from engine.aus import ESTIMATORS
from engine.data.datasets import read_dataset
from engine.pipeline import ExpCoTPipeline, PipelineConfig
from engine.store.shards import LLM_CACHE, ShardStore
from engine.store.stats import shard_stats
from engine.types import FaceRecord


@dataclass(frozen=True)
class ShardPlan:
    """One shard to write: its file name and records."""

    name: str
    records: list[FaceRecord]


def plan_shards(records: list[FaceRecord], shard_size: int) -> list[ShardPlan]:
    """Cut records (already in a deterministic order) into fixed-size shards."""
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {shard_size}")
    return [
        ShardPlan(f"shard-{i // shard_size:05d}", records[i : i + shard_size])
        for i in range(0, len(records), shard_size)
    ]


_PER_THREAD = threading.local()


def _pipeline(config: PipelineConfig, cache_dir: str) -> ExpCoTPipeline:
    """One pipeline per worker (process or thread) and config: model loading is the costly part,
    and native models such as MediaPipe's graphs must not be shared between threads."""
    pipelines = _PER_THREAD.__dict__.setdefault("pipelines", {})
    key = (config, cache_dir)
    if key not in pipelines:
        pipelines[key] = ExpCoTPipeline(config, cache_dir=Path(cache_dir))
    return pipelines[key]


@task(name="exp-cot-shard", retries=0)
def process_shard(plan: ShardPlan, config: PipelineConfig, out_dir: str, run_config: dict) -> dict:
    """Process and write one shard; returns its manifest entry."""
    started = time.perf_counter()
    result = _pipeline(config, str(Path(out_dir) / LLM_CACHE)).run(plan.records)
    entry = {"seconds": time.perf_counter() - started, "records": len(plan.records)}
    if result.usage is not None:
        entry["llm"] = result.usage
    ShardStore(Path(out_dir), run_config).write_shard(
        plan.name, result.rows, result.rejected, entry
    )
    return {"name": plan.name, "rows": len(result.rows), "rejected": len(result.rejected), **entry}


def task_runner_for(kind: str, workers: int):
    """``thread`` (the CLI's default), ``process``, ``dask`` or ``ray``."""
    if kind == "process":
        return (
            ProcessPoolTaskRunner(max_workers=workers) if workers > 1 else ThreadPoolTaskRunner(1)
        )
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise ImportError("--task-runner dask needs: pip install 'expllm[dask]'") from exc
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1})
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise ImportError("--task-runner ray needs: pip install 'expllm[ray]'") from exc
        return RayTaskRunner(init_kwargs={"num_cpus": workers})
    raise ValueError(f"unknown task runner {kind!r}; choose process, thread, dask or ray")


@flow(name="exp_cot", log_prints=False)
def exp_cot(
    spec: str,
    out: str,
    split: str | None = None,
    limit: int | None = None,
    protocol: str = "majority",
    config: PipelineConfig = PipelineConfig(),  # noqa: B008 - frozen value object
    shard_size: int = 256,
    progress: bool = False,
) -> dict:
    """Run the Exp-CoT pipeline over ``spec`` and write shards and ``_stats.json`` into ``out``.

    ``progress`` shows a bar over records. Returns the run statistics.
    """
    logger = get_run_logger()
    dataset = read_dataset(spec, split=split, protocol=protocol, limit=limit)
    run_config = {
        "spec": spec,
        "split": split,
        "limit": limit,
        "protocol": protocol,
        "shard_size": shard_size,
        "pipeline": config.to_dict(),
        "au_licence": ESTIMATORS.get(config.au_backend).licence,
    }
    store = ShardStore(Path(out), run_config)
    store.open()
    if store.swept:
        logger.warning("removed temporary files left by a killed run: %s", store.swept)
    done = store.finished()
    plans = [p for p in plan_shards(dataset.records, shard_size) if p.name not in done]
    logger.info(
        "%d records, %d shards to write, %d already done", len(dataset), len(plans), len(done)
    )
    started = time.perf_counter()
    futures = [process_shard.submit(p, config, str(out), run_config) for p in plans]
    with tqdm(
        total=sum(len(p.records) for p in plans), unit="face", disable=not progress, desc="exp-cot"
    ) as bar:
        for future in as_completed(futures):
            bar.update(future.result()["records"])
    stats = shard_stats(
        Path(out), dropped=dataset.dropped, wall_seconds=time.perf_counter() - started
    )
    store.write_stats(stats)
    return stats
