"""Wording checks of chain-of-thought texts, for any predictor that writes one.

* ``interpretation_agreement``: the share of texts whose Conclusion states (``conclusion_label``)
  the emotion the Overall Emotional Interpretation arrives at (its verdict, what Des2Exp reads:
  ``engine.cot.verify.infer_label``); a text without the three sections, or whose
  interpretation names no emotion, does not agree. An interpretation may weigh evidence for
  another emotion before its verdict.
* ``first_emotion_agreement``: the same against the first emotion the interpretation names
  (synonyms resolved), which a text that starts from contrary evidence does not follow.
* ``non_word_tokens`` / ``non_word_cots``: the share of tokens that are no word, and the share of
  texts with at least one (``engine.cot.vocabulary``'s ``is_word``, which grounded decoding
  uses too: English, the templates' and the data's words with their endings, FACS codes
  AU01..AU46 and prototype tokens, the letters A-E and numbers).
* ``annotation_wording``: the share of texts that speak of annotations, labels, datasets or
  ground truth (``engine.cot.verify.META_TERMS``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.cot.verify import (
    conclusion_label,
    description_of,
    infer_label,
    interpretation_lead,
    meta_terms,
)
from engine.cot.vocabulary import TOKEN, vocabulary

#: How many of the most frequent non-words a report lists.
NON_WORD_EXAMPLES = 10


@dataclass(frozen=True)
class Wording:
    """The wording checks over a set of CoT texts (shares in [0, 1])."""

    interpretation_agreement: float
    first_emotion_agreement: float
    non_word_tokens: float
    non_word_cots: float
    annotation_wording: float
    non_words: tuple[str, ...]  # the most frequent non-words, most frequent first


def wording(texts: Sequence[str]) -> Wording:
    """The wording checks of ``texts`` (at least one)."""
    if not texts:
        raise ValueError("no CoT texts to check")
    found = [non_words(t) for t in texts]
    tokens = sum(len(TOKEN.findall(t)) for t in texts)
    counts = Counter(w.lower() for words in found for w in words)
    return Wording(
        interpretation_agreement=float(np.mean([interpretation_agrees(t) for t in texts])),
        first_emotion_agreement=float(
            np.mean([_agrees(interpretation_lead(t), conclusion_label(t)) for t in texts])
        ),
        non_word_tokens=sum(map(len, found)) / tokens if tokens else 0.0,
        non_word_cots=float(np.mean([bool(words) for words in found])),
        annotation_wording=float(np.mean([bool(meta_terms(t)) for t in texts])),
        non_words=tuple(w for w, _ in counts.most_common(NON_WORD_EXAMPLES)),
    )


def interpretation_agrees(text: str) -> bool:
    """Whether the Conclusion states the emotion the interpretation arrives at (its verdict)."""
    if interpretation_lead(text) is None:  # no interpretation, or one naming no emotion
        return False
    return _agrees(infer_label(description_of(text)), conclusion_label(text))


def _agrees(lead: str | None, conclusion: str | None) -> bool:
    return lead is not None and conclusion == lead


def non_words(text: str) -> list[str]:
    """The tokens of ``text`` that are no word, number or FACS code, in order."""
    words = vocabulary()
    return [token for token in TOKEN.findall(text) if not words.is_word(token)]
