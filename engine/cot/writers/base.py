"""The interfaces of the engine loop's writers (AU2Des) and readers (Des2Exp).

A ``Writer`` turns a ``WriteRequest`` (the face's rule evidence, the round, earlier drafts and
what was wrong with them) into draft texts; a ``Reader`` infers the label from a text alone.
Each says whether a model stands behind it (``uses_model``), so that callers never test names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from engine.cot.render import CoTRenderer
from engine.cot.rules import EmotionEvidence
from engine.cot.writers.chat import ChatParams, Completion, Usage


@dataclass(frozen=True)
class WriterOptions:
    """How to reach or load the writer's model (not part of a run's identity, except ``model``)."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 5


@dataclass(frozen=True)
class WriterSetup:
    """Everything a registered writer is built from besides the renderer."""

    options: WriterOptions = WriterOptions()  # noqa: RUF009 - frozen value object
    params: ChatParams = ChatParams()  # noqa: RUF009 - frozen value object
    word_cap: int = 130
    cache_dir: Path | None = None
    rewrite: str = "sections"  # how an LLM rewrites the reference draft (``REWRITES``)


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


class Reader(ABC):
    """Des2Exp: the label a reader infers from each text alone."""

    name: ClassVar[str]
    #: Whether a chat model reads (it then needs a writer with a model to share).
    uses_model: ClassVar[bool] = False

    @classmethod
    def for_writer(cls, writer: Writer | None) -> Reader:
        """The reader of a run whose drafts ``writer`` writes (the default needs none)."""
        return cls()

    @abstractmethod
    def read_many(self, texts: list[str]) -> list[str | None]:
        """Inferred labels (canonical emotions, or None), in order."""


class Writer(ABC):
    """AU2Des: writes drafts for a batch of requests (concurrently where the back end can)."""

    name: ClassVar[str]
    #: Whether a model writes the drafts. A writer without one is deterministic: one round
    #: (another would repeat the text), no word cap, and its unverified texts are kept.
    uses_model: ClassVar[bool] = True

    @classmethod
    def build(cls, name: str, renderer: CoTRenderer, setup: WriterSetup) -> Writer:
        """The writer registered as ``name`` (``engine.cot.writers.WRITERS``)."""
        raise NotImplementedError(f"{cls.__name__} is not a registered writer")

    @property
    @abstractmethod
    def model(self) -> str | None:
        """Model id recorded in the shards' ``writer_model`` (None without a model)."""

    @abstractmethod
    def write(self, requests: list[WriteRequest]) -> list[Draft]:
        """One draft per request, in order."""

    def chat_reader(self) -> Reader:
        """A reader that asks this writer's model; a ValueError for writers without one."""
        raise ValueError("--reader llm needs an LLM writer (--writer openai or local)")

    def take_usage(self) -> Usage | None:
        """Model usage since the last call (None for writers without a model)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model."""
