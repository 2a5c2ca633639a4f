"""CoTs per second of stages 4-7 alone (rules, render, verify, write) from precomputed AUs.

    python benchmarks/describe_throughput.py [--from-run runs/ferplus-test] [--count 5000]

AUs come from an earlier run's shards (``--from-run``) or, without one, from random readings
with a fixed seed. Prints CoTs/s for the in-memory stages and with the Parquet write.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import pandas as pd

from engine.aus import au_definitions
from engine.pipeline import ExpCoTPipeline, PipelineConfig
from engine.store.shards import ShardStore
from engine.store.stats import read_shards
from engine.types import EMOTIONS, AUReading, FaceRecord


class _NoEstimator:
    """Stands in for the AU back end: this benchmark starts after stage 3."""

    needs_pixels = False
    model_version = "precomputed"

    def close(self) -> None:
        pass


def readings_from_run(folder: Path, count: int) -> list[tuple[FaceRecord, AUReading]]:
    frame = read_shards(folder)
    codes = [c for c in au_definitions() if c in frame.columns]
    items = []
    for row in frame.head(count).itertuples(index=False):
        row = row._asdict()
        intensities = {c: float(row[c]) for c in codes if pd.notna(row[c])}
        sides = {
            c: (float(row[f"{c}_L"]), float(row[f"{c}_R"]))
            for c in codes
            if pd.notna(row.get(f"{c}_L"))
        }
        record = FaceRecord(
            row["record_id"],
            row["dataset"],
            row["split"],
            Path("."),
            row["image_path"],
            row["label"],
        )
        items.append((record, AUReading(intensities, row["au_backend"], "run", sides=sides)))
    return items


def random_readings(count: int) -> list[tuple[FaceRecord, AUReading]]:
    rng = random.Random(0)
    codes = list(au_definitions())
    items = []
    for index in range(count):
        chosen = rng.sample(codes, rng.randint(0, 8))
        reading = AUReading({c: rng.uniform(0, 5) for c in chosen}, "random", "seed0")
        record = FaceRecord(
            f"bench/{index}",
            "bench",
            "test",
            Path("."),
            f"{index}.png",
            EMOTIONS[index % len(EMOTIONS)],
        )
        items.append((record, reading))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from-run", type=Path)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--shard-size", type=int, default=256)
    args = parser.parse_args()
    items = (
        readings_from_run(args.from_run, args.count)
        if args.from_run
        else random_readings(args.count)
    )
    pipeline = ExpCoTPipeline(PipelineConfig(au_backend="table"), estimator=_NoEstimator())
    started = time.perf_counter()
    rows = [pipeline.describe(record, reading) for record, reading in items]
    described = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        store = ShardStore(Path(tmp), {"benchmark": True})
        store.open()
        write_started = time.perf_counter()
        for start in range(0, len(rows), args.shard_size):
            store.write_shard(
                f"shard-{start // args.shard_size:05d}",
                rows[start : start + args.shard_size],
                [],
                {},
            )
        written = time.perf_counter() - write_started
    source = args.from_run or "random readings (seed 0)"
    print(f"AUs from: {source}; {len(items)} faces")
    print(f"stages 4-6 (rules, render, verify): {len(items) / described:,.0f} CoTs/s")
    print(f"stages 4-7 (with Parquet shards):    {len(items) / (described + written):,.0f} CoTs/s")
    print(
        f"verified: {sum(r['verified'] for r in rows) / len(rows):.1%}, faithfulness min "
        f"{min(r['faithfulness'] for r in rows):.2f}"
    )


if __name__ == "__main__":
    main()
