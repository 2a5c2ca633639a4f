"""The LM's own answer to the label-only question of its training (the ``fer`` turns of
``engine.model.conversations``), scored over the class names: whether the language model reads
the expression from its visual tokens, apart from any CoT, label guidance or planned reading."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.model.base import IGNORE, VisionLM, import_training
from engine.model.conversations import label_conversation
from engine.model.greedy import Beginning, cache_keyword
from engine.model.settings import DecodingSettings
from engine.types import EMOTIONS

#: How many faces one pass reads.
FACES_PER_PASS = 16


def label_answers(
    model: VisionLM,
    visuals: Sequence[Any],
    classes: Sequence[str] = EMOTIONS,
    read: Beginning | None = None,
    decoding: DecodingSettings | None = None,
) -> np.ndarray:
    """``[faces, classes]``: the log-likelihood of each class name as the model's whole answer
    (end of turn included) to the label-only question about each face (``model.visual_inputs``
    of a nano model); the model's answer is the row's best class. The question is read once
    per face (a KV cache), then every class name after it, in one pass; ``read``: the keys and
    values of the question's beginning for every face (shared with another question, e.g.
    the CoT prompt's system prompt, visual tokens and task), read already; ``decoding``: the
    settings it is read under (bfloat16 or not; default the model's)."""
    if not classes:
        raise ValueError("no classes to score")
    torch = import_training()[0]
    from transformers import DynamicCache

    if not visuals:
        return np.zeros((0, len(classes)))
    device = next(model.module.parameters()).device
    half = (decoding or model.config.decoding).bfloat16(device.type)
    lm = model.decoding_lm(half, device)
    tokens, skip = _answer_tokens(model, visuals[0], classes), read.length if read else 0
    model.module.eval()
    scores = []
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=half):
        for start in range(0, len(visuals), FACES_PER_PASS):
            rows = slice(start, start + FACES_PER_PASS)
            cache = read.rows(rows) if read else DynamicCache()
            scored = _scores(model, lm, visuals[rows], classes, tokens, cache, skip)
            scores.append(scored.float().cpu().numpy())
    return np.concatenate(scores).astype(np.float64)


def answer_scores(
    model: VisionLM, lm: Any, visuals: Sequence[Any], classes: Sequence[str], cache, skip: int = 0
):
    """Torch ``[faces, classes]``: ``label_answers``'s log-likelihoods of one pass of faces
    read by ``lm`` (the model's LM or its decoding copy) into ``cache`` (a ``DynamicCache``
    holding the first ``skip`` positions already, or empty), with gradients where the caller
    allows them (training the LM to answer: ``scripts/train_readout.py``)."""
    tokens = _answer_tokens(model, visuals[0], classes)
    return _scores(model, lm, visuals, classes, tokens, cache, skip)


def _scores(model: VisionLM, lm: Any, visuals, classes, tokens, cache, skip: int):
    """``answer_scores`` with the question's length and the class names' answer tokens
    (``tokens``: ``_answer_tokens``) known already."""
    torch = import_training()[0]
    question, answers = tokens
    device = next(model.module.parameters()).device
    batch = model.collate([(visual, label_conversation(classes[0])) for visual in visuals])
    batch["input_ids"] = batch["input_ids"][:, :question]
    batch["attention_mask"] = batch["attention_mask"][:, :question]
    batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    embeds, mask = model.module.embed(**batch)
    keyword = cache_keyword(lm)
    first = lm(
        inputs_embeds=embeds[:, skip:],
        attention_mask=mask,
        use_cache=True,
        logits_to_keep=1,
        **{keyword: cache},
    ).logits[:, -1]
    rows = len(visuals)
    names = _side_by_side(torch, answers, embeds.shape[1], device)
    rest = lm(
        input_ids=names.tokens.expand(rows, -1),
        attention_mask=names.mask.expand(rows, -1, -1, -1),
        position_ids=names.positions.expand(rows, -1),
        use_cache=True,
        **{keyword: cache},
    ).logits
    steps = torch.cat([first[:, None], rest[:, :-1]], dim=1)[:, names.before]
    taken = torch.log_softmax(steps.float(), -1).gather(
        -1, names.tokens.expand(rows, -1)[..., None]
    )[..., 0]
    return taken.new_zeros((rows, len(classes))).index_add(1, names.segment, taken)


@dataclass(frozen=True)
class _Names:
    """Every class name's answer tokens side by side after the question, in one row: each
    sees the question and its own earlier tokens (``mask`` [1, 1, tokens, question +
    tokens]) at the positions after the question (``positions``); ``before``: the place in
    ``[question's end, tokens...]`` whose next-token scores predict each token; ``segment``:
    the class of each token."""

    tokens: Any
    mask: Any
    positions: Any
    before: Any
    segment: Any


def _side_by_side(torch, answers: list[list[int]], question: int, device) -> _Names:
    """The ``_Names`` of ``answers`` after a question of ``question`` positions (its tokens and
    the visual tokens)."""
    segment = torch.tensor([c for c, a in enumerate(answers) for _ in a], device=device)
    offset = torch.tensor([j for a in answers for j in range(len(a))], device=device)
    own = (segment[:, None] == segment[None, :]) & (offset[None, :] <= offset[:, None])
    seen = torch.ones((len(segment), question), dtype=torch.bool, device=device)
    starts = torch.cumsum(torch.tensor([0] + [len(a) for a in answers[:-1]]), 0).to(device)
    return _Names(
        tokens=torch.tensor([t for a in answers for t in a], device=device)[None],
        mask=torch.cat([seen, own], dim=1)[None, None],
        positions=(question + offset)[None],
        before=torch.where(offset == 0, 0, starts[segment] + offset),
        segment=segment,
    )


def _answer_tokens(
    model: VisionLM, visual: Any, classes: Sequence[str]
) -> tuple[int, list[list[int]]]:
    """The label-only question's length in tokens, and each class name's answer tokens after
    it: those training scores (the name and the end of turn)."""
    answers, question = [], None
    for name in classes:
        batch = model.collate([(visual, label_conversation(name))])
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        scored = [i for i, label in enumerate(labels) if label != IGNORE]
        span = list(range(scored[0], scored[-1] + 1))
        if scored != span or question not in (None, ids[: scored[0]]):
            raise ValueError(f"the label-only answer {name!r} is not one span after one question")
        question = ids[: scored[0]]
        answers.append(ids[scored[0] : scored[-1] + 1])
    return len(question), answers
