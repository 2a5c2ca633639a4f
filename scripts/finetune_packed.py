"""Fine-tune the nano ExpLLM from a compact data pack, on a machine without the datasets or Prefect.

The same stages as ``expllm finetune`` (``engine.model.training.training_set`` and ``train_model``,
same seeds, held-out rows and conversations), fed from one xz file instead of shards + images,
so that a lent GPU with no access to ``../shared`` can run it. Then it writes a CoT for every
test face (``engine.model.training.generate_cots``) into a predictions
CSV (``image_path``, ``label``
read from the Conclusion, ``cot``) that ``expllm evaluate --model-kind csv`` scores here, with the
AU faithfulness measured on the same images.

    # here: the pack (train: labelled rows of an Exp-CoT run, the verified ones giving CoT
    # turns; test: every face of the split)
    python scripts/finetune_packed.py --pack .work/expllm_pack.xz \\
        --shards runs/ferplus-train --test-data ferplus:../shared/data/ferplus \\
        --test-shards runs/ferplus-test
    # anywhere with torch, transformers, peft, gguf and accelerate (CPU or GPU)
    python scripts/finetune_packed.py --packed .work/expllm_pack.xz --out runs/expllm-nano \\
        --epochs 2 --batch-size 32 --mixed-precision bf16 --predictions test_cots.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import lzma
import time
from pathlib import Path

import numpy as np
import pandas as pd

from engine.cot.verify import conclusion_label
from engine.model.config import GENERATION_BATCH
from engine.model.training import (
    AU_COLUMN,
    LOG_FILE,
    FinetuneConfig,
    au_readings,
    generate_cots,
    train_model,
    training_set,
)

ROW_COLUMNS = ["record_id", "image_path", "label", "cot_text", "verified"]


def grey48(face: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), (48, 48), cv2.INTER_AREA)


def write_pack(path: Path, shards: str, test_data: str, test_shards: str, split: str) -> None:
    from engine.data.datasets import read_dataset
    from engine.data.images import load_image
    from engine.model.conversations import dataset_root
    from engine.model.training import face_of, training_rows
    from engine.store.stats import read_shards

    frame = training_rows(shards)
    root = dataset_root(shards)
    aus = [c for c in frame.columns if AU_COLUMN.match(c)]
    train_x = np.stack([grey48(face_of(r, root)) for r in frame.to_dict("records")])
    records = read_dataset(test_data, split=split, protocol="majority").records
    measured = read_shards(Path(test_shards), ["record_id", *aus]).set_index("record_id")
    test = pd.DataFrame(
        {"record_id": [r.record_id for r in records], "image_path": [r.relpath for r in records]}
    )
    test["label"] = [r.label for r in records]
    test = test.join(measured, on="record_id")
    test_x = np.stack([grey48(load_image(r)) for r in records])
    arrays = {
        "train_x": train_x,
        "train_rows": _parquet(frame[ROW_COLUMNS + aus]),
        "test_x": test_x,
        "test_rows": _parquet(test),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(path, "wb", preset=9) as fh:
        fh.write(buffer.getvalue())
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {len(frame)} train rows, "
        f"{len(test)} test faces ({test[aus[0]].notna().sum()} with AUs)"
    )


def _parquet(frame: pd.DataFrame) -> np.ndarray:
    buffer = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buffer)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def read_pack(path: Path) -> dict:
    with lzma.open(path, "rb") as fh:
        arrays = np.load(io.BytesIO(fh.read()))
        data = {k: arrays[k] for k in arrays.files}
    for key in ("train_rows", "test_rows"):
        data[key] = pd.read_parquet(io.BytesIO(data[key].tobytes()))
    return data


def rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def run_packed(args: argparse.Namespace) -> None:
    data = read_pack(args.packed)
    frame, faces = data["train_rows"], data["train_x"]
    if "verified" not in frame:  # an older pack: verified rows only
        frame["verified"] = True
    index = {rid: i for i, rid in enumerate(frame["record_id"])}
    if args.limit:
        frame = frame.iloc[: args.limit]
    config = FinetuneConfig(
        base="nano",
        epochs=args.epochs,
        batch_size=args.batch_size,
        generation_batch=args.generate_batch,
        lr=args.lr,
        eval_samples=args.eval_samples,
        checkpoint_every=args.checkpoint_every,
        eval_max_new_tokens=args.max_new_tokens,
        mixed_precision=args.mixed_precision,
        seed=args.seed,
        progress=False,
    )
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    if args.skip_training:
        from engine.model import load_model

        model = load_model(args.out).to_device()
        history = json.loads((Path(args.out) / LOG_FILE).read_text())
    else:
        train = training_set(frame, lambda row: rgb(faces[index[row["record_id"]]]), config)
        model, history = train_model(train, config, args.out, log=lambda m: print(m, flush=True))
    if not args.predictions:
        return
    test = data["test_rows"]
    if args.test_limit:
        test = test.iloc[: args.test_limit]
    test_faces = [rgb(x) for x in data["test_x"][: len(test)]]
    started = time.perf_counter()
    visuals = model.visual_inputs(test_faces, au_readings(test))
    texts = generate_cots(model, visuals, args.max_new_tokens, args.generate_batch)
    generation = time.perf_counter() - started
    tokens = sum(model.count_tokens(t) for t in texts)
    predicted = [conclusion_label(t) for t in texts]
    out = Path(args.out) / args.predictions
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_path", "label", "cot"])
        for path, label, text in zip(test["image_path"], predicted, texts, strict=True):
            writer.writerow([path, label or "", text])
    accuracy = float(np.mean([p == t for p, t in zip(predicted, test["label"], strict=True)]))
    summary = {
        "train_samples_per_s": np.mean([s["samples_per_s"] for s in history["steps"][-20:]]),
        "test_faces": len(test),
        "test_accuracy": accuracy,
        "generation_seconds_per_face": generation / len(test),
        "generation_tokens_per_s": tokens / generation,
        "generate_batch": args.generate_batch,
        "peak_gpu_mb": history.get("peak_gpu_mb"),
        "held_out": history["epochs"][-1]["eval"] if history["epochs"] else None,
    }
    (Path(args.out) / "packed_run.json").write_text(json.dumps(summary, indent=1, default=float))
    print(json.dumps(summary, indent=1, default=float), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, help="write a pack to this file")
    parser.add_argument("--shards", default="runs/ferplus-train")
    parser.add_argument("--test-data", default="ferplus:../shared/data/ferplus")
    parser.add_argument("--test-shards", default="runs/ferplus-test")
    parser.add_argument("--split", default="test")
    parser.add_argument("--packed", type=Path, help="train from this pack")
    parser.add_argument("--out", default="runs/expllm-nano")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="train on the first N rows only (smoke runs)")
    parser.add_argument("--skip-training", action="store_true", help="use the model in --out")
    parser.add_argument("--predictions", help="CSV (in --out) of CoTs for the pack's test faces")
    parser.add_argument("--test-limit", type=int, help="first N test faces only")
    parser.add_argument("--generate-batch", type=int, default=GENERATION_BATCH)
    args = parser.parse_args()
    if args.pack:
        write_pack(args.pack, args.shards, args.test_data, args.test_shards, args.split)
    elif args.packed:
        run_packed(args)
    else:
        parser.error("give --pack FILE or --packed FILE")


if __name__ == "__main__":
    main()
