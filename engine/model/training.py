"""Fine-tuning ExpLLM: labelled Exp-CoT rows -> conversations -> a trained model folder.

Pure stage (no Prefect): ``training_set`` holds out ``eval_samples`` rows and builds the
paper's conversations (FER:CoT mix; CoT turns from verified rows only,
``engine.model.conversations``) with each face's crop and AU reading; ``train_model``
computes each face's visual input once (the vision side is frozen), then trains projectors +
LoRA with AdamW (cosine schedule, 3 % warm-up) through ``accelerate`` (one code path for the
CPU, one GPU, or ``accelerate launch`` on several with DeepSpeed ZeRO-2,
``configs/deepspeed_zero2.json``). Checkpoints go to ``<out>/checkpoints/step-NNNNNN/`` every
``checkpoint_every`` steps and at each epoch end; a rerun with the same ``out`` resumes from
the last one. After each epoch the model writes CoTs for the held-out faces and the label read
from each Conclusion (``engine.cot.verify.conclusion_label``) is scored. The final model folder is
``out`` itself; ``<out>/training_log.json`` has the history.
"""

from __future__ import annotations

import json
import math
import re
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.aus import au_definitions
from engine.cot.format import CoT
from engine.cot.verify import conclusion_label
from engine.data.faces import DETECTOR_NAME, FaceFinder
from engine.data.images import load_image
from engine.model.base import create_model, face_margin_of, load_model
from engine.model.config import GENERATION_BATCH, ModelConfig
from engine.model.conversations import Sample, build_samples, read_rows
from engine.model.settings import DecodingSettings
from engine.store.stats import read_shards
from engine.types import EMOTIONS, StageError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.pt"
LOG_FILE = "training_log.json"
AU_COLUMN = re.compile(r"^AU\d\d$")
BOX_COLUMNS = ["face_x", "face_y", "face_w", "face_h"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Training settings (the paper's: lr 5e-4, cosine, 3 % warm-up, LoRA r=8 alpha=16).
    ``batch_size`` is the training batch; ``generation_batch`` the faces the per-epoch
    evaluation writes CoTs for at once."""

    base: str = "nano"
    init: str | None = None  # a saved model folder to start from (warm start) instead of ``base``
    epochs: int = 1
    batch_size: int = 4
    lr: float = 5e-4
    warmup: float = 0.03
    max_samples: int | None = None
    eval_samples: int = 16
    mix: tuple[int, int] = (3, 1)
    checkpoint_every: int = 50
    eval_max_new_tokens: int = 320
    generation_batch: int = GENERATION_BATCH
    mixed_precision: str = "no"  # accelerate's: "no", "bf16", "fp16"
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class TrainingSet:
    """Training conversations with their faces and AU readings, and the held-out faces."""

    samples: list[Sample]
    faces: list[np.ndarray]
    aus: list[dict[str, float]]
    held_faces: list[np.ndarray]
    held_aus: list[dict[str, float]]
    held_labels: list[str]
    au_backend: str = ""  # the AU back end that measured ``aus`` (the shards')
    class_frequencies: tuple[float, ...] = ()  # of the training labels, in EMOTIONS order


def au_readings(frame: pd.DataFrame) -> list[dict[str, float]]:
    """The measured AU intensities (``AUxx`` columns) of each shard row; NaN left out."""
    columns = [c for c in frame.columns if AU_COLUMN.match(c)]
    values = frame[columns].to_numpy(np.float32) if columns else np.zeros((len(frame), 0))
    return [
        {c: float(v) for c, v in zip(columns, row, strict=True) if np.isfinite(v)} for row in values
    ]


def training_rows(shards: str | Path) -> pd.DataFrame:
    """The labelled rows of an Exp-CoT output folder (``verified`` says which give CoT turns)
    with their face boxes and AU readings."""
    frame = read_rows(shards)
    columns = ["record_id", "au_backend", "face_source", *BOX_COLUMNS, *au_definitions()]
    extra = read_shards(Path(shards), columns)
    return frame.merge(extra.drop_duplicates("record_id"), on="record_id", how="left")


def face_of(row: dict, root: Path, margin: float | None = None) -> np.ndarray:
    """The RGB face crop of a shard row: its image cut to the row's face box. For a face the
    detector found, with ``margin`` (the model's ``VisionLM.face_margin``), the detector's face
    found again and grown by ``margin`` instead, framed as the model sees detected faces at
    inference (the row's box where the detector finds no face centred in it)."""
    if row.get("image_bytes") is not None:
        import cv2

        decoded = cv2.imdecode(np.frombuffer(row["image_bytes"], np.uint8), cv2.IMREAD_COLOR)
        image = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    else:
        image = load_image(root / row["image_path"])
    x, y, w, h = (row.get(k) for k in BOX_COLUMNS)
    if None in (x, y, w, h) or any(isinstance(v, float) and math.isnan(v) for v in (x, y, w, h)):
        return image
    x, y, w, h = int(x), int(y), int(w), int(h)
    if margin is not None and row.get("face_source") == DETECTOR_NAME:
        try:
            face = FaceFinder(mode="detector", margin=margin).find(image)
        except StageError:
            face = None
        if face is not None:
            fx, fy, fw, fh = face.box
            if x <= fx + fw / 2 <= x + w and y <= fy + fh / 2 <= y + h:
                return face.crop
    return image[y : y + h, x : x + w]


def model_face_margin(config: FinetuneConfig) -> float | None:
    """How the model that ``config`` trains frames detected faces (its base's margin)."""
    base = ModelConfig.read(Path(config.init)).base if config.init else config.base
    return face_margin_of(base)


def training_set(
    frame: pd.DataFrame, face_of: Callable[[dict], np.ndarray], config: FinetuneConfig
) -> TrainingSet:
    """Hold out ``config.eval_samples`` rows (seeded), build samples of the rest."""
    order = np.random.default_rng(config.seed).permutation(len(frame))
    held = frame.iloc[order[: config.eval_samples]]
    train = frame.iloc[order[config.eval_samples :]]
    # of every training row: a smoke run's ``max_samples`` rows would skew the prior correction
    frequencies = train["label"].value_counts(normalize=True).reindex(EMOTIONS, fill_value=0.0)
    if config.max_samples is not None:
        train = train.iloc[: config.max_samples]
    if train.empty:
        raise ValueError("no training records left after holding out evaluation ones")
    train = train.sort_values("record_id")
    return TrainingSet(
        samples=build_samples(train, config.mix),
        faces=[face_of(r) for r in train.to_dict("records")],
        aus=au_readings(train),
        held_faces=[face_of(r) for r in held.to_dict("records")],
        held_aus=au_readings(held),
        held_labels=list(held["label"]),
        au_backend=_au_backend(frame),
        class_frequencies=tuple(float(share) for share in frequencies),
    )


def _au_backend(frame: pd.DataFrame) -> str:
    """The one AU back end of the rows (ValueError when the shards mix several)."""
    names = sorted(set(frame["au_backend"].dropna())) if "au_backend" in frame else []
    if len(names) > 1:
        raise ValueError(f"the shards mix AU back ends {names}; train on one")
    return names[0] if names else ""


def generate_cots(
    model,
    visuals: Sequence,
    max_new_tokens: int | None = None,
    batch_size: int = GENERATION_BATCH,
    decoding: DecodingSettings | None = None,
    allowed_labels: Sequence[str] | None = None,
) -> list[str]:
    """The model's CoT for each visual input (``model.visual_inputs``), ``batch_size`` at once;
    ``decoding`` (default: the model's) and ``allowed_labels`` as ``VisionLM.generate`` takes
    them."""
    texts: list[str] = []
    for start in range(0, len(visuals), batch_size):
        chunk = visuals[start : start + batch_size]
        texts += model.generate(chunk, max_new_tokens, decoding, allowed_labels)
    return texts


def evaluate_model(
    model, visuals: list, labels: list[str], max_new_tokens: int, batch_size: int = GENERATION_BATCH
) -> dict:
    """Label accuracy (from the generated Conclusion) and exact-format share on held-out faces."""
    if not visuals:
        return {}
    started = time.perf_counter()
    texts = generate_cots(model, visuals, max_new_tokens, batch_size)
    predicted = [conclusion_label(t) for t in texts]
    return {
        "n": len(visuals),
        "accuracy": float(np.mean([p == t for p, t in zip(predicted, labels, strict=True)])),
        "exact_format": float(np.mean([CoT.is_exact(t) for t in texts])),
        "seconds_per_face": (time.perf_counter() - started) / len(visuals),
        "example": texts[0],
    }


def checkpoints(out: Path) -> list[Path]:
    """The complete checkpoints under ``out``, oldest first."""
    return sorted(p for p in (out / CHECKPOINTS).glob("step-*") if (p / STATE_FILE).is_file())


def _initial_model(config: FinetuneConfig, data: TrainingSet):
    """A fresh ``config.base`` model, or ``config.init``'s weights (warm start), either reading
    the AU back end of the training shards at inference and knowing the training labels'
    frequencies (for label guidance's prior correction)."""
    if config.init is None:
        model = create_model(config.base, au_backend=data.au_backend or "mesh")
    else:
        model = load_model(config.init, trainable=True)
    au_backend = data.au_backend if data.au_backend and model.config.au_codes else None
    model.config = replace(
        model.config,
        au_backend=au_backend or model.config.au_backend,
        decoding=replace(model.config.decoding, class_frequencies=data.class_frequencies),
    )
    return model


def train_model(
    data: TrainingSet,
    config: FinetuneConfig,
    out: str | Path,
    log: Callable[[str], None] = print,
):
    """Train with checkpoints and per-epoch evaluation; resume from ``out``'s last checkpoint.

    Returns ``(model, history)``; the model folder ``out`` holds the final weights.
    """
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    target = Path(out)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    torch.manual_seed(config.seed)
    done = checkpoints(target)
    if done:
        model = load_model(done[-1], trainable=True)
        state = torch.load(done[-1] / STATE_FILE, weights_only=False)
        log(f"resuming from {done[-1]} (step {state['step']})")
    else:
        model, state = _initial_model(config, data), None
    started = time.perf_counter()
    visuals = model.visual_inputs(data.faces, data.aus)
    held_visuals = model.visual_inputs(data.held_faces, data.held_aus)
    log(f"visual inputs of {len(visuals)} faces in {time.perf_counter() - started:.1f} s")
    examples = [(v, s.messages) for v, s in zip(visuals, data.samples, strict=True)]
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=config.lr, weight_decay=0.0)
    warmup = max(1, round(config.warmup * total))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    history: dict[str, Any] = {"config": asdict(config), "steps": [], "epochs": []}
    step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, step = state["log"], state["step"]
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
            "log": history,
        }
        torch.save(payload, folder / STATE_FILE)
        for old in checkpoints(target)[:-2]:  # keep the last two
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
            value = loss.item()
            bar.set_postfix(loss=f"{value:.3f}", samples_per_s=f"{rate:.2f}")
            history["steps"].append({"step": step, "loss": value, "samples_per_s": rate})
            if step % 50 == 0 or step == total:
                log(
                    f"epoch {epoch + 1} step {step}/{total} loss {value:.4f} ({rate:.2f} samples/s)"
                )
            if step % config.checkpoint_every == 0 and step % steps_per_epoch:
                checkpoint()
        model.module = accelerator.unwrap_model(module)
        scores = evaluate_model(
            model,
            held_visuals,
            data.held_labels,
            config.eval_max_new_tokens,
            config.generation_batch,
        )
        model.module = module
        history["epochs"].append({"epoch": epoch + 1, "step": step, "eval": scores})
        log(f"epoch {epoch + 1} held-out: { {k: v for k, v in scores.items() if k != 'example'} }")
        checkpoint()
    if accelerator.is_main_process:
        model.module = accelerator.unwrap_model(module)
        model.save(target)
        history["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if torch.cuda.is_available():
            history["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        (target / LOG_FILE).write_text(json.dumps(history, indent=1) + "\n")
    return model, history
