"""Writers (AU2Des) and readers (Des2Exp) of the engine loop: the registries and factories.

* ``template`` writer: the deterministic Jinja ``CoTRenderer`` (no model;
  ``engine.cot.writers.template``).
* ``openai`` and ``local`` writers: an ``LLMWriter`` (``engine.cot.writers.llm``) over the chat
  back end of the same name (``engine.cot.writers.chat.CHAT_MODELS``: an OpenAI-compatible
  endpoint, or a causal LM in-process with transformers).
* ``rules`` reader: ``engine.cot.verify.infer_label``; ``llm`` reader: the writer's chat model
  asked for the label. Both read the description only (the Conclusion removed), as the paper's
  Des2Exp does.

Callers ask a writer or reader what it is (``uses_model``), never its name; a name is checked
once, here (``WRITERS.get``, ``READERS.get``: a ValueError naming the choices).
"""

from __future__ import annotations

from engine.cot.render import CoTRenderer
from engine.cot.writers.base import (
    Draft,
    Reader,
    Writer,
    WriteRequest,
    WriterOptions,
    WriterSetup,
)
from engine.cot.writers.chat import (
    CHAT_MODELS,
    ChatClient,
    ChatModel,
    ChatParams,
    Completion,
    OnAnswer,
    Usage,
    price_for,
)
from engine.cot.writers.llm import LLMReader, LLMWriter
from engine.cot.writers.prompts import REWRITES
from engine.cot.writers.template import RuleReader, TemplateWriter
from engine.registry import Registry

#: Writers by name: the template writer, and an LLM writer per chat back end with a model.
WRITERS: Registry[type[Writer]] = Registry("writer")
WRITERS.register()(TemplateWriter)
WRITERS.register("openai")(LLMWriter)
WRITERS.register("local")(LLMWriter)

#: Readers by name.
READERS: Registry[type[Reader]] = Registry("reader")
READERS.register()(RuleReader)
READERS.register()(LLMReader)

#: ``--fallback``: faces no LLM draft verified are rejected, or get the model-free writer's text.
REJECT = "reject"
FALLBACKS = (REJECT, TemplateWriter.name)


def create_writer(name: str, renderer: CoTRenderer, setup: WriterSetup | None = None) -> Writer:
    """Build the writer ``name`` (``WRITERS``); an LLM writer rewrites the reference draft
    section by section or as a whole text (``setup.rewrite``)."""
    return WRITERS.get(name).build(name, renderer, setup or WriterSetup())


def create_reader(name: str, writer: Writer | None = None) -> Reader:
    """``rules`` (default), or ``llm``: the writer's chat model reads (needs an LLM writer)."""
    return READERS.get(name).for_writer(writer)


__all__ = [
    "CHAT_MODELS",
    "FALLBACKS",
    "READERS",
    "REJECT",
    "REWRITES",
    "WRITERS",
    "ChatClient",
    "ChatModel",
    "ChatParams",
    "Completion",
    "Draft",
    "LLMReader",
    "LLMWriter",
    "OnAnswer",
    "Reader",
    "RuleReader",
    "TemplateWriter",
    "Usage",
    "WriteRequest",
    "Writer",
    "WriterOptions",
    "WriterSetup",
    "create_reader",
    "create_writer",
    "price_for",
]
