"""The LLM writer and reader: a chat model (``engine.cot.writers.chat``) prompted with the
templates of ``templates/prompts/`` (``engine.cot.writers.prompts``).

The writer rewrites the CoT templates' reference draft, section by section (the engine puts the
headers back) or as a whole text; the reader asks the same model which emotion a description
shows, reading what the rule reader reads (the Conclusion removed), as the paper's Des2Exp does.
"""

from __future__ import annotations

import re
from dataclasses import replace

from engine.cot.format import HEADERS
from engine.cot.llm_cache import ResponseCache
from engine.cot.render import CoTRenderer
from engine.cot.verify import description_of, emotions_in
from engine.cot.writers.base import Draft, Reader, Writer, WriteRequest, WriterSetup
from engine.cot.writers.chat import CHAT_MODELS, ChatClient, ChatParams, Completion, Usage
from engine.cot.writers.prompts import PromptBook


class LLMWriter(Writer):
    """Prompts a chat model with the AU table, the evidence, a reference draft and feedback."""

    def __init__(self, name: str, client: ChatClient, prompts: PromptBook, params: ChatParams):
        self.name = name
        self.client = client
        self.prompts = prompts
        self.params = params

    @classmethod
    def build(cls, name: str, renderer: CoTRenderer, setup: WriterSetup) -> LLMWriter:
        """The writer over the chat back end of the same name (``CHAT_MODELS``)."""
        chat = CHAT_MODELS.get(name).from_options(setup.options)
        cache = ResponseCache(setup.cache_dir) if setup.cache_dir else None
        prompts = PromptBook(renderer, word_cap=setup.word_cap, scope=setup.rewrite)
        return cls(name, ChatClient(chat, cache), prompts, setup.params)

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

    def chat_reader(self) -> LLMReader:
        return LLMReader(self.client, self.prompts, self.params)

    def take_usage(self) -> Usage:
        return self.client.take_usage()

    def close(self) -> None:
        self.client.close()


class LLMReader(Reader):
    """Asks a chat model which emotion a description shows; its first emotion word is the label.

    The model sees what the rule reader reads: Key Observations and Overall Emotional
    Interpretation, the Conclusion removed (``engine.cot.verify.description_of``)."""

    name = "llm"
    uses_model = True

    def __init__(self, client: ChatClient, prompts: PromptBook, params: ChatParams):
        self.client = client
        self.prompts = prompts
        self.params = ChatParams(max_tokens=8, temperature=0.0, seed=params.seed)

    @classmethod
    def for_writer(cls, writer: Writer | None) -> Reader:
        """The reader sharing ``writer``'s model (``Writer.chat_reader``: a ValueError for a
        writer without one)."""
        return writer.chat_reader()

    def read_many(self, texts: list[str]) -> list[str | None]:
        answers = self.client.complete_many(
            [self.prompts.reader_messages(description_of(t)) for t in texts], self.params
        )
        labels = []
        for answer in answers:
            found = emotions_in(answer.text) if answer.error is None else []
            labels.append(found[0] if found else None)
        return labels


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
