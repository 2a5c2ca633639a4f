"""Prompts of the LLM writer and reader: Jinja templates in ``templates/prompts/``.

Two scopes of rewriting, both from a reference draft of the CoT templates:

* ``sections`` (default): one conversation per section (system prompt, a worked example,
  the paragraph); the model paraphrases one paragraph and the engine puts the three headers
  back, so even a small model cannot break the format.
* ``text``: one conversation per face with the measured AU table, the rule-table evidence and
  the whole reference draft; the model must keep the headers itself.

Round 1's reference draft is rendered *without* the label (its conclusion is the rules'
dominant emotion), so the expected expression never reaches the writer in round 1. From round
2 on the reference is rendered for the expected expression (its interpretation reasons towards
it from the measured cues); in ``text`` scope the prompt also names it and lists the earlier
drafts with what was wrong with each, the Des2Exp failure included (a small model copies such
notes into a paragraph, so ``sections`` prompts carry the paragraph alone). No prompt speaks of
annotations, labels or datasets.
"""

from __future__ import annotations

import hashlib
import re

import jinja2

from engine.cot.format import HEADERS
from engine.cot.render import CoTRenderer, join_and
from engine.cot.writers.base import WriteRequest
from engine.registry import check_choice
from engine.resources import templates_dir
from engine.types import EMOTIONS

#: How an LLM writer rewrites the reference draft: section by section, or as a whole text.
REWRITES = ("sections", "text")
_FILES = (
    "writer_system",
    "writer_user",
    "section_system",
    "section_example_user",
    "section_example_assistant",
    "section_user",
    "reader_system",
    "reader_user",
)


class PromptBook:
    """Renders writer and reader conversations; ``writer_id`` names the prompt version."""

    def __init__(
        self,
        renderer: CoTRenderer,
        word_cap: int = 130,
        max_history_words: int = 160,
        scope: str = "sections",
    ):
        check_choice("rewrite scope", scope, REWRITES)
        self.renderer = renderer
        self.word_cap = word_cap
        self.scope = scope
        self.max_history_words = max_history_words
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates_dir())),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        env.filters["join_and"] = join_and
        self.templates = {name: env.get_template(f"prompts/{name}.j2") for name in _FILES}
        digest = hashlib.sha1()
        for name in _FILES:
            digest.update(env.loader.get_source(env, f"prompts/{name}.j2")[0].encode())
        self.writer_id = f"prompts/writer-{scope}@{digest.hexdigest()[:8]}"

    def writer_messages(self, request: WriteRequest) -> list[dict]:
        """System and user messages of one writer request."""
        feedback = request.round > 1
        label = request.label if feedback else None
        reference = self.renderer.render(request.record_id, label, request.evidence).cot.text
        evidence = request.evidence
        ranked = sorted(EMOTIONS, key=lambda e: -evidence.scores[e])
        context = {
            "aus": evidence.active,
            "threshold": self.renderer.threshold,
            "scores": [(e, evidence.scores[e]) for e in ranked[:3] if evidence.scores[e] > 0],
            "dominant": evidence.dominant,
            "secondary": evidence.secondary,
            "prototypes": evidence.prototypes[:3],
            "conflicts": evidence.conflicts,
            "feedback": feedback,
            "label": label,
            "history": [
                (_truncate(text, self.max_history_words), reason)
                for text, reason in request.history
            ],
            "reference": reference,
            "word_cap": self.word_cap,
        }
        return [
            {"role": "system", "content": self.templates["writer_system"].render(context).strip()},
            {"role": "user", "content": self.templates["writer_user"].render(context).strip()},
        ]

    def section_messages(self, request: WriteRequest) -> list[tuple[list[dict], int]]:
        """One conversation per section (``HEADERS`` order) of the request's reference draft,
        each with its word budget (the section's share of the word cap)."""
        feedback = request.round > 1
        label = request.label if feedback else None
        reference = self.renderer.render(request.record_id, label, request.evidence).cot
        total = sum(len(p.split()) for p in reference.sections)
        out = []
        for header, paragraph in zip(HEADERS, reference.sections, strict=True):
            share = max(12, round(self.word_cap * len(paragraph.split()) / max(total, 1)))
            context = {"words": share, "header": header, "paragraph": paragraph}
            turns = [
                ("system", "section_system"),
                ("user", "section_example_user"),
                ("assistant", "section_example_assistant"),
                ("user", "section_user"),
            ]
            messages = [
                {"role": role, "content": self.templates[name].render(context).strip()}
                for role, name in turns
            ]
            out.append((messages, share))
        return out

    def borrowed_from_example(self, answer: str, paragraph: str) -> str | None:
        """A topic word of the worked example (``topic_words`` in its template) that ``answer``
        uses and ``paragraph``, what it paraphrases, does not: small models copy the example
        ("... often signal a storm")."""
        topic = set(self.templates["section_example_user"].module.topic_words)
        copied = sorted((_words(answer) & topic) - _words(paragraph))
        return copied[0] if copied else None

    def reader_messages(self, text: str) -> list[dict]:
        """System and user messages asking for the expression ``text`` describes (Des2Exp; the
        ``LLMReader`` passes the description without the Conclusion)."""
        context = {"text": text, "emotions": EMOTIONS}
        return [
            {"role": "system", "content": self.templates["reader_system"].render(context).strip()},
            {"role": "user", "content": self.templates["reader_user"].render(context).strip()},
        ]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _truncate(text: str, words: int) -> str:
    parts = text.split()
    return text.strip() if len(parts) <= words else " ".join(parts[:words]) + " ..."
