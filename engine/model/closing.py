"""How long grounded decoding lets the nano ExpLLM reason before it must close
(``reasoning_closes``): the Interpretation's own sentences come to a verdict in bold within
a few sentences (``AFTER_FACTS``, ``WITHOUT_FACTS``), the Conclusion follows that
verdict's sentence, and the Conclusion is one sentence of at most ``CONCLUSION_CHARACTERS``.
The CoT templates reason in two sentences or fewer after their stated facts; a text that goes
on past these bounds has lost its thread (and drifts into other topics). After the facts of a
planned reading, the verdict comes next, in the templates' words (``VERDICT_OPENING``)."""

from __future__ import annotations

import re

from engine.cot.format import HEADER_MARKS

#: (sentences, characters) the Interpretation may write before its verdict after stated facts,
#: after the facts of a planned reading (which state all the templates say before the
#: verdict: none) and without any facts (the templates' longest: 6 and 674); past the
#: characters a word begun is finished and the sentence ended.
AFTER_FACTS = (3, 480)
AFTER_PLANNED_FACTS = (0, 0)
WITHOUT_FACTS = (7, 800)
#: Characters of the Conclusion's one sentence; past them likewise.
CONCLUSION_CHARACTERS = 240
#: How an overdue verdict opens (the templates' words; the label slot names the emotion).
VERDICT_OPENING = " Weighing these cues, the face reads as **"
_INTERPRETATION = HEADER_MARKS[1]
_CONCLUSION = "\n\n" + HEADER_MARKS[2]
#: A sentence's end: a full stop not inside a number ("1.5").
_SENTENCE_END = re.compile(r"\.(?!\d)")
#: A verdict in bold (``**anger**``, what Des2Exp and the Conclusion's label read).
BOLD_WORD = re.compile(r"\*\*[A-Za-z]+\*\*")


def reasoning_closes(text: str, stated: int = 0, planned: bool = False) -> tuple[bool, list[str]]:
    """Whether ``text`` (an unfinished CoT, its first ``stated`` characters given facts, those
    of a ``planned`` reading) keeps within the bounds, and what must come next where it is at
    one (else ``[]``)."""
    start = text.find(_INTERPRETATION)
    if start < 0:
        return True, []
    body_start = start + len(_INTERPRETATION)
    end = text.find(_CONCLUSION)
    if end >= 0:
        conclusion = text[end + len(_CONCLUSION) :]
        sentence = _SENTENCE_END.search(conclusion)
        if sentence and sentence.end() < len(conclusion):
            return False, []  # one sentence; then the text ends
        return _within(conclusion, CONCLUSION_CHARACTERS), []
    own = text[max(body_start, stated) :]
    if planned and stated and not own.startswith(VERDICT_OPENING[: len(own)]):
        return False, []  # the verdict comes next, in the templates' words
    verdict = BOLD_WORD.search(own)
    if verdict:  # a verdict written: the rest of its sentence, then the header
        after = _SENTENCE_END.search(own, verdict.end())
        rest = own[after.end() :] if after else ""
        if not _CONCLUSION.startswith(rest):
            return False, []
        return True, [_CONCLUSION[len(rest) :]] if after else []
    if "**" in own:  # a verdict opened: the label slot names the emotion
        return True, []
    bounds = AFTER_PLANNED_FACTS if planned else AFTER_FACTS
    sentences, characters = bounds if stated else WITHOUT_FACTS
    ends = [0] + [match.end() for match in _SENTENCE_END.finditer(own)]
    due = ends[sentences] if len(ends) > sentences else None
    if due is None and len(own) > characters:
        late = [e for e in ends if e > characters]
        due = late[0] if late else None
        if due is None:
            return _within(own, characters), []
    if due is None:
        return True, []
    rest = own[due:]
    if VERDICT_OPENING.startswith(rest):
        return True, [VERDICT_OPENING[len(rest) :]] if rest != VERDICT_OPENING else []
    return rest.startswith(VERDICT_OPENING), []


def _within(section: str, limit: int) -> bool:
    """Whether ``section`` is within ``limit`` characters, or past them only finishes its last
    word and ends its sentence (no new word begun)."""
    return len(section) <= limit or " " not in section[limit:]
