"""The options of one Exp-CoT run (``PipelineConfig``), with their defaults.

``expllm exp-cot`` reads its option defaults from these fields; the output manifest stores the
run identity (``to_dict``) so that a rerun into the same folder must match it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from engine.aus import resolve_backend
from engine.cot.writers import (
    FALLBACKS,
    READERS,
    REJECT,
    REWRITES,
    WRITERS,
    ChatParams,
    TemplateWriter,
    WriterOptions,
    WriterSetup,
)
from engine.registry import check_choice

#: ``--keep``: every record, or only those whose measured AUs support the label.
KEEP = ("all", "supported")
#: Fields that say how to reach the writer's model, not what it writes: kept out of the manifest.
_CONNECTION_FIELDS = ("base_url", "llm_concurrency", "llm_timeout", "llm_retries")
#: Fields of the engine loop; left out of the manifest when no model writes or reads, so that
#: its manifests (and reruns of earlier output folders) are exactly as before.
_LOOP_FIELDS = (
    "writer",
    "llm_model",
    "rewrite",
    "reader",
    "max_rounds",
    "word_cap",
    "max_new_tokens",
    "temperature",
    "seed",
    "fallback",
)


@dataclass(frozen=True)
class PipelineConfig:
    """Options of one Exp-CoT run (module docstring); those of the writer default to its own
    options' (``WriterOptions``, ``WriterSetup``, ``ChatParams``), so each default has one
    place."""

    au_backend: str = "auto"  # resolved on creation: ``auto`` -> fused or mesh
    au_options: tuple[tuple[str, Any], ...] = ()  # back-end options (JSON scalars)
    face_mode: str = "auto"
    embed_images: bool = False
    max_pixels: int = 100_000_000
    max_words: int = 180
    writer: str = TemplateWriter.name  # the model-free writer
    llm_model: str | None = None
    base_url: str | None = None
    llm_concurrency: int = WriterOptions.concurrency
    llm_timeout: float = WriterOptions.timeout
    llm_retries: int = WriterOptions.max_retries
    rewrite: str = WriterSetup.rewrite
    reader: str = "rules"
    max_rounds: int = 3
    word_cap: int = WriterSetup.word_cap
    max_new_tokens: int = ChatParams.max_tokens
    temperature: float = ChatParams.temperature
    seed: int = ChatParams.seed
    fallback: str = REJECT
    rules: str | None = None  # --rules DIR; None: data/rules/<AU back end>/, else data/
    keep: str = "all"  # --keep: all records, or only those whose AUs support the label

    def __post_init__(self) -> None:
        object.__setattr__(self, "au_backend", resolve_backend(self.au_backend)[0])
        WRITERS.get(self.writer)  # a ValueError naming the writers
        READERS.get(self.reader)
        for what, value, choices in (
            ("rewrite scope", self.rewrite, REWRITES),
            ("fallback", self.fallback, FALLBACKS),
            ("--keep", self.keep, KEEP),
        ):
            check_choice(what, value, choices)
        if self.max_rounds < 1 or self.word_cap < 1 or self.max_new_tokens < 1:
            raise ValueError("--max-rounds, --word-cap and --max-new-tokens must be at least 1")

    @property
    def uses_llm(self) -> bool:
        """Whether a model writes the drafts."""
        return WRITERS.get(self.writer).uses_model

    def to_dict(self) -> dict:
        """The run identity stored in the manifest (no connection details, never a key)."""
        data = asdict(self)
        data["au_options"] = dict(self.au_options)
        for name in _CONNECTION_FIELDS:
            data.pop(name)
        if not self.uses_llm and not READERS.get(self.reader).uses_model:
            for name in _LOOP_FIELDS:
                data.pop(name)
        return data
