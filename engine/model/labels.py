"""Label slots of guided decoding: where the next word of a CoT names an emotion, and which.

* In the **Overall Emotional Interpretation**, the emotion in bold (the verdict
  ``engine.cot.verify.infer_label`` reads) and, unless the Conclusion follows that verdict, its
  first emotion are label slots: the emotion is chosen among the allowed classes, weighted by
  the encoder classifier's prior (label guidance). Where the Conclusion follows the verdict, the
  emotions the reasoning names before it (the measured evidence, a contrary cue) are its own.
* In the **Conclusion**, its first emotion (after a label cue, ``DecodingSettings.label_cue``,
  or where the LM starts an emotion word) is the one the Interpretation leads with
  (``DecodingSettings.conclusion_follows``): ``"first"``, the first emotion the Interpretation
  names (synonyms resolved, ``engine.cot.verify.emotions_in``; the evaluation's interpretation
  agreement), or ``"verdict"``, the emotion Des2Exp reads from the description
  (``infer_label``: the Interpretation's bold verdict); so the Conclusion agrees with it by
  construction. Where that emotion is not an allowed class (or ``""``), it is chosen as above.

A slot names whole words: once a cued label word is begun, its ``rest`` is forced.
``label_slot_at`` works on text only; ``engine.model.decoding`` applies it to token scores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine.cot.format import HEADER_MARKS
from engine.cot.verify import emotions_in, infer_label, interpretation_lead
from engine.types import EMOTIONS

_INTERPRETATION = HEADER_MARKS[1]
_CONCLUSION = HEADER_MARKS[2]
#: The unfinished word at the end of a text, after at most one space.
_PARTIAL = re.compile(r"( ?)([A-Za-z]*)$")


@dataclass(frozen=True)
class LabelSlot:
    """A label slot: the emotions it may name, whether the classifier prior weighs in, whether
    a cue marks it (else it is one only where the LM starts an emotion word), and the rest of
    a label word already begun (to be forced)."""

    choices: tuple[str, ...]
    weighted: bool
    cued: bool
    rest: str = ""


def label_choices(allowed: Sequence[str] | None) -> tuple[str, ...]:
    """``allowed`` in the order of ``EMOTIONS`` (all of them for None); ValueError for others."""
    if allowed is None:
        return EMOTIONS
    unknown = sorted(set(allowed) - set(EMOTIONS))
    if unknown or not allowed:
        raise ValueError(f"allowed labels must be some of {', '.join(EMOTIONS)}; got {unknown}")
    return tuple(e for e in EMOTIONS if e in allowed)


def label_slot(text: str, cue: str) -> bool:
    """Whether the next word of ``text`` would be a label (``cue`` matches at its end)."""
    return re.search(cue, text[-40:]) is not None


def _cued(head: str, body_head: str, cue: str) -> bool:
    """``cue`` at the end of ``head``; a cue ending in ``**`` only where it opens a bold."""
    if not label_slot(head, cue):
        return False
    return not head.endswith("**") or body_head.count("**") % 2 == 1


#: What the Conclusion's label may follow (``DecodingSettings.conclusion_follows``).
FOLLOWS = ("first", "verdict", "")


def conclusion_target(description: str, follows: str = "first") -> str | None:
    """The emotion the Interpretation of ``description`` (a CoT up to its Conclusion) leads
    with: the first it names (``"first"``) or the verdict Des2Exp reads (``"verdict"``)."""
    if follows not in FOLLOWS:
        raise ValueError(f"conclusion_follows must be one of {FOLLOWS}, got {follows!r}")
    if follows == "verdict":
        return infer_label(description)
    return interpretation_lead(description) if follows else None


def label_slot_at(
    text: str, cue: str, allowed: Sequence[str] | None = None, follows: str = "first"
) -> LabelSlot | None:
    """The label slot at the end of ``text`` (an unfinished CoT), or None where there is none.

    ``cue``: the label cue regex; ``allowed``: the classes a slot may name (default: all);
    ``follows``: what the Conclusion's label follows (``FOLLOWS``)."""
    choices = label_choices(allowed)
    if _CONCLUSION in text:
        description, body = text.split(_CONCLUSION, 1)
        lead = conclusion_target(description, follows)
        options = (lead,) if lead in choices else choices
        return _slot(text, body, cue, options, weighted=len(options) > 1, first_only=True)
    if _INTERPRETATION in text:
        body = text.split(_INTERPRETATION, 1)[1]
        if "\n" in body:
            return None
        cued_only = follows == "verdict"
        return _slot(text, body, cue, choices, weighted=True, first_only=False, cued_only=cued_only)
    return None


def _slot(
    text: str,
    body: str,
    cue: str,
    options: tuple[str, ...],
    weighted: bool,
    first_only: bool,
    cued_only: bool = False,
) -> LabelSlot | None:
    """The slot at the end of ``text`` (``body``: its section so far): a cued one, or where
    the section names no emotion yet and an emotion word starts (not for ``cued_only``)."""
    partial = _PARTIAL.search(body)
    if partial[2]:
        head, body_head = text[: len(text) - len(partial[0])], body[: partial.start()]
        if _cued(head, body_head, cue) and not (first_only and emotions_in(body_head)):
            fitting = [e for e in options if e.startswith(partial[2]) and e != partial[2]]
            return (
                LabelSlot(options, weighted, True, fitting[0][len(partial[2]) :])
                if len(fitting) == 1
                else None
            )
    named = bool(emotions_in(body))
    cued = _cued(text, body, cue) and not (first_only and named)
    return LabelSlot(options, weighted, cued) if cued or not (named or cued_only) else None


def emotion_token_families(tokenizer) -> list[dict[int, int]]:
    """First token id -> emotion index, once for words after a space and once without one."""
    families = []
    for prefix in (" ", ""):
        first = {}
        for index, emotion in enumerate(EMOTIONS):
            ids = tokenizer(prefix + emotion, add_special_tokens=False)["input_ids"]
            first.setdefault(ids[0], index)
        families.append(first)
    return families
