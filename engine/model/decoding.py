"""Guided decoding of the nano ExpLLM: AU grounding and label guidance (greedy).

* **AU grounding** (``DecodingSettings.grounded``): the text may name only the AUs the model
  measured above threshold on the same face (by FACS code or by name), each once in the Key
  Observations, strongest first, with the measured level word, letter and intensity
  (``AU12 (lip corner puller) at pronounced intensity (D, 4.2/5)``), every code written as the
  templates write it and named as itself (``engine.cot.au_references``); and it keeps to the exact
  CoT format (``engine.cot.format.exact_format_prefix``): the three headers in order, single
  spaces, one line per section, no end before the Conclusion, and the Interpretation ends with
  a verdict in bold, within the bounds of ``engine.model.closing`` (a few sentences of
  reasoning, a one-sentence Conclusion).
  An evidence share quoted after an emotion ("anger (31 %)") is the rule tables' share of that
  emotion on the measured AUs (``AUGrounding.evidence``), and an emotion it says the evidence
  favours most ("anger carries the most evidence", ``data/evidence_claims.json``) leads it;
  a cue it names for or against a reading is the rules' (``engine.cot.cue_claims``: "Consistent
  with sadness is AU01 ..." names cues that add evidence for sadness).
  At each step the best token that keeps the text so is taken, among the ``CANDIDATES`` best,
  the tokens that continue a header, code, name, word or quote begun, and then the
  ``FALLBACK_CANDIDATES`` best; where none does, the text ends as written. Every word is a
  known one (``engine.cot.vocabulary``: English, the templates' and the data's words).
* **Stated facts** (``DecodingSettings.stated_facts``): the text may begin with the
  measurements as the CoT templates state them, which the model then reasons from; with a
  **planned reading** (``DecodingSettings.planned_reading``) the emotion is decided first and
  the text written towards it, and with ``planned_conclusion`` its Conclusion is one of the CoT
  templates' Conclusions for that reading (``AUGrounding.conclusions``; the model picks one).
* **Label slots** (``engine.model.labels``): the Interpretation's first emotion (unless the
  Conclusion follows the verdict) and its bold verdict may name only the allowed classes
  (``allowed_labels``, default all), and with **label guidance**
  (``DecodingSettings.label_guidance``, a weight ``w``) the emotion is chosen by the LM's
  log-probability + ``w`` x the encoder classifier's log-probability of that class (a product
  of experts; ``w = 0`` leaves the LM alone). The Conclusion's label (after ``label_cue``:
  "label," or an opening ``**``) names the emotion the Interpretation leads with
  (``conclusion_follows``), else it is chosen so too.

``AUGrounding`` and ``label_slot_at`` work on text only; ``engine.model.guide.TokenGuide``
applies them to the token scores of ``engine.model.greedy.greedy_decode``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property

from engine.cot.au_references import misnamed_aus
from engine.cot.cue_claims import misstated_cues, reading_of
from engine.cot.format import HEADERS, SECTION_OPENINGS, CoT, exact_format_prefix
from engine.cot.rules import EmotionEvidence, RuleBook, ranked_emotions
from engine.cot.verify import (
    META_TERMS,
    QUOTE_TOLERANCE,
    evidence_claims,
    mentioned_aus,
    meta_terms,
    quoted_intensities,
    share_owner,
)
from engine.cot.vocabulary import vocabulary
from engine.model.closing import BOLD_WORD, reasoning_closes
from engine.model.labels import label_slot

__all__ = ["AUGrounding", "label_slot"]

#: How many of the best tokens grounding tries first.
CANDIDATES = 64
#: How many of the best tokens it tries at most before it ends the text where it is.
FALLBACK_CANDIDATES = 2048

_PARTIAL_CODE = re.compile(r"AU(\d?)$")
_CODE = re.compile(r"\bAU\d{2}\b")
#: "AU" that is not a code, and code look-alikes ("U16", "AE10").
_NOT_A_CODE = re.compile(r"\bAU(?!\d{2}\b)|(?i:\bau\b)|\b(?!AU\d)[A-Za-z]+\d")
#: A code glued to more ("AU05B", "AU1_25"), of one digit or spaced ("AU 4"): the templates
#: write none of them.
_GLUED_CODE = re.compile(r"\bAU(?:\d{2}\w|\d(?!\d)|\s+\d)")
#: An intensity word or a parenthesis; in the observations only within the clause of a code.
_INTENSITY_CUE = re.compile(r"(?i)intensit|\(")
_INTERPRETATION = f"**{HEADERS[1]}"
_CONCLUSION_MARK = f"\n\n**{HEADERS[2]}"
_CLAUSE_END = re.compile(r";|\.\s")
#: The word (maybe unfinished) at the end of a text.
LAST_WORD = re.compile(r"[A-Za-z]*$")
#: How far back the annotation check looks (earlier text was checked as it was written).
_META_WINDOW = 40
#: How far back the evidence-claim check looks (longer than any phrase of
#: ``data/evidence_claims.json`` with its emotion).
_CLAIM_WINDOW = 120
#: What a text whose planned reading leads the evidence does not write after its stated facts:
#: contrary or competing cues, evidence against it, or a sentence of its own opening
#: with "The" (as the templates' texts go from such facts straight to a verdict, and the model
#: tends to start the contrary-cue sentence so).
_CONTRARY = re.compile(r"(?i:\b(?:contrary|competing|contradict\w*|against)\b)|(?:^|[.:]) The\b")
#: In the Interpretation of such a text, a bold verdict ends its sentence (the Conclusion's
#: label goes on: "**anger**, the reading ...").
_VERDICT_GOES_ON = re.compile(r"\*\*[a-z]+\*\*[^.]")
#: Where a text whose planned reading goes against the evidence names the competing reading
#: (the evidence's lead): right after its bold verdict.
COMPETING_CUE = re.compile(r"\*\*, with$")
#: "at <level word>" right after an AU's name; ``end`` is set once the word is finished.
_LEVEL_WORD = re.compile(r" at(?P<space> ?)(?P<word>[a-z]*)(?P<end>[^a-z])?")
#: A number in parentheses begun or just closed at the end of a text: "(2", "(23 %", "(23 %), ".
_SHARE_TAIL = re.compile(r"\((?P<digits>\d+)(?P<rest> ?%?\)?)(?P<after>[^(]{0,8})$")


@dataclass(frozen=True)
class AUGrounding:
    """The AUs one face was measured with: which are active, their names, levels and values."""

    intensities: Mapping[str, float]  # active AU -> measured intensity (0-5)
    levels: Mapping[str, str]  # active AU -> FACS letter
    names: Mapping[str, str]  # active AU -> its name ("lid tightener")
    words: Mapping[str, str]  # active AU -> the templates' word for its level ("marked")
    strict_wording: bool = True  # ``DecodingSettings.strict_wording``
    #: emotion -> the rule tables' evidence share (0-1) on the face's AUs; None: not checked
    evidence: Mapping[str, float] | None = None
    #: the planned reading (``DecodingSettings.planned_reading``); None: none
    reading: str | None = None
    #: how many characters of stated facts the text begins with (not the model's own words)
    stated: int = 0
    #: the rule tables' whole reading of the face, which the cue claims of the model's own
    #: words must hold on (``engine.cot.cue_claims``); None: not checked
    rules_reading: EmotionEvidence | None = None
    #: the sentences the Conclusion may be (``DecodingSettings.planned_conclusion``); empty:
    #: any of the model's own, within ``engine.model.closing``'s bounds
    conclusions: tuple[str, ...] = ()

    @classmethod
    def from_intensities(
        cls,
        intensities: Mapping[str, float],
        rules: RuleBook,
        level_words: Mapping[str, str] | None = None,
        strict_wording: bool = True,
        evidence: Mapping[str, float] | None = None,
        reading: str | None = None,
        stated: int = 0,
        rules_reading: EmotionEvidence | None = None,
        conclusions: Sequence[str] = (),
    ) -> AUGrounding:
        """Keep the AUs at or above the ``rules``' activation threshold; ``level_words``: the
        word per FACS letter (default: the CoT templates', ``engine.cot.render.level_words``);
        ``strict_wording``: ``DecodingSettings.strict_wording``; ``evidence``: the rules'
        share per emotion on these AUs (``RuleBook.evaluate``), which quoted shares must be;
        ``reading``: the planned reading; ``stated``: the length of the stated facts;
        ``rules_reading``: the rules' ``EmotionEvidence`` on these AUs; ``conclusions``: the
        sentences the Conclusion may be."""
        if level_words is None:
            level_words = _level_words()
        active = {
            code: float(value)
            for code, value in intensities.items()
            if value >= rules.active_threshold and code in rules.definitions
        }
        return cls(
            active,
            {code: rules.level(value) for code, value in active.items()},
            {code: rules.definitions[code].name for code in active},
            {code: level_words.get(rules.level(value), "") for code, value in active.items()},
            strict_wording,
            evidence,
            reading,
            stated,
            rules_reading,
            tuple(conclusions),
        )

    @cached_property
    def ranked(self) -> list[str]:
        """The active AUs, strongest first (the templates' order; a tie by code)."""
        return sorted(self.intensities, key=lambda code: (-self.intensities[code], code))

    def allows(self, text: str) -> bool:
        """Whether ``text`` (an unfinished CoT) can still become an exact CoT that keeps to the
        measurements. It names active AUs only, each once in the Key Observations, strongest
        first. There, every
        "AU" is a code (a code begun, ``AU0``, must be able to become one), every intensity and
        parenthesis is in the clause of a code, and once all active AUs are listed the last
        clause takes no ";". A code's first parenthesis holds its name or its quote, the one
        after the name its quote (``(C, 2.6/5)``), and "(name) at <word>" the level's word."""
        return self._check(text)[0]

    def continuations(self, text: str) -> list[str]:
        """Strings that would keep an unfinished header, code or parenthesis at the end of
        ``text`` grounded (empty where ``text`` is not in the middle of one)."""
        return self._check(text)[1]

    def may_end(self, text: str) -> bool:
        """Whether the CoT may end after ``text``: it is exact, its last sentence is ended
        (not a word or code cut off at a length bound) and it keeps to the measurements."""
        return text.endswith(".") and CoT.is_exact(text) and self.allows(text)

    def ending(self, text: str) -> str | None:
        """The rest of ``text`` where only one way to finish it remains: a planned Conclusion
        begun that only one of ``conclusions`` begins, the whole then complete (``may_end``);
        else None."""
        rests = self._conclusion_rests(text) if self.conclusions else None
        if not rests or len(rests) != 1 or not rests[0]:
            return None
        return rests[0] if self.may_end(text + rests[0]) else None

    def _check(self, text: str) -> tuple[bool, list[str]]:
        in_format, header_rest = exact_format_prefix(text)
        if not in_format or not vocabulary().allows(text):
            return False, []
        if self.strict_wording and (not text.isascii() or _speaks_of_annotations(text)):
            return False, []
        closes, closing = reasoning_closes(text, self.stated, self.reading is not None)
        if not closes or _verdict_missing(text):
            return False, []
        ok, rests = self._check_aus(text)
        if ok and self.evidence is not None:
            ok, shares = self._check_shares(text)
            rests += shares
            ok = ok and self._claims_hold(text)
        if ok and self.rules_reading is not None:
            ok = self._cues_hold(text)
            code = _PARTIAL_CODE.search(text)
            if ok and code and code[1]:  # a code begun: only codes its claim allows
                rests = [rest for rest in rests if self._cues_hold(text + rest)]
                ok = bool(rests)
        if ok and self.conclusions:
            ok, planned = self._planned_conclusion(text)
            rests += planned
        return ok, (header_rest + closing + rests if ok else [])

    def _cues_hold(self, text: str) -> bool:
        """Whether the cue claims of the model's own words in ``text`` hold on the rules."""
        return not misstated_cues(
            text, self.rules_reading, self.reading, partial=True, start=self.stated
        )

    def _planned_conclusion(self, text: str) -> tuple[bool, list[str]]:
        """Whether the Conclusion begun in ``text`` (if any) begins one of ``conclusions``,
        and the rest of each it begins."""
        rests = self._conclusion_rests(text)
        if rests is None:
            return True, []
        return bool(rests), [rest for rest in rests if rest]

    def _conclusion_rests(self, text: str) -> list[str] | None:
        """The rest of each of ``conclusions`` that the Conclusion begun in ``text`` begins
        (empty where it was written in full); None where no Conclusion is begun."""
        start = text.find(SECTION_OPENINGS[2])
        if start < 0:
            return None
        written = text[start + len(SECTION_OPENINGS[2]) :]
        return [c[len(written) :] for c in self.conclusions if c.startswith(written)]

    def _check_shares(self, text: str) -> tuple[bool, list[str]]:
        """The share quoted after an emotion at the end of ``text`` ("anger (3", "anger (31 %)")
        is (or can still become) the measured one, and the rest of it; earlier quotes were
        checked as they were written."""
        tail = _SHARE_TAIL.search(text)
        owner = share_owner(text[: tail.start()]) if tail else None
        if owner is None:
            return True, []
        quote = f"{100 * self.evidence.get(owner, 0.0):.0f} %)"
        written = tail["digits"] + tail["rest"]
        if not quote.startswith(written) or (tail["after"] and written != quote):
            return False, []
        return True, ([quote[len(written) :]] if written != quote else [])

    def _claims_hold(self, text: str) -> bool:
        """Whether an emotion the end of ``text`` says the evidence favours most
        (``evidence_claims``) is the one that leads the measured evidence; earlier claims were
        checked as they were written."""
        tail = text[-_CLAIM_WINDOW:]
        own = text[self.stated :][-_CLAIM_WINDOW:]
        if self.reading == self.lead and (
            _CONTRARY.search(own) or (_CONCLUSION_MARK not in text and _VERDICT_GOES_ON.search(own))
        ):
            return False  # the reading leads the evidence: nothing speaks against it
        if COMPETING_CUE.search(text) and reading_of(text) == self.lead:
            return False  # the evidence's lead is the verdict: no competing reading to name
        claimed = evidence_claims(tail)
        return not claimed or set(claimed) == {self.lead}

    @cached_property
    def lead(self) -> str | None:
        """The emotion the measured evidence favours most (None: evidence not known)."""
        return ranked_emotions(self.evidence)[0] if self.evidence is not None else None

    def _check_aus(self, text: str) -> tuple[bool, list[str]]:
        partial = _PARTIAL_CODE.search(text)
        finished = text[: partial.start()] if partial else text
        if any(code not in self.intensities for code in mentioned_aus(finished)):
            return False, []
        if _GLUED_CODE.search(finished) or misnamed_aus(finished):
            return False, []
        observations = finished.split(_INTERPRETATION, 1)[0]
        codes = list(_CODE.finditer(observations))
        observed = [code[0] for code in codes]
        if observed != self.ranked[: len(observed)] or _NOT_A_CODE.search(observations):
            return False, []  # each once, strongest first
        if not _cues_in_code_clauses(observations, codes):
            return False, []
        complete = observed and set(observed) == set(self.intensities)
        if complete and _INTERPRETATION not in text and ";" in observations[codes[-1].end() :]:
            return False, []  # every active AU is listed: no "; <next AU>"
        for code, value in quoted_intensities(text).items():
            if abs(value - self.intensities[code]) > QUOTE_TOLERANCE + 1e-9:
                return False, []
        if partial:
            fresh = (
                self.intensities if _INTERPRETATION in text else self.ranked[len(observed) :][:1]
            )
            rests = [c[len(partial[0]) :] for c in fresh if c.startswith(partial[0])]
            # past the observations, "AU" may go on as "AU evidence"
            return bool(rests) or (not partial[1] and _INTERPRETATION in text), rests
        return self._parentheses(finished)

    def _parentheses(self, text: str) -> tuple[bool, list[str]]:
        codes = list(_CODE.finditer(text))
        rests: list[str] = []
        for index, match in enumerate(codes):
            stop = codes[index + 1].start() if index + 1 < len(codes) else len(text)
            ok, rests = self._clause(match[0], text[match.end() : stop])
            if not ok:
                return False, []
        return True, rests

    def _clause(self, code: str, tail: str) -> tuple[bool, list[str]]:
        """Check what follows ``code`` in its clause ``tail``: its parentheses, and the level
        word of "(name) at <word> intensity"."""
        name = f"{self.names[code]})"
        quote = f"{self.levels[code]}, {self.intensities[code]:.1f}/5)"
        expected = [name, quote]
        position = 0
        for opening in re.finditer(r"\(", tail):
            if opening.start() < position:
                continue
            between = tail[position : opening.start()]
            if not expected or _CLAUSE_END.search(between) or "," in between:
                return True, []  # past the code's own parentheses
            inside = tail[opening.end() :]
            close = inside.find(")")
            inside = inside[: close + 1] if close >= 0 else inside
            options = [option for option in expected if option.startswith(inside)]
            if not options:
                return False, []
            if close < 0:
                return True, [option[len(inside) :] for option in options]
            position = opening.end() + close + 1
            if inside == name:
                expected = [quote]
                ok, rests = self._level_word(code, tail[position:])
                if not ok or rests:
                    return ok, rests
            else:
                expected = []
        return True, []

    def _level_word(self, code: str, after_name: str) -> tuple[bool, list[str]]:
        word = _LEVEL_WORD.match(after_name)
        wanted = self.words.get(code)
        if word is None or not wanted:
            return True, []
        if word["word"] and not word["space"]:  # "atmarked"
            return False, []
        if word["end"]:
            return word["word"] == wanted, []
        return wanted.startswith(word["word"]), [wanted[len(word["word"]) :]]


def _cues_in_code_clauses(text: str, codes: Sequence[re.Match]) -> bool:
    """Whether every intensity word and parenthesis in ``text`` follows one of its AU ``codes``
    within the same clause."""
    for cue in _INTENSITY_CUE.finditer(text):
        before = [code for code in codes if code.end() <= cue.start()]
        if not before or _CLAUSE_END.search(text, before[-1].end(), cue.start()):
            return False
    return True


def _verdict_missing(text: str) -> bool:
    """Whether ``text`` closes its Interpretation without a verdict in bold (``**anger**``,
    what Des2Exp and the Conclusion's label read)."""
    body = text.partition(_INTERPRETATION)[2]
    return "\n" in body and BOLD_WORD.search(body.partition("\n")[0]) is None


def _speaks_of_annotations(text: str) -> bool:
    """Whether ``text`` speaks of annotations, labels or datasets (``META_TERMS``), a word of
    them begun at its end included."""
    if meta_terms(text[-_META_WINDOW:]):
        return True
    last = LAST_WORD.search(text)[0].lower()
    return len(last) >= 4 and any(term.startswith(last) for term in META_TERMS if " " not in term)


@cache
def _level_words() -> dict[str, str]:
    from engine.cot.render import level_words

    return level_words()
