"""Writers (AU2Des) and readers (Des2Exp) of the engine loop: one interface, back ends by name.

A ``Writer`` turns a ``WriteRequest`` (the face's rule evidence, the round, earlier drafts and
what was wrong with them) into draft texts; a ``Reader`` infers the label from a text alone.

* ``template`` writer: the deterministic Jinja ``CoTRenderer`` (no model).
* ``openai`` writer: an OpenAI-compatible chat endpoint (``engine.cot.writers.openai_chat``).
* ``local`` writer: a causal LM in-process with transformers (``engine.cot.writers.local_chat``).
* ``rules`` reader: ``engine.cot.verify.infer_label``; ``llm`` reader: the writer's chat model asked
  for the label. Both read the description only (the Conclusion removed), as the paper's
  Des2Exp does.

Chat back ends live in a registry (``create_chat_model``) and are imported lazily, so the core
never imports openai, torch or transformers unless such a back end is asked for.
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from engine.cot.format import HEADERS
from engine.cot.llm_cache import ResponseCache, cache_key
from engine.cot.render import CoTRenderer
from engine.cot.rules import EmotionEvidence
from engine.cot.verify import description_of, emotions_in, infer_label

#: Chat back-end name -> module that registers it.
_CHAT_MODULES = {
    "openai": "engine.cot.writers.openai_chat",
    "local": "engine.cot.writers.local_chat",
    "template": "engine.cot.writers.template_chat",
}
_CHAT_REGISTRY: dict[str, type[ChatModel]] = {}

#: Writer names accepted by ``create_writer`` (``template`` plus the chat back ends with a model).
WRITERS = ("template", "openai", "local")
READERS = ("rules", "llm")
#: How an LLM writer rewrites the reference draft (``engine.cot.writers.prompts``).
REWRITES = ("sections", "text")

#: US$ per million (prompt, completion) tokens, matched by model-name prefix (longest first).
PRICES_PER_MILLION = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}


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

    @abstractmethod
    def complete_many(
        self, conversations: list[list[dict]], params: ChatParams, on_answer: OnAnswer = None
    ) -> list[Completion]:
        """Answers to ``conversations`` (lists of ``{"role", "content"}``), in order;
        ``on_answer(index, completion)`` is called as soon as each one is ready."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the default holds none."""


def register_chat(cls: type[ChatModel]) -> type[ChatModel]:
    """Class decorator adding a chat back end to the registry under ``cls.name``."""
    _CHAT_REGISTRY[cls.name] = cls
    return cls


def create_chat_model(name: str, **options) -> ChatModel:
    """Build the chat back end ``name`` (``openai``, ``local`` or ``template``)."""
    if name not in _CHAT_MODULES:
        raise ValueError(
            f"unknown chat back end {name!r}; choose one of {', '.join(_CHAT_MODULES)}"
        )
    importlib.import_module(_CHAT_MODULES[name])
    return _CHAT_REGISTRY[name](**options)


def price_for(model: str) -> tuple[float, float] | None:
    """Known prices of an OpenAI model id (prefix match), else None."""
    for prefix in sorted(PRICES_PER_MILLION, key=len, reverse=True):
        if model.startswith(prefix):
            return PRICES_PER_MILLION[prefix]
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


@dataclass(frozen=True)
class WriteRequest:
    """What a writer knows of one face in one round.

    ``label`` is the expected expression; writers must not use it in round 1 (the paper's AU2Des
    writes from the AUs alone) and may from round 2 on (the feedback step). ``history`` holds
    the earlier drafts of this face with what was wrong with each.
    """

    record_id: str
    label: str | None
    evidence: EmotionEvidence
    round: int = 1
    history: tuple[tuple[str, str], ...] = ()


@dataclass
class Draft:
    """A writer's text for one request, the template or prompt that produced it, its completion."""

    text: str
    template_id: str
    completion: Completion = field(default_factory=Completion)


class Writer(ABC):
    """AU2Des: writes drafts for a batch of requests (concurrently where the back end can)."""

    name: ClassVar[str]
    #: Whether a later round can give another text (False for deterministic template writers).
    retries: ClassVar[bool] = True

    @property
    @abstractmethod
    def model(self) -> str | None:
        """Model id recorded in the shards' ``writer_model`` (None for the template)."""

    @abstractmethod
    def write(self, requests: list[WriteRequest]) -> list[Draft]:
        """One draft per request, in order."""

    def take_usage(self) -> Usage | None:
        """Model usage since the last call (None for writers without a model)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model."""


class TemplateWriter(Writer):
    """The Jinja renderer: deterministic, label-aware, one round."""

    name = "template"
    retries = False

    def __init__(self, renderer: CoTRenderer):
        self.renderer = renderer

    @property
    def model(self) -> None:
        return None

    def write(self, requests: list[WriteRequest]) -> list[Draft]:
        drafts = []
        for request in requests:
            rendered = self.renderer.render(request.record_id, request.label, request.evidence)
            drafts.append(Draft(rendered.cot.text, rendered.template_id))
        return drafts


class LLMWriter(Writer):
    """Prompts a chat model with the AU table, the evidence, a reference draft and feedback."""

    def __init__(self, name: str, client: ChatClient, prompts, params: ChatParams):
        self.name = name
        self.client = client
        self.prompts = prompts
        self.params = params

    @property
    def model(self) -> str:
        return self.client.model

    def write(self, requests: list[WriteRequest]) -> list[Draft]:
        if self.prompts.scope == "text":
            conversations = [self.prompts.writer_messages(r) for r in requests]
            answers = self.client.complete_many(conversations, self.params)
            return [Draft(a.text, self.prompts.writer_id, a) for a in answers]
        sections = [c for r in requests for c in self.prompts.section_messages(r)]
        answers: list[Completion] = [Completion()] * len(sections)
        budgets: dict[int, list[int]] = {}  # tokens -> sections (about 2 tokens per word)
        for index, (_, words) in enumerate(sections):
            budgets.setdefault(min(self.params.max_tokens, 2 * words + 8), []).append(index)
        for tokens, indices in sorted(budgets.items()):
            params = replace(self.params, max_tokens=tokens)
            batch = self.client.complete_many([sections[i][0] for i in indices], params)
            for index, answer in zip(indices, batch, strict=True):
                answers[index] = answer
        for index, (answer, (messages, _)) in enumerate(zip(answers, sections, strict=True)):
            borrowed = answer.error is None and self.prompts.borrowed_from_example(
                answer.text, messages[-1]["content"]
            )
            if borrowed:
                answers[index] = replace(answer, error=f"copies the worked example ({borrowed!r})")
        drafts = []
        for start in range(0, len(answers), len(HEADERS)):
            face = answers[start : start + len(HEADERS)]
            text = "\n\n".join(
                f"**{header}:** {_paragraph(a.text)}"
                for header, a in zip(HEADERS, face, strict=True)
            )
            drafts.append(Draft(text, self.prompts.writer_id, _joined(face)))
        return drafts

    def take_usage(self) -> Usage:
        return self.client.take_usage()

    def close(self) -> None:
        self.client.close()


_LEADING_HEADER = re.compile(r"^\s*(\*\*)?[A-Za-z ]{3,40}:(\*\*)?\s*")


def _paragraph(text: str) -> str:
    """A model's answer for one section as one paragraph (a heading it added is dropped)."""
    text = " ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return _LEADING_HEADER.sub("", text, count=1)


def _joined(parts: list[Completion]) -> Completion:
    """The completions of one face's sections as one (tokens summed, first error kept)."""
    return Completion(
        text="",
        prompt_tokens=sum(p.prompt_tokens for p in parts),
        completion_tokens=sum(p.completion_tokens for p in parts),
        finish_reason=next((p.finish_reason for p in parts if p.finish_reason != "stop"), "stop"),
        cached=all(p.cached for p in parts),
        error=next((p.error for p in parts if p.error is not None), None),
    )


class Reader(ABC):
    """Des2Exp: the label a reader infers from each text alone."""

    name: ClassVar[str]

    @abstractmethod
    def read_many(self, texts: list[str]) -> list[str | None]:
        """Inferred labels (canonical emotions, or None), in order."""


class RuleReader(Reader):
    """``engine.cot.verify.infer_label``: reads the description (Key Observations and
    Interpretation), never the Conclusion."""

    name = "rules"

    def read_many(self, texts: list[str]) -> list[str | None]:
        return [infer_label(t) for t in texts]


class LLMReader(Reader):
    """Asks a chat model which emotion a description shows; its first emotion word is the label.

    The model sees what the rule reader reads: Key Observations and Overall Emotional
    Interpretation, the Conclusion removed (``engine.cot.verify.description_of``)."""

    name = "llm"

    def __init__(self, client: ChatClient, prompts, params: ChatParams):
        self.client = client
        self.prompts = prompts
        self.params = ChatParams(max_tokens=8, temperature=0.0, seed=params.seed)

    def read_many(self, texts: list[str]) -> list[str | None]:
        answers = self.client.complete_many(
            [self.prompts.reader_messages(description_of(t)) for t in texts], self.params
        )
        labels = []
        for answer in answers:
            found = emotions_in(answer.text) if answer.error is None else []
            labels.append(found[0] if found else None)
        return labels


@dataclass(frozen=True)
class WriterOptions:
    """How to reach or load the writer's model (not part of a run's identity, except ``model``)."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 5


def create_writer(
    name: str,
    renderer: CoTRenderer,
    options: WriterOptions = WriterOptions(),  # noqa: B008 - frozen value object
    params: ChatParams = ChatParams(),  # noqa: B008 - frozen value object
    word_cap: int = 130,
    cache_dir: Path | None = None,
    rewrite: str = "sections",
) -> Writer:
    """Build the writer ``name`` (``template``, ``openai`` or ``local``); an LLM writer rewrites
    the reference draft section by section or as a whole text (``rewrite``)."""
    if name == "template":
        return TemplateWriter(renderer)
    if name not in WRITERS:
        raise ValueError(f"unknown writer {name!r}; choose one of {', '.join(WRITERS)}")
    from engine.cot.writers.prompts import PromptBook

    if name == "openai":
        chat = create_chat_model(
            "openai",
            base_url=options.base_url,
            model=options.model,
            api_key=options.api_key,
            concurrency=options.concurrency,
            timeout=options.timeout,
            max_retries=options.max_retries,
        )
    else:
        chat = create_chat_model("local", model=options.model)
    cache = ResponseCache(cache_dir) if cache_dir else None
    prompts = PromptBook(renderer, word_cap=word_cap, scope=rewrite)
    return LLMWriter(name, ChatClient(chat, cache), prompts, params)


def create_reader(name: str, writer: Writer | None = None) -> Reader:
    """``rules`` (default), or ``llm``: the writer's chat model reads (needs an LLM writer)."""
    if name == "rules":
        return RuleReader()
    if name != "llm":
        raise ValueError(f"unknown reader {name!r}; choose one of {', '.join(READERS)}")
    if not isinstance(writer, LLMWriter):
        raise ValueError("--reader llm needs an LLM writer (--writer openai or local)")
    return LLMReader(writer.client, writer.prompts, writer.params)
