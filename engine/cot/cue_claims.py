"""Cue claims: what a CoT says a measured cue does for or against reading the face as an
emotion ("Consistent with sadness is AU01 ...", "The strongest contrary cue is AU05 ...", "the
surprise prototype 1+2+5B+26"), held to the rule tables' reading of the face
(``engine.cot.rules.EmotionEvidence`` through ``engine.cot.support``). The phrases are data
(``data/cue_claims.json``); ``misstated_cues`` lists the claims a text gets wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from engine.cot.format import HEADER_MARKS
from engine.cot.rules import EmotionEvidence
from engine.cot.support import Support, support
from engine.resources import data_file
from engine.types import EMOTIONS

_CODE = re.compile(r"\bAU\d\d\b")
_EMOTION = f"({'|'.join(EMOTIONS)})"
_RATHER_THAN = re.compile(rf"reads as \*\*[a-z]+\*\* rather than {_EMOTION}\b")
_BOLD_EMOTION = re.compile(rf"\*\*{_EMOTION}\b")


@dataclass(frozen=True)
class _Phrases:
    consistent: tuple[re.Pattern, ...]
    #: each consistent phrase's words up to its emotion ("Consistent with sadness")
    consistent_openings: tuple[re.Pattern, ...]
    contrary: tuple[re.Pattern, ...]
    same_movement: tuple[re.Pattern, ...]
    quiet: dict[str, str]  # Support property -> the phrase that needs it
    prototype: tuple[re.Pattern, ...]


@cache
def _phrases() -> _Phrases:
    raw = json.loads(data_file("cue_claims.json").read_text())
    emotion = f"(?P<emotion>{'|'.join(EMOTIONS)})"

    def compiled(kind: str) -> tuple[re.Pattern, ...]:
        return tuple(re.compile(p.replace("{emotion}", emotion)) for p in raw[kind])

    openings = [p[: p.index("{emotion}")] + emotion + r"\b" for p in raw["consistent"]]
    return _Phrases(
        compiled("consistent"),
        tuple(map(re.compile, openings)),
        compiled("contrary"),
        compiled("same_movement"),
        dict(raw["quiet"]),
        compiled("prototype"),
    )


def reading_of(text: str) -> str | None:
    """The emotion a CoT reasons towards: the one its verdict sets the measured reading against
    ("reads as **fear** rather than surprise"), else the last emotion its Interpretation
    names in bold, the closing marks maybe still to come (None before one)."""
    against = _RATHER_THAN.search(text)
    if against:
        return against[1]
    interpretation = text.partition(HEADER_MARKS[1].rstrip())[2].partition("\n")[0]
    bold = _BOLD_EMOTION.findall(interpretation)
    return bold[-1] if bold else None


def misstated_cues(
    text: str,
    evidence: EmotionEvidence,
    reading: str | None = None,
    partial: bool = False,
    start: int = 0,
) -> tuple[str, ...]:
    """The cue claims of ``text`` from ``start`` on that the rule tables' reading of the face
    (``evidence``) does not bear out, as short reasons; empty when all hold. ``reading``: the
    emotion the text reasons towards (default: ``reading_of(text)``; a contrary cue in a text
    with none need only be some reading's); ``partial``: ``text`` is unfinished, so a prototype
    at its end need only begin a matched one, and a consistent claim begun ("Consistent with
    sadness") must name an emotion some measured cue is consistent with."""
    phrases = _phrases()

    def found(patterns: tuple[re.Pattern, ...], since: int = start) -> list[re.Match]:
        return [m for p in patterns for m in p.finditer(text, since)]

    contrary, consistent = found(phrases.contrary), found(phrases.consistent)
    same, prototypes = found(phrases.same_movement), found(phrases.prototype)
    openings = found(phrases.consistent_openings) if partial else []
    quiet = [prop for prop, phrase in phrases.quiet.items() if text.find(phrase, start) >= 0]
    if not (quiet or contrary or consistent or same or prototypes or openings):
        return ()
    reading = reading or reading_of(text)
    supports = cache(lambda emotion: support(evidence, emotion))  # only as claims need them
    wrong = [
        f"'{phrases.quiet[p]}' does not hold of the face"
        for p in quiet
        if not getattr(supports("neutral"), p)
    ]
    for match in contrary:
        wrong += _contrary(supports, match["code"], reading)
    for match in consistent:
        wrong += _consistent(supports(match["emotion"]), _CODE.findall(match["cues"]))
    for match in openings:
        if not _consistent_cues(supports(match["emotion"])):
            wrong.append(f"no measured cue is consistent with {match['emotion']}")
    stated = {m["code"] for m in found(phrases.contrary, 0)} if same else set()
    for match in same:
        if not (stated and stated <= {a.au for a in supports(match["emotion"]).consistent}):
            wrong.append(f"no contrary cue stated adds evidence for {match['emotion']}")
    matched = {(m.emotion, m.aus) for m in evidence.prototypes}
    for match in prototypes:
        emotion, aus = match["emotion"], match["aus"]
        at_end = partial and match.end() == len(text)
        if not any(
            e == emotion and (a.startswith(aus) if at_end else a == aus) for e, a in matched
        ):
            wrong.append(f"the {emotion} prototype {aus} is not matched")
    return tuple(wrong)


def _contrary(supports: Callable[[str], Support], code: str, reading: str | None) -> list[str]:
    """Why ``code``, stated as the strongest contrary cue, is not (for ``reading``, else for
    any reading); ``supports``: an emotion's ``Support``."""
    if reading is None:
        if any((s := supports(e)).contrary and s.contrary.au == code for e in EMOTIONS):
            return []
        return [f"{code} is no reading's strongest contrary cue"]
    expected = supports(reading).contrary
    return (
        []
        if expected and expected.au == code
        else [f"{code} is not the strongest cue against {reading}"]
    )


def _consistent_cues(target: Support) -> set[str]:
    """The measured AUs a text may call consistent with ``target.emotion``: those adding
    evidence for it, its strongest contrary cue excepted."""
    against = target.contrary.au if target.contrary else None
    return {a.au for a in target.consistent} - {against}


def _consistent(target: Support, codes: list[str]) -> list[str]:
    """Reasons why the ``codes`` a text names as consistent with ``target.emotion`` are not."""
    allowed = _consistent_cues(target)
    return [
        f"{code} is not consistent with {target.emotion}" for code in codes if code not in allowed
    ]
