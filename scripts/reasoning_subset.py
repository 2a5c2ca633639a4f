"""Draw a training subset of an Exp-CoT run that over-represents texts which weigh contrary
evidence, for a short (CPU) fine-tune that teaches that phrasing.

Writes ``--out`` as an Exp-CoT output folder (the run's manifest and one shard) holding, drawn
by ``--seed``, ``--contrary`` verified records whose measured evidence favours another emotion
than their verdict (``au_supports_label`` false: the text states the strongest contrary cue and
the cues consistent with the verdict) and ``--supported`` verified records whose evidence
leads with it. Train on it with ``expllm finetune --shards OUT --mix 0:1``.

    python scripts/reasoning_subset.py --shards runs/v13-train --out runs/v13-reasoning \\
        --contrary 480 --supported 320 --seed 0
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from engine.store.shards import MANIFEST
from engine.store.stats import read_shards


def reasoning_subset(frame: pd.DataFrame, contrary: int, supported: int, seed: int) -> pd.DataFrame:
    """``contrary`` + ``supported`` verified rows of ``frame``, drawn by ``seed``."""
    verified = frame[frame["verified"].fillna(False).astype(bool) & frame["cot_text"].notna()]
    rng = np.random.default_rng(seed)
    parts = []
    for wanted, group in (
        (contrary, verified[~verified["au_supports_label"].astype(bool)]),
        (supported, verified[verified["au_supports_label"].astype(bool)]),
    ):
        if wanted > len(group):
            raise ValueError(f"{wanted} rows asked, only {len(group)} verified rows of that kind")
        parts.append(group.iloc[np.sort(rng.choice(len(group), wanted, replace=False))])
    return pd.concat(parts).sort_values("record_id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, required=True, help="Exp-CoT output folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--contrary", type=int, default=480)
    parser.add_argument("--supported", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.shards / MANIFEST).is_file():
        raise SystemExit(f"{args.shards}: no {MANIFEST}; not an Exp-CoT output folder")
    subset = reasoning_subset(read_shards(args.shards), args.contrary, args.supported, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.shards / MANIFEST, args.out / MANIFEST)
    subset.to_parquet(args.out / "shard-00000.parquet", index=False)
    print(f"{args.out}: {len(subset)} rows ({args.contrary} contrary, {args.supported} supported)")


if __name__ == "__main__":
    main()
