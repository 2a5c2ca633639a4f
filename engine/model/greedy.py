"""Batched greedy decoding from input embeddings, with a KV cache, an optional token guide
(``engine.model.guide.TokenGuide``) and finished rows dropped from the batch, so that the
faces whose CoT is done cost nothing while the longest one is still being written.

All rows of a batch share one prompt length (the nano base's prompts differ only in their
visual tokens). A row may begin its answer with given tokens (``prefixes``, e.g. the measured
facts a CoT states): they are read in the first pass with the prompt, in groups of rows of
similar lengths, each row padded to its group's longest after the prompt's beginning that all
rows share (read once), the gap masked and skipped by the positions; or after each row's own
beginning where it was read already for another question (``Beginning``). A model may decode
with a ``bfloat16_copy`` of its LM (``engine.model.bfloat16``). A row whose text only one ending
fits (``ending``) gets it at once, without a step per token. With ``no_repeat`` n, a row's own
words (after its prefix) never repeat a run of n tokens unless its guide allows nothing else
(the tokens that would repeat one rank below all others). Finished rows leave the batch once
they are an eighth of it (each removal copies the cache's filled part). The cache reserves the
prompt plus ``max_new_tokens`` positions once, instead of growing (a copy of the whole cache per
token).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

#: How many rows the first pass reads at once (rows of similar prefix lengths together).
PREFILL_GROUP = 8
#: What a token that would repeat a run of the row's own words loses from its logit: it ranks
#: below every other token, yet a guide that allows nothing else may still take it.
REPEAT_PENALTY = 1e4
#: ``guide(rows, ids, scores)``: the scores of the next token of each row still being written
#: (``rows``: their indices in the batch, ``ids``: the tokens each has so far), guided.
Guide = Callable[[Sequence[int], Sequence[list[int]], object], object]
#: ``ending(row, ids)``: the tokens that must end the text ``ids`` of batch row ``row`` where
#: only one ending remains, else empty.
Ending = Callable[[int, list[int]], list[int]]


def greedy_decode(
    lm,
    embeds,
    max_new_tokens: int,
    eos_token_id: int,
    guide: Guide | None = None,
    prefixes: Sequence[list[int]] | None = None,
    ending: Ending | None = None,
    read: Beginning | None = None,
    no_repeat: int = 0,
) -> list[list[int]]:
    """The generated token ids of each row of ``embeds`` [rows, prompt, hidden] (without the
    end-of-sequence token), greedy under ``guide``; ``prefixes``: per row, the tokens its
    answer begins with (returned as its first tokens); ``ending``: the tokens that finish a
    row where only one ending remains (the row is then done without decoding them);
    ``read``: the keys and values of each row's prompt beginning, read already (for another
    question about the same face), which are not read again; ``no_repeat``: the length of
    the runs of tokens a row's own words may not repeat (0: any)."""
    import torch
    from transformers import DynamicCache

    rows = len(embeds)
    generated: list[list[int]] = [list(p) for p in prefixes] if prefixes else [[] for _ in embeds]
    active = list(range(rows))  # the batch rows of the cache, finished or not
    done: set[int] = set()
    span = max(map(len, generated))
    given = [len(row) for row in generated]
    kv = DynamicCache()
    kv.layer_class_to_replicate = partial(
        _reserved_layer(), embeds.shape[1] + span + max_new_tokens
    )
    name = cache_keyword(lm)
    window = _Window(lm, embeds, generated, span, read) if span or read else None
    if window:
        logits = window.prefill(kv, name)
    else:
        logits = lm(inputs_embeds=embeds, use_cache=True, logits_to_keep=1, **{name: kv}).logits
    for step in range(max_new_tokens):
        writing = [i for i, row in enumerate(active) if row not in done]
        scores = logits[writing, -1].float()
        if no_repeat:
            for place, i in enumerate(writing):
                own = generated[active[i]][given[active[i]] :]
                scores[place, repeating(own, no_repeat)] -= REPEAT_PENALTY
        if guide is not None:
            scores = guide(
                [active[i] for i in writing], [generated[active[i]] for i in writing], scores
            )
        chosen = [eos_token_id] * len(active)  # rows already finished are fed the end token
        for i, token in zip(writing, scores.argmax(dim=-1).tolist(), strict=True):
            chosen[i] = token
            if token == eos_token_id:
                done.add(active[i])
                continue
            generated[active[i]].append(token)
            rest = ending(active[i], generated[active[i]]) if ending else None
            if rest:
                generated[active[i]] += rest
                done.add(active[i])
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
        logits = lm(input_ids=tokens, use_cache=True, **extra, **{name: kv}).logits
    return generated


def repeating(tokens: list[int], n: int) -> list[int]:
    """The tokens that would end a run of ``n`` tokens already in ``tokens`` if written next."""
    if n < 1 or len(tokens) < n:
        return []
    context = tokens[len(tokens) - n + 1 :] if n > 1 else []
    return sorted(
        {
            tokens[start + n - 1]
            for start in range(len(tokens) - n + 1)
            if tokens[start : start + n - 1] == context
        }
    )


def cache_keyword(lm) -> str:
    """The keyword ``lm.forward`` takes its KV cache by: ``cache`` from transformers 5.2x on,
    ``past_key_values`` before (of the base model under a LoRA wrapper)."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@dataclass(frozen=True)
class Beginning:
    """The first ``length`` positions of each row's prompt, read: their keys and values
    (``cache``, a ``transformers`` cache of the batch's rows)."""

    cache: Any
    length: int

    def rows(self, rows):
        """A new cache of the keys and values of ``rows`` (a slice or an index tensor)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        for index, layer in enumerate(self.cache.layers):
            cache.update(layer.keys[rows], layer.values[rows], index)
        return cache


def read_beginning(lm, embeds, length: int) -> Beginning:
    """The ``Beginning`` of each row's first ``length`` positions of ``embeds`` [rows, prompt,
    hidden]: the positions every row shares read once, the rest in groups of
    ``PREFILL_GROUP`` rows (as the first pass reads them)."""
    import torch
    from transformers import DynamicCache

    name = cache_keyword(lm)
    head = _shared_positions(embeds, length)
    shared = _read_head(lm, embeds, head, name)
    groups = []
    for start in range(0, len(embeds), PREFILL_GROUP):
        rows = embeds[start : start + PREFILL_GROUP, head:length]
        cache = _copy_head(shared, len(rows), DynamicCache())
        lm(inputs_embeds=rows, use_cache=True, logits_to_keep=1, **{name: cache})
        groups.append(cache.layers)
    joined = DynamicCache()
    for index, layers in enumerate(zip(*groups, strict=True)):
        keys = torch.cat([layer.keys for layer in layers])
        joined.update(keys, torch.cat([layer.values for layer in layers]), index)
    return Beginning(joined, length)


def _shared_positions(embeds, length: int) -> int:
    """How many of the first ``length`` positions of ``embeds`` every row shares (at most
    ``length - 1``: each row has one left to read)."""
    same = (embeds[:, :length] == embeds[:1, :length]).all(dim=2).all(dim=0).tolist()
    return min(same.index(False) if False in same else length, length - 1)


def _read_head(lm, embeds, head: int, name: str):
    """The keys and values of the first ``head`` positions of ``embeds``, which every row
    shares, read once (from the first row); an empty cache where ``head`` is 0."""
    from transformers import DynamicCache

    cache = DynamicCache()
    if head:
        lm(inputs_embeds=embeds[:1, :head], use_cache=True, logits_to_keep=1, **{name: cache})
    return cache


def _copy_head(head, rows: int, cache):
    """``cache`` with the keys and values of the one-row cache ``head`` for ``rows`` rows."""
    for index, layer in enumerate(head.layers):
        size = (rows, *layer.keys.shape[1:])
        cache.update(layer.keys.expand(size), layer.values.expand(size), index)
    return cache


class _Window:
    """Attention mask and positions of a batch whose rows begin with prefixes of different
    lengths: ``[head][gap][rest of the prompt][prefix]`` per row, the gap masked and skipped
    by the positions. The head is the prompt's beginning that every row shares (the chat
    template before the visual tokens), read once and its keys and values copied to every
    row, or each row's own beginning read already (``read``)."""

    def __init__(self, lm, embeds, prefixes: Sequence[list[int]], span: int, read=None):
        import torch

        self.lm, self.embeds, self.prefixes, self.span = lm, embeds, prefixes, span
        self.read = read
        rows, prompt = embeds.shape[:2]
        if read is None:
            self.head = _shared_positions(embeds, prompt)
        elif 0 < read.length < prompt:
            self.head = read.length
        else:
            raise ValueError(f"a read beginning of {read.length} of {prompt} positions")
        self.mask = torch.ones((rows, prompt + span), dtype=torch.long, device=embeds.device)
        self.positions = torch.arange(prompt + span, device=embeds.device).repeat(rows, 1)
        for row, gap in enumerate(span - len(prefix) for prefix in prefixes):
            self.mask[row, self.head : self.head + gap] = 0
            self.positions[row, self.head :] = (self.positions[row, self.head :] - gap).clamp(
                min=self.head
            )
        self.next = self.positions[:, -1] + 1

    def prefill(self, kv, name: str):
        """Read every row's head, gap, prompt and prefix into the cache ``kv`` (the model's
        cache keyword ``name``); the logits of their last positions [rows, 1, vocabulary].
        The head is read once; the rows in groups of similar prefix lengths
        (``PREFILL_GROUP``), each padded only to its longest, and their keys and values
        placed into the batch's layout in ``kv`` (whose layers are ``_reserved_layer``'s)."""
        import torch
        from transformers import DynamicCache

        rows, prompt, _ = self.embeds.shape
        head = _read_head(self.lm, self.embeds, 0 if self.read else self.head, name)
        order = sorted(range(rows), key=lambda row: len(self.prefixes[row]))
        logits = None
        for start in range(0, rows, PREFILL_GROUP):
            group = order[start : start + PREFILL_GROUP]
            width = prompt - self.head + max(len(self.prefixes[row]) for row in group)
            cache = (  # each row's own beginning, or the head every row shares
                self.read.rows(torch.tensor(group, device=self.embeds.device))
                if self.read is not None
                else _copy_head(head, len(group), DynamicCache())
            )
            mask = self.mask[group]
            out = self.lm(
                inputs_embeds=self._joined(group, width),
                attention_mask=torch.cat([mask[:, : self.head], mask[:, -width:]], dim=1),
                position_ids=self.positions[group, -width:],
                use_cache=True,
                logits_to_keep=1,
                **{name: cache},
            )
            if logits is None:
                logits = out.logits.new_empty((rows, *out.logits.shape[1:]))
                while len(kv.layers) < len(cache.layers):
                    kv.layers.append(kv.layer_class_to_replicate())
            index = torch.tensor(group, device=logits.device)
            logits[index] = out.logits
            for layer, read in zip(kv.layers, cache.layers, strict=True):
                layer.place(rows, prompt + self.span, self.head, index, read.keys, read.values)
        return logits

    def _joined(self, group: list[int], width: int):
        """The input embeddings of the rows ``group`` after the head, each ``[gap][rest of the
        prompt][prefix]`` within ``width`` positions."""
        import torch

        prompt, hidden = self.embeds.shape[1:]
        rest = prompt - self.head
        joined = self.embeds.new_zeros((len(group), width, hidden))
        table = self.lm.get_input_embeddings()
        for place, row in enumerate(group):
            prefix = self.prefixes[row]
            joined[place, width - rest - len(prefix) : width - len(prefix)] = self.embeds[
                row, self.head :
            ]
            if prefix:
                ids = torch.tensor(prefix, dtype=torch.long, device=self.embeds.device)
                joined[place, width - len(prefix) :] = table(ids).to(self.embeds.dtype)
        return joined

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

        def place(self, rows: int, length: int, head: int, index, key_states, value_states):
            """Fill the first ``length`` positions of the rows ``index`` of a batch of
            ``rows``: the first ``head`` of their keys and values first, the others
            right-aligned, the positions between zero (masked positions must hold finite
            values)."""
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                shape = (rows, key_states.shape[1], self.capacity, key_states.shape[3])
                self.key_store = key_states.new_empty(shape)
                self.value_store = value_states.new_empty(shape)
                self.key_store[:, :, :length] = 0
                self.value_store[:, :, :length] = 0
                self.length = length
                self.keys = self.key_store[:, :, :length]
                self.values = self.value_store[:, :, :length]
            width = key_states.shape[-2] - head
            self.key_store[index, :, :head] = key_states[:, :, :head]
            self.value_store[index, :, :head] = value_states[:, :, :head]
            self.key_store[index, :, length - width : length] = key_states[:, :, head:]
            self.value_store[index, :, length - width : length] = value_states[:, :, head:]

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.key_store = self._select(self.key_store, indices)
            self.value_store = self._select(self.value_store, indices)
            self.keys = self.key_store[:, :, : self.length]
            self.values = self.value_store[:, :, : self.length]

        def _select(self, store: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
            """The rows ``indices`` of ``store`` at the same capacity, only the filled
            positions copied."""
            kept = store.new_empty((len(indices), *store.shape[1:]))
            filled = slice(0, self.length)
            torch.index_select(store[:, :, filled], 0, indices, out=kept[:, :, filled])
            return kept

    return ReservedLayer
