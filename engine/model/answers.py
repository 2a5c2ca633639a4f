"""The LM's own answer to the label-only question of its training (the ``fer`` turns of
``engine.model.conversations``), scored over the class names: whether the language model reads
the expression from its visual tokens, apart from any CoT, label guidance or planned reading."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.model.base import IGNORE, VisionLM, import_training
from engine.model.conversations import label_conversation
from engine.model.nano_module import with_visual_gaps
from engine.types import EMOTIONS


def label_answers(
    model: VisionLM, visuals: Sequence[Any], classes: Sequence[str] = EMOTIONS
) -> np.ndarray:
    """``[faces, classes]``: the log-likelihood of each class name as the model's whole answer
    (end of turn included) to the label-only question about each face (``model.visual_inputs``);
    the model's answer is the row's best class. One forward pass per face, a row per class."""
    if not classes:
        raise ValueError("no classes to score")
    torch = import_training()[0]
    device = next(model.module.parameters()).device
    half = device.type == "cuda" or model.config.decoding.cpu_bfloat16
    model.module.eval()
    scores = np.zeros((len(visuals), len(classes)))
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=half):
        for row, visual in enumerate(visuals):
            batch = model.collate([(visual, label_conversation(name)) for name in classes])
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model.module(**batch).logits.float()
            labels = batch["labels"]
            if "positions" in batch:  # the visual tokens inserted into the text (nano)
                labels = with_visual_gaps(
                    labels, batch["positions"], logits.shape[1] - labels.shape[1]
                )
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = labels[:, 1:]
            taken = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            scores[row] = (taken * (targets != IGNORE)).sum(dim=1).cpu().numpy()
    return scores
