"""The three-part chain of thought: one value type that renders to, and parses from, text.

Exact format::

    **Key Observations:** ...

    **Overall Emotional Interpretation:** ...

    **Conclusion:** ...

``CoT.parse`` also accepts the header variants seen in the ExpLLM paper's released CoTs
(``**Key Observations**:``, ``**Key Observations**``, ``### Key Observations``, a bare
``Key Observations:`` at a line start, and ``Emotional Interpretation`` without "Overall").
``exact_format_prefix`` says whether an unfinished text can still become an exact CoT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADERS = ("Key Observations", "Overall Emotional Interpretation", "Conclusion")
#: How each section opens in the exact format (``CoT.text``): "**Conclusion:** ".
HEADER_MARKS = tuple(f"**{header}:** " for header in HEADERS)
#: The same, with the blank line before the second and third.
SECTION_OPENINGS = tuple(("\n\n" if index else "") + m for index, m in enumerate(HEADER_MARKS))
_ODD_SPACE = re.compile(r"[^\S ]|  ")
#: A run of characters with no space longer than any word of a CoT (a degenerate repetition).
_RUNAWAY_WORD = re.compile(r"\S{32}")
#: A section may not end in this many characters drawn from 4 or fewer ("U+U+UUUU UUU").
_MONOTONOUS_TAIL = 48

_HEADER = re.compile(
    r"(?im)^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*)?[ \t]*"
    r"(?P<name>key observations|(?:overall )?emotional interpretation|conclusion)"
    r"[ \t]*(?::[ \t]*\*\*|\*\*[ \t]*:|\*\*|:|(?=\r?\n))[ \t]*"
)
_ORDER = {"key observations": 0, "emotional interpretation": 1, "conclusion": 2}


class CoTFormatError(ValueError):
    """Text that is not a three-part chain of thought."""


@dataclass(frozen=True)
class CoT:
    """A chain of thought: observations, interpretation, conclusion (each plain prose)."""

    observations: str
    interpretation: str
    conclusion: str

    def __post_init__(self) -> None:
        for attr in ("observations", "interpretation", "conclusion"):
            object.__setattr__(self, attr, _clean(getattr(self, attr)))
        for header, body in zip(HEADERS, self.sections, strict=True):
            if not body.strip():
                raise CoTFormatError(f"the {header!r} section is empty")

    @property
    def sections(self) -> tuple[str, str, str]:
        return (self.observations, self.interpretation, self.conclusion)

    @property
    def text(self) -> str:
        """The exact three-header rendering."""
        return "\n\n".join(
            f"{mark}{body}" for mark, body in zip(HEADER_MARKS, self.sections, strict=True)
        )

    @property
    def word_count(self) -> int:
        return sum(len(body.split()) for body in self.sections)

    @classmethod
    def parse(cls, text: str) -> CoT:
        """Read a CoT from text with the exact or a variant header set; CoTFormatError otherwise."""
        found = list(_HEADER.finditer(text))
        names = [re.sub(r"^overall ", "", m["name"].lower()) for m in found]
        order = [_ORDER[n] for n in names]
        if order != [0, 1, 2]:
            seen = ", ".join(m["name"] for m in found) or "none"
            raise CoTFormatError(
                "expected the headers Key Observations, Overall Emotional Interpretation and "
                f"Conclusion once each and in that order; found: {seen}"
            )
        bodies = [
            text[m.end() : (found[i + 1].start() if i + 1 < len(found) else len(text))]
            for i, m in enumerate(found)
        ]
        return cls(*bodies)

    @staticmethod
    def is_exact(text: str) -> bool:
        """True when ``text`` is already in the exact format (parses and re-renders identically)."""
        try:
            return CoT.parse(text).text == text
        except CoTFormatError:
            return False


def _clean(body: str) -> str:
    """Collapse white space and strip stray markdown emphasis around a section body."""
    return re.sub(r"\s+", " ", body).strip()


def exact_format_prefix(text: str) -> tuple[bool, list[str]]:
    """Whether ``text`` can still become a CoT in the exact format (``CoT.text``): the three
    headers in order, each section one line of single-spaced, non-empty prose with no runaway
    word or monotonous tail; and the rest of a header begun at its end (else ``[]``)."""
    position = 0
    for index, mark in enumerate(SECTION_OPENINGS):
        rest = text[position:]
        if len(rest) < len(mark):
            return mark.startswith(rest), ([mark[len(rest) :]] if mark.startswith(rest) else [])
        if not rest.startswith(mark):
            return False, []
        position += len(mark)
        end = text.find("\n", position)
        body = text[position:] if end < 0 else text[position:end]
        if body.startswith(" ") or _ODD_SPACE.search(body) or _RUNAWAY_WORD.search(body):
            return False, []
        if len(body) >= _MONOTONOUS_TAIL and len(set(body[-_MONOTONOUS_TAIL:])) <= 4:
            return False, []
        if end < 0:
            return True, []
        if index == len(SECTION_OPENINGS) - 1 or not body or body.endswith(" "):
            return False, []
        position = end
    return True, []
