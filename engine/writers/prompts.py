"""Prompts of the LLM writer and reader: Jinja templates in ``templates/prompts/``.

The writer's user prompt carries the measured AU table, the rule-table evidence, a reference
draft from the CoT templates and, from round 2 on, the ground-truth label and the earlier drafts
with what was wrong. Round 1's reference draft is rendered *without* the label (its conclusion
is the rules' dominant emotion), so the ground truth never reaches the writer in round 1.
"""

from __future__ import annotations

import hashlib

import jinja2

from engine.render import CoTRenderer, join_and
from engine.resources import templates_dir
from engine.types import EMOTIONS
from engine.writers import WriteRequest

_FILES = ("writer_system", "writer_user", "reader_system", "reader_user")


class PromptBook:
    """Renders writer and reader conversations; ``writer_id`` names the prompt version."""

    def __init__(self, renderer: CoTRenderer, word_cap: int = 130, max_history_words: int = 160):
        self.renderer = renderer
        self.word_cap = word_cap
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
        self.writer_id = f"prompts/writer@{digest.hexdigest()[:8]}"

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
            "prototypes": [f"{p.emotion} ({p.aus})" for p in evidence.prototypes[:3]],
            "conflicts": [c.replace("_vs_", " vs ") for c in evidence.conflicts],
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

    def reader_messages(self, text: str) -> list[dict]:
        """System and user messages asking for the label of ``text`` alone (Des2Exp)."""
        context = {"text": text, "emotions": EMOTIONS}
        return [
            {"role": "system", "content": self.templates["reader_system"].render(context).strip()},
            {"role": "user", "content": self.templates["reader_user"].render(context).strip()},
        ]


def _truncate(text: str, words: int) -> str:
    parts = text.split()
    return text.strip() if len(parts) <= words else " ".join(parts[:words]) + " ..."
