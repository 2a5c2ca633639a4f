"""Batched greedy decoding from input embeddings, with a KV cache, an optional token guide
(``engine.model.guide.TokenGuide``) and finished rows dropped from the batch, so that the
faces whose CoT is done cost nothing while the longest one is still being written.

All rows of a batch share one prompt length (the nano base's prompts differ only in their
visual tokens). A row may begin its answer with given tokens (``prefixes``, e.g. the measured
facts a CoT states): they are read in the same pass as the prompt, each row left-padded to the
longest, the gap masked and skipped by the positions. Finished rows leave the batch once
they are an eighth of it (each removal copies the cache). The cache reserves the prompt plus
``max_new_tokens`` positions once, instead of growing (a copy of the whole cache per token).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from functools import cache, partial

#: ``guide(rows, ids, scores)``: the scores of the next token of each row still being written
#: (``rows``: their indices in the batch, ``ids``: the tokens each has so far), guided.
Guide = Callable[[Sequence[int], Sequence[list[int]], object], object]


def greedy_decode(
    lm,
    embeds,
    max_new_tokens: int,
    eos_token_id: int,
    guide: Guide | None = None,
    prefixes: Sequence[list[int]] | None = None,
) -> list[list[int]]:
    """The generated token ids of each row of ``embeds`` [rows, prompt, hidden] (without the
    end-of-sequence token), greedy under ``guide``; ``prefixes``: per row, the tokens its
    answer begins with (returned as its first tokens)."""
    import torch
    from transformers import DynamicCache

    rows = len(embeds)
    generated: list[list[int]] = [list(p) for p in prefixes] if prefixes else [[] for _ in embeds]
    active = list(range(rows))  # the batch rows of the cache, finished or not
    done: set[int] = set()
    span = max(map(len, generated))
    kv = DynamicCache()
    kv.layer_class_to_replicate = partial(
        _reserved_layer(), embeds.shape[1] + span + max_new_tokens
    )
    # the cache's keyword: ``cache`` from transformers 5.2x on, ``past_key_values`` before
    name = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
    window = _Window(lm, embeds, generated, span) if span else None
    inputs = window.prefill() if window else {"inputs_embeds": embeds}
    output = lm(**inputs, use_cache=True, logits_to_keep=1, **{name: kv})
    for step in range(max_new_tokens):
        writing = [i for i, row in enumerate(active) if row not in done]
        scores = output.logits[writing, -1].float()
        if guide is not None:
            scores = guide(
                [active[i] for i in writing], [generated[active[i]] for i in writing], scores
            )
        chosen = [eos_token_id] * len(active)  # rows already finished are fed the end token
        for i, token in zip(writing, scores.argmax(dim=-1).tolist(), strict=True):
            chosen[i] = token
            if token == eos_token_id:
                done.add(active[i])
            else:
                generated[active[i]].append(token)
        if len(done) == rows or step == max_new_tokens - 1:
            break
        if sum(row in done for row in active) * 8 >= len(active):
            keep = [i for i, row in enumerate(active) if row not in done]
            kv.batch_select_indices(torch.tensor(keep, device=embeds.device))
            active, chosen = [active[i] for i in keep], [chosen[i] for i in keep]
            if window:
                window.select(keep)
        tokens = torch.tensor([[token] for token in chosen], device=embeds.device)
        extra = window.step() if window else {}
        output = lm(input_ids=tokens, use_cache=True, **extra, **{name: kv})
    return generated


class _Window:
    """Attention mask and positions of a batch whose rows begin with prefixes of different
    lengths: ``[gap][prompt][prefix]`` per row, the gap masked and skipped by the positions."""

    def __init__(self, lm, embeds, prefixes: Sequence[list[int]], span: int):
        import torch

        self.lm, self.embeds, self.prefixes, self.span = lm, embeds, prefixes, span
        rows, prompt = embeds.shape[:2]
        self.gaps = [span - len(prefix) for prefix in prefixes]
        self.mask = torch.ones((rows, prompt + span), dtype=torch.long, device=embeds.device)
        self.positions = torch.arange(prompt + span, device=embeds.device).repeat(rows, 1)
        for row, gap in enumerate(self.gaps):
            self.mask[row, :gap] = 0
            self.positions[row] = (self.positions[row] - gap).clamp(min=0)
        self.next = self.positions[:, -1] + 1

    def prefill(self) -> dict:
        """The first pass's inputs: per row its gap, its prompt and its prefix."""
        import torch

        rows, prompt, hidden = self.embeds.shape
        joined = self.embeds.new_zeros((rows, prompt + self.span, hidden))
        table = self.lm.get_input_embeddings()
        for row, (gap, prefix) in enumerate(zip(self.gaps, self.prefixes, strict=True)):
            joined[row, gap : gap + prompt] = self.embeds[row]
            if prefix:
                ids = torch.tensor(prefix, dtype=torch.long, device=self.embeds.device)
                joined[row, gap + prompt :] = table(ids).to(self.embeds.dtype)
        return {
            "inputs_embeds": joined,
            "attention_mask": self.mask,
            "position_ids": self.positions,
        }

    def step(self) -> dict:
        """The mask and positions for one more token per row."""
        import torch

        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.mask), 1))], dim=1)
        positions = self.next[:, None].clone()
        self.next += 1
        return {"attention_mask": self.mask, "position_ids": positions}

    def select(self, keep: list[int]) -> None:
        """Keep only the rows ``keep`` (the cache's ``batch_select_indices``)."""
        self.mask, self.next = self.mask[keep], self.next[keep]


@cache
def _reserved_layer():
    """A ``transformers`` cache layer that writes into tensors reserved for ``capacity``
    positions (its first argument) and hands out views of the filled part."""
    import torch
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity
            self.length = 0

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                shape = (*key_states.shape[:2], self.capacity, key_states.shape[3])
                self.key_store = key_states.new_empty(shape)
                self.value_store = value_states.new_empty(shape)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise ValueError(f"the KV cache holds {self.capacity} positions, {end} asked")
            self.key_store[:, :, self.length : end] = key_states
            self.value_store[:, :, self.length : end] = value_states
            self.length = end
            self.keys = self.key_store[:, :, :end]
            self.values = self.value_store[:, :, :end]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.key_store = self.key_store[indices]
            self.value_store = self.value_store[indices]
            self.keys = self.key_store[:, :, : self.length]
            self.values = self.value_store[:, :, : self.length]

    return ReservedLayer
