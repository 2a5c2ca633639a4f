"""Chat models behind the LLM writer and reader: one interface, back ends by name, a client.

``CHAT_MODELS`` names the back ends (``openai``, ``local``, ``template``) and imports each one
lazily, so the core never imports openai, torch or transformers unless such a back end is asked
for. ``ChatClient`` adds an on-disk response cache and usage accounting (calls, tokens, cost from
``data/prices.json``).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, ClassVar

from engine.cot.llm_cache import ResponseCache, cache_key
from engine.registry import Registry
from engine.resources import data_file

if TYPE_CHECKING:
    from engine.cot.writers.base import WriterOptions


@dataclass(frozen=True)
class ChatParams:
    """Decoding parameters; the defaults are deterministic (greedy, fixed seed)."""

    max_tokens: int = 200
    temperature: float = 0.0
    seed: int = 0


@dataclass
class Completion:
    """One chat answer, or the error that prevented it."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    cached: bool = False
    error: str | None = None


@dataclass
class Usage:
    """Model calls, cache hits, tokens and cost accumulated by a ``ChatClient``."""

    calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


#: Called with (index, completion) as each answer of a ``complete_many`` call is ready.
OnAnswer = Callable[[int, "Completion"], None] | None


class ChatModel(ABC):
    """A chat-completions model: ``complete_many`` answers several conversations.

    Subclasses set ``name`` and ``model`` (the model id recorded in shards) and may answer the
    conversations concurrently. A failed call returns a ``Completion`` with ``error`` set;
    only programming errors raise.
    """

    name: ClassVar[str]
    model: str
    #: (prompt, completion) US$ per million tokens; None when unknown.
    price: tuple[float, float] | None = (0.0, 0.0)

    @classmethod
    def from_options(cls, options: WriterOptions) -> ChatModel:
        """The back end a writer with ``options`` uses (the default reads only the model)."""
        return cls(model=options.model)

    @abstractmethod
    def complete_many(
        self, conversations: list[list[dict]], params: ChatParams, on_answer: OnAnswer = None
    ) -> list[Completion]:
        """Answers to ``conversations`` (lists of ``{"role", "content"}``), in order;
        ``on_answer(index, completion)`` is called as soon as each one is ready."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the default holds none."""


#: Chat back ends by name, each imported on first use (``data/plugins.json``).
CHAT_MODELS: Registry[type[ChatModel]] = Registry("chat back end")


@cache
def _prices() -> dict[str, tuple[float, float]]:
    table = json.loads(data_file("prices.json").read_text())["per_million_tokens"]
    return {prefix: (float(p), float(c)) for prefix, (p, c) in table.items()}


def price_for(model: str) -> tuple[float, float] | None:
    """Known prices of an OpenAI model id (``data/prices.json``, prefix match), else None."""
    prices = _prices()
    for prefix in sorted(prices, key=len, reverse=True):
        if model.startswith(prefix):
            return prices[prefix]
    return None


class ChatClient:
    """A ``ChatModel`` with an optional on-disk response cache and usage accounting."""

    def __init__(self, chat: ChatModel, cache: ResponseCache | None = None):
        self.chat = chat
        self.cache = cache
        self.usage = Usage(cost_usd=0.0 if chat.price is not None else None)

    @property
    def model(self) -> str:
        return self.chat.model

    def complete_many(
        self, conversations: list[list[dict]], params: ChatParams
    ) -> list[Completion]:
        results: list[Completion | None] = [None] * len(conversations)
        keys = [cache_key(self.chat.model, c, asdict(params)) for c in conversations]
        missing = []
        for index, key in enumerate(keys):
            hit = self.cache.get(key) if self.cache else None
            if hit is not None:
                results[index] = Completion(**{**hit, "cached": True})
                self.usage.cache_hits += 1
            else:
                missing.append(index)
        recorded: set[int] = set()

        def record(position: int, answer: Completion) -> None:
            """Count and cache one answer as soon as it is ready (a killed run keeps it)."""
            if position in recorded:
                return
            recorded.add(position)
            self._count(answer)
            if self.cache and answer.error is None:
                self.cache.put(keys[missing[position]], {**asdict(answer), "cached": False})

        if missing:
            answers = self.chat.complete_many([conversations[i] for i in missing], params, record)
            for position, answer in enumerate(answers):
                results[missing[position]] = answer
                record(position, answer)
        return results

    def _count(self, answer: Completion) -> None:
        self.usage.calls += 1
        if answer.error is not None:
            self.usage.errors += 1
            return
        self.usage.prompt_tokens += answer.prompt_tokens
        self.usage.completion_tokens += answer.completion_tokens
        if self.usage.cost_usd is not None and self.chat.price is not None:
            per_in, per_out = self.chat.price
            self.usage.cost_usd += (
                answer.prompt_tokens * per_in + answer.completion_tokens * per_out
            ) / 1e6

    def take_usage(self) -> Usage:
        """The usage so far, and reset the counters (one shard's worth at a time)."""
        usage, self.usage = self.usage, Usage(cost_usd=0.0 if self.chat.price is not None else None)
        return usage

    def close(self) -> None:
        self.chat.close()
