"""Fine-tune the nano ExpLLM from a compact data pack, on a machine without the datasets or Prefect.

The same stages as ``expllm finetune`` (``engine.model.training.training_set`` and ``train_model``,
same seeds, held-out rows and conversations), fed from one xz file (``scripts._packs``: faces
coded losslessly) instead of shards + images, so that a lent GPU with no access to ``../shared``
can run it in one call (``scripts/device_expllm.sh``). ``--init`` starts from a saved model (a
warm start). Then it scores the pack's evaluation faces (``--split``, e.g. FER+ Valid): the
encoder head, the head prior-corrected (the shipped planned reading), the LM's own answer to
the label-only question (``engine.model.answers.label_answers``: the reading issue 13 asks to
beat the head) and that answer + 4 x the corrected head, and writes CoTs for the first
``--test-limit`` faces under the model's decoding changed by ``--option KEY=VALUE`` into a
predictions CSV (``image_path``, ``label`` read from the Conclusion, ``cot``) that ``expllm
evaluate --model-kind csv`` scores here. Figures go to ``packed_run.json``.

    # here: the pack (train: labelled rows of an Exp-CoT run, the verified ones giving CoT
    # turns; evaluation: the faces of one split with the AUs of its Exp-CoT run)
    python scripts/finetune_packed.py --pack .work/expllm_pack.xz --shards runs/views-train \
        --test-data ferplus:../shared/data/ferplus --split valid --test-shards runs/v13-valid
    # anywhere with torch, transformers, peft, gguf and accelerate (CPU or GPU)
    python scripts/finetune_packed.py --packed .work/expllm_pack.xz --out runs/expllm-nano \
        --init engine/weights/expllm_nano --mix 1:1 --epochs 1 --batch-size 32 \
        --mixed-precision bf16 --predictions valid_cots.csv --test-limit 512
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from engine.cot.verify import conclusion_label
from engine.evaluation.scoring import argmax_labels, classification_metrics
from engine.model.config import GENERATION_BATCH
from engine.model.conversations import parse_mix
from engine.model.encoder import grey_face
from engine.model.training import (
    AU_COLUMN,
    LOG_FILE,
    FinetuneConfig,
    au_readings,
    generate_cots,
    train_model,
    training_set,
)
from scripts._packs import read_pack, write_pack

ROW_COLUMNS = ["record_id", "image_path", "label", "cot_text", "verified"]


def pack(
    path: Path,
    shards: str,
    test_data: str,
    test_shards: str,
    split: str,
    train_faces: int | None,
    test_faces: int | None,
) -> None:
    """Write the pack: ``train_faces`` rows of ``shards`` (all by default; else drawn by seed 0)
    and ``test_faces`` faces of ``split`` (likewise), grey 48 x 48, with their rows."""
    from engine.data.datasets import read_dataset
    from engine.data.images import load_image
    from engine.model.base import face_margin_of
    from engine.model.conversations import dataset_root
    from engine.model.training import face_of, training_rows
    from engine.store.stats import read_shards

    frame = training_rows(shards)
    frame = frame.iloc[_drawn(len(frame), train_faces)]
    root = dataset_root(shards)
    aus = [c for c in frame.columns if AU_COLUMN.match(c)]
    margin = face_margin_of("nano")
    train_x = np.stack([grey_face(face_of(r, root, margin)) for r in frame.to_dict("records")])
    records = read_dataset(test_data, split=split, protocol="majority").records
    records = [records[i] for i in _drawn(len(records), test_faces)]
    measured = read_shards(Path(test_shards), ["record_id", *aus]).set_index("record_id")
    test = pd.DataFrame(
        {"record_id": [r.record_id for r in records], "image_path": [r.relpath for r in records]}
    )
    test["label"] = [r.label for r in records]
    test = test.join(measured, on="record_id")
    test_x = np.stack([grey_face(load_image(r)) for r in records])
    arrays = {
        "train_x": train_x,
        "train_rows": _parquet(frame[ROW_COLUMNS + aus]),
        "test_x": test_x,
        "test_rows": _parquet(test),
    }
    write_pack(path, arrays, faces=("train_x", "test_x"))
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {len(frame)} train rows, "
        f"{len(test)} {split} faces ({test[aus[0]].notna().sum()} with AUs)"
    )


def _drawn(total: int, count: int | None) -> np.ndarray:
    """Indices of ``count`` of ``total`` items drawn by seed 0, in order (all when None)."""
    if count is None or count >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(0).choice(total, count, replace=False))


def _parquet(frame: pd.DataFrame) -> np.ndarray:
    buffer = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buffer)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def unpack(path: Path) -> dict:
    """The pack's arrays, its row tables as data frames."""
    data = read_pack(path)
    for key in ("train_rows", "test_rows"):
        data[key] = pd.read_parquet(io.BytesIO(data[key].tobytes()))
    return data


def rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def run_packed(args: argparse.Namespace) -> None:
    data = unpack(args.packed)
    frame, faces = data["train_rows"], data["train_x"]
    if "verified" not in frame:  # an older pack: verified rows only
        frame["verified"] = True
    index = {rid: i for i, rid in enumerate(frame["record_id"])}
    config = FinetuneConfig(
        base="nano",
        init=args.init,
        epochs=args.epochs,
        batch_size=args.batch_size,
        generation_batch=args.generate_batch,
        lr=args.lr,
        max_samples=args.limit,
        eval_samples=args.eval_samples,
        mix=parse_mix(args.mix),
        checkpoint_every=args.checkpoint_every,
        eval_max_new_tokens=args.max_new_tokens,
        mixed_precision=args.mixed_precision,
        seed=args.seed,
        progress=False,
    )
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    started = time.perf_counter()
    if args.skip_training:
        from engine.model import load_model

        model = load_model(args.out).to_device()
        history = json.loads((Path(args.out) / LOG_FILE).read_text())
    else:
        train = training_set(frame, lambda row: rgb(faces[index[row["record_id"]]]), config)
        model, history = train_model(train, config, args.out, log=lambda m: print(m, flush=True))
    summary = {
        "pack": str(args.packed),
        "training_seconds": time.perf_counter() - started,
        "train_samples_per_s": np.mean([s["samples_per_s"] for s in history["steps"][-20:]]),
        "peak_gpu_mb": history.get("peak_gpu_mb"),
        "held_out": history["epochs"][-1]["eval"] if history["epochs"] else None,
        **readings(model, data["test_rows"], data["test_x"], args),
    }
    (Path(args.out) / "packed_run.json").write_text(json.dumps(summary, indent=1, default=float))
    print(json.dumps(summary, indent=1, default=float), flush=True)


def readings(model, test: pd.DataFrame, test_x: np.ndarray, args: argparse.Namespace) -> dict:
    """The pack's evaluation faces read by the head, the corrected head, the LM's own answer and
    the two together; CoTs of the first ``args.test_limit`` faces (``args.predictions``)."""
    from engine.model.answers import label_answers

    started = time.perf_counter()
    visuals = model.visual_inputs([rgb(x) for x in test_x], au_readings(test))
    labels = list(test["label"])
    decoding = model.config.decoding.with_options(dict(o.split("=", 1) for o in args.option))
    head = np.stack([v.log_prior for v in visuals])
    corrected = decoding.balanced(head)
    answers = label_answers(model, visuals)
    figures = {
        "faces": len(labels),
        "encoder_head": classification_metrics(labels, argmax_labels(head)).headline(),
        "corrected_head": classification_metrics(labels, argmax_labels(corrected)).headline(),
        "lm_answer": classification_metrics(labels, argmax_labels(answers)).headline(),
        "lm_answer_and_4_corrected_head": classification_metrics(
            labels, argmax_labels(answers + 4 * corrected)
        ).headline(),
        "reading_seconds": time.perf_counter() - started,
    }
    if not args.predictions:
        return figures
    shown = slice(0, args.test_limit)
    started = time.perf_counter()
    texts = generate_cots(
        model, visuals[shown], args.max_new_tokens, args.generate_batch, decoding=decoding
    )
    generation = time.perf_counter() - started
    predicted = [conclusion_label(t) for t in texts]
    out = Path(args.out) / args.predictions
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_path", "label", "cot"])
        for path, label, text in zip(test["image_path"][shown], predicted, texts, strict=True):
            writer.writerow([path, label or "", text])
    return figures | {
        "cot_faces": len(texts),
        "cot_options": args.option,
        "cot_conclusion": classification_metrics(labels[shown], predicted).headline(),
        "generation_seconds_per_face": generation / max(1, len(texts)),
        "generation_tokens_per_s": sum(model.count_tokens(t) for t in texts) / generation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, help="write a pack to this file")
    parser.add_argument("--shards", default="runs/ferplus-train")
    parser.add_argument("--test-data", default="ferplus:../shared/data/ferplus")
    parser.add_argument("--test-shards", default="runs/ferplus-test")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--train-faces", type=int, help="with --pack: this many training rows (seed 0; all)"
    )
    parser.add_argument(
        "--test-faces", type=int, help="with --pack: this many evaluation faces (seed 0; all)"
    )
    parser.add_argument("--packed", type=Path, help="train from this pack")
    parser.add_argument("--init", help="a saved model folder to start from (a warm start)")
    parser.add_argument(
        "--mix", default="3:1", help="label-only:CoT shares of the verified rows' turns"
    )
    parser.add_argument("--out", default="runs/expllm-nano")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--max-new-tokens", type=int, default=320)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="train on N rows only (smoke runs)")
    parser.add_argument("--skip-training", action="store_true", help="use the model in --out")
    parser.add_argument("--predictions", help="CSV (in --out) of CoTs for the pack's test faces")
    parser.add_argument("--test-limit", type=int, help="CoTs of the first N evaluation faces")
    parser.add_argument(
        "--option", action="append", default=[], help="KEY=VALUE decoding setting of the CoTs"
    )
    parser.add_argument("--generate-batch", type=int, default=GENERATION_BATCH)
    args = parser.parse_args()
    if args.pack:
        pack(
            args.pack,
            args.shards,
            args.test_data,
            args.test_shards,
            args.split,
            args.train_faces,
            args.test_faces,
        )
    elif args.packed:
        run_packed(args)
    else:
        parser.error("give --pack FILE or --packed FILE")


if __name__ == "__main__":
    main()
