"""Wording checks of chain-of-thought texts, for any predictor that writes one.

* ``interpretation_agreement``: the share of texts whose Conclusion states (``conclusion_label``)
  the emotion the Overall Emotional Interpretation leads with (the first emotion it names,
  synonyms resolved); a text without the three sections, or whose interpretation names no
  emotion, does not agree.
* ``non_word_tokens`` / ``non_word_cots``: the share of tokens that are no word, and the share of
  texts with at least one. Words: those of ``engine.cot.vocabulary`` (the vocabulary grounded
  decoding uses too: English, the templates' and the data's words, with their endings), plus
  FACS codes AU01..AU46 and prototype tokens (``5B``, ``R12A``: an AU number, its side, an
  intensity letter), the letters A-E and numbers; a word may carry a possessive, or join words
  with hyphens.
* ``annotation_wording``: the share of texts that speak of annotations, labels, datasets or
  ground truth (``engine.cot.verify.META_TERMS``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.cot.verify import conclusion_label, interpretation_lead, meta_terms
from engine.cot.vocabulary import vocabulary

#: How many of the most frequent non-words a report lists.
NON_WORD_EXAMPLES = 10
#: The highest FACS action unit number.
MAX_AU = 46

_TOKEN = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
#: A FACS code: ``AU12``, ``AU12E``, or a prototype token (``5B``, ``R12A``: side, AU, level).
_AU_CODE = re.compile(r"(?:AU|[LR])?(\d{1,2})[A-E]?", re.IGNORECASE)
_INTENSITY = re.compile(r"[A-E]")


@dataclass(frozen=True)
class Wording:
    """The wording checks over a set of CoT texts (shares in [0, 1])."""

    interpretation_agreement: float
    non_word_tokens: float
    non_word_cots: float
    annotation_wording: float
    non_words: tuple[str, ...]  # the most frequent non-words, most frequent first


def wording(texts: Sequence[str]) -> Wording:
    """The wording checks of ``texts`` (at least one)."""
    if not texts:
        raise ValueError("no CoT texts to check")
    found = [non_words(t) for t in texts]
    tokens = sum(len(_TOKEN.findall(t)) for t in texts)
    counts = Counter(w.lower() for words in found for w in words)
    return Wording(
        interpretation_agreement=float(np.mean([interpretation_agrees(t) for t in texts])),
        non_word_tokens=sum(map(len, found)) / tokens if tokens else 0.0,
        non_word_cots=float(np.mean([bool(words) for words in found])),
        annotation_wording=float(np.mean([bool(meta_terms(t)) for t in texts])),
        non_words=tuple(w for w, _ in counts.most_common(NON_WORD_EXAMPLES)),
    )


def interpretation_agrees(text: str) -> bool:
    """Whether the Conclusion states the emotion the interpretation leads with."""
    lead = interpretation_lead(text)
    return lead is not None and conclusion_label(text) == lead


def non_words(text: str) -> list[str]:
    """The tokens of ``text`` that are no word, number or FACS code, in order."""
    return [token for token in _TOKEN.findall(text) if not is_word(token)]


def is_word(token: str) -> bool:
    """A known word (or hyphenated known words), a number, a FACS code AU01..AU46 or prototype
    token, or an intensity letter A-E."""
    if _NUMBER.fullmatch(token) or _INTENSITY.fullmatch(token):
        return True
    code = _AU_CODE.fullmatch(token)
    if code:
        return 1 <= int(code.group(1)) <= MAX_AU
    lower = token.lower().replace("’", "'")
    return _known(lower) or all(_known(part) for part in re.split(r"[-.]", lower))


def _known(word: str) -> bool:
    """A word of ``engine.cot.vocabulary`` (its endings included), or one with a possessive."""
    words = vocabulary()
    return word in words or (word.endswith("'s") and word[:-2] in words)
