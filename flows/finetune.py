"""The ``finetune`` Prefect flow: Exp-CoT shards -> conversations -> a fine-tuned ExpLLM folder.

Orchestration only: ``prepare_data`` reads the labelled records of the shards (CoT turns from
the verified ones) with their face boxes and AU readings
(``engine.model.training.training_rows``) and cuts each face crop, framed as the model frames
faces at inference (``engine.model.training.face_of``); ``train`` runs
``engine.model.training.train_model`` (checkpoints, resume, per-epoch evaluation).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from engine.model.conversations import dataset_root
from engine.model.training import (
    FinetuneConfig,
    TrainingSet,
    face_of,
    model_face_margin,
    train_model,
    training_rows,
    training_set,
)

__all__ = ["FinetuneConfig", "finetune"]


@task(name="finetune-data", cache_policy=NO_CACHE)
def prepare_data(shards: str, config: FinetuneConfig, data_root: str | None) -> TrainingSet:
    """Held-out and training rows of the shards, their samples, face crops and AU readings."""
    frame = training_rows(shards)
    root, margin = dataset_root(shards, data_root), model_face_margin(config)
    return training_set(frame, lambda row: face_of(row, root, margin), config)


@task(name="finetune-train", cache_policy=NO_CACHE)
def train(data: TrainingSet, config: FinetuneConfig, out: str) -> dict[str, Any]:
    """Train (resuming from ``out``'s last checkpoint); the history of steps and epochs."""
    return train_model(data, config, out, log=get_run_logger().info)[1]


@flow(name="finetune", log_prints=False)
def finetune(
    shards: str, out: str, config: FinetuneConfig, data_root: str | None = None
) -> dict[str, Any]:
    """Fine-tune ExpLLM on the Exp-CoT shards in ``shards``; the model folder is ``out``."""
    data = prepare_data(shards, config, data_root)
    get_run_logger().info(
        "%d training samples (%d CoT), %d held-out faces",
        len(data.samples),
        sum(s.kind == "cot" for s in data.samples),
        len(data.held_faces),
    )
    return train(data, config, out)
