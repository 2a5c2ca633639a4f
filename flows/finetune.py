"""The ``finetune`` Prefect flow: Exp-CoT shards -> conversations -> a fine-tuned ExpLLM folder.

Steps: read the verified records of the shards, hold out ``eval_samples`` of them, build the
paper's conversations (FER:CoT mix), compute each face's visual input once (the encoder is
frozen), then train projector + LoRA with AdamW (cosine schedule, 3 % warm-up) through
``accelerate`` (one code path for the CPU, one GPU, or ``accelerate launch`` on several with
DeepSpeed ZeRO-2, ``configs/deepspeed_zero2.json``). Checkpoints go to
``<out>/checkpoints/step-NNNNNN/`` every ``checkpoint_every`` steps and at each epoch end; a
rerun with the same ``out`` resumes from the last one. After each epoch the model writes CoTs
for the held-out faces and the label read from each Conclusion (``engine.verify.infer_label``)
is scored. The final model folder is ``out`` itself; ``<out>/training_log.json`` has the history.
"""

from __future__ import annotations

import json
import math
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from engine.conversations import build_samples, dataset_root, read_rows
from engine.cot import CoT
from engine.images import load_image
from engine.verify import infer_label

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
LOG_FILE = "training_log.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """Training settings (the paper's: lr 5e-4, cosine, 3 % warm-up, LoRA r=8 alpha=16)."""

    base: str = "nano"
    epochs: int = 1
    batch_size: int = 4
    lr: float = 5e-4
    warmup: float = 0.03
    max_samples: int | None = None
    eval_samples: int = 16
    mix: tuple[int, int] = (3, 1)
    checkpoint_every: int = 50
    eval_max_new_tokens: int = 320
    seed: int = 0
    progress: bool = True


def face_of(row: dict, root: Path) -> np.ndarray:
    """The RGB face crop of a shard row (its image, cut to the row's face box)."""
    if row.get("image_bytes") is not None:
        import cv2

        decoded = cv2.imdecode(np.frombuffer(row["image_bytes"], np.uint8), cv2.IMREAD_COLOR)
        image = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    else:
        image = load_image(root / row["image_path"])
    x, y, w, h = (row.get(k) for k in ("face_x", "face_y", "face_w", "face_h"))
    if None in (x, y, w, h) or any(isinstance(v, float) and math.isnan(v) for v in (x, y, w, h)):
        return image
    return image[int(y) : int(y) + int(h), int(x) : int(x) + int(w)]


def _checkpoints(out: Path) -> list[Path]:
    return sorted(p for p in (out / CHECKPOINTS).glob("step-*") if (p / STATE_FILE).is_file())


@task(name="finetune-data", cache_policy=NO_CACHE)
def prepare_data(shards: str, config: FinetuneConfig, data_root: str | None) -> dict[str, Any]:
    """Held-out and training rows of the shards, their samples and face crops."""
    import pandas as pd

    frame = read_rows(shards)
    boxes = pd.read_parquet(
        shards, columns=["record_id", "face_x", "face_y", "face_w", "face_h"]
    ).drop_duplicates("record_id")
    frame = frame.merge(boxes, on="record_id", how="left")
    order = np.random.default_rng(config.seed).permutation(len(frame))
    held = frame.iloc[order[: config.eval_samples]]
    train = frame.iloc[order[config.eval_samples :]]
    if config.max_samples is not None:
        train = train.iloc[: config.max_samples]
    if train.empty:
        raise ValueError(f"{shards}: no training records left after holding out evaluation ones")
    root = dataset_root(shards, data_root)
    train = train.sort_values("record_id")
    return {
        "samples": build_samples(train, config.mix),
        "train_faces": [face_of(r, root) for r in train.to_dict("records")],
        "eval_labels": list(held["label"]),
        "eval_faces": [face_of(r, root) for r in held.to_dict("records")],
    }


def evaluate_model(model, faces: list[np.ndarray], labels: list[str], max_new_tokens: int) -> dict:
    """Label accuracy (from the generated Conclusion) and exact-format share on held-out faces."""
    if not faces:
        return {}
    started = time.perf_counter()
    texts: list[str] = []
    for start in range(0, len(faces), 8):
        texts += model.generate(model.visual_inputs(faces[start : start + 8]), max_new_tokens)
    predicted = [infer_label(t) for t in texts]
    return {
        "n": len(faces),
        "accuracy": float(np.mean([p == t for p, t in zip(predicted, labels, strict=True)])),
        "exact_format": float(np.mean([CoT.is_exact(t) for t in texts])),
        "seconds_per_face": (time.perf_counter() - started) / len(faces),
        "example": texts[0],
    }


@task(name="finetune-train", cache_policy=NO_CACHE)
def train(data: dict[str, Any], config: FinetuneConfig, out: str) -> dict[str, Any]:
    """Train with checkpoints and per-epoch evaluation; resume from ``out``'s last checkpoint."""
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from engine.model import create_model, load_model

    logger = get_run_logger()
    target = Path(out)
    accelerator = Accelerator()
    torch.manual_seed(config.seed)
    checkpoints = _checkpoints(target)
    if checkpoints:
        model = load_model(checkpoints[-1], trainable=True)
        state = torch.load(checkpoints[-1] / STATE_FILE, weights_only=False)
        logger.info("resuming from %s (step %d)", checkpoints[-1], state["step"])
    else:
        model, state = create_model(config.base), None
    samples = data["samples"]
    visuals = model.visual_inputs(data["train_faces"])
    examples = [(v, s.messages) for v, s in zip(visuals, samples, strict=True)]
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=config.lr, weight_decay=0.0)
    warmup = max(1, round(config.warmup * total))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    log: dict[str, Any] = {"config": asdict(config), "steps": [], "epochs": []}
    step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        log, step = state["log"], state["step"]
    module, optimizer = accelerator.prepare(model.module, optimizer)
    model.module = module

    def checkpoint() -> None:
        if not accelerator.is_main_process:
            return
        folder = target / CHECKPOINTS / f"step-{step:06d}"
        model.module = accelerator.unwrap_model(module)
        model.save(folder)
        model.module = module
        payload = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "log": log,
        }
        torch.save(payload, folder / STATE_FILE)
        for old in _checkpoints(target)[:-2]:  # keep the last two
            for path in sorted(old.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            old.rmdir()

    for epoch in range(step // steps_per_epoch, config.epochs):
        order = np.random.default_rng(config.seed + epoch).permutation(len(examples))
        loader = DataLoader(
            [examples[i] for i in order], batch_size=config.batch_size, collate_fn=model.collate
        )
        loader = accelerator.skip_first_batches(
            accelerator.prepare(loader), step - epoch * steps_per_epoch
        )
        module.train()
        started, seen = time.perf_counter(), 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            initial=step - epoch * steps_per_epoch,
            total=steps_per_epoch,
            disable=not (config.progress and accelerator.is_main_process),
        )
        for batch in bar:
            loss = module(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.trainable_parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            seen += len(batch["labels"])
            rate = seen / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss.item():.3f}", samples_per_s=f"{rate:.2f}")
            log["steps"].append({"step": step, "loss": loss.item(), "samples_per_s": rate})
            logger.info(
                "epoch %d step %d/%d loss %.4f (%.2f samples/s)",
                epoch + 1,
                step,
                total,
                loss.item(),
                rate,
            )
            if step % config.checkpoint_every == 0 and step % steps_per_epoch:
                checkpoint()
        scores = evaluate_model(
            model, data["eval_faces"], data["eval_labels"], config.eval_max_new_tokens
        )
        log["epochs"].append({"epoch": epoch + 1, "step": step, "eval": scores})
        logger.info(
            "epoch %d held-out: %s", epoch + 1, {k: v for k, v in scores.items() if k != "example"}
        )
        checkpoint()
    if accelerator.is_main_process:
        model.module = accelerator.unwrap_model(module)
        model.save(target)
        log["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (target / LOG_FILE).write_text(json.dumps(log, indent=1) + "\n")
    return log


@flow(name="finetune", log_prints=False)
def finetune(
    shards: str, out: str, config: FinetuneConfig, data_root: str | None = None
) -> dict[str, Any]:
    """Fine-tune ExpLLM on the Exp-CoT shards in ``shards``; the model folder is ``out``."""
    data = prepare_data(shards, config, data_root)
    get_run_logger().info(
        "%d training samples (%d CoT), %d held-out faces",
        len(data["samples"]),
        sum(s.kind == "cot" for s in data["samples"]),
        len(data["eval_faces"]),
    )
    return train(data, config, out)
