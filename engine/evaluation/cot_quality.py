"""Wording checks of chain-of-thought texts, for any predictor that writes one.

* ``interpretation_agreement``: the share of texts whose Conclusion states (``conclusion_label``)
  the emotion the Overall Emotional Interpretation leads with (the first emotion it names,
  synonyms resolved); a text without the three sections, or whose interpretation names no
  emotion, does not agree.
* ``non_word_tokens`` / ``non_word_cots``: the share of tokens that are no word, and the share of
  texts with at least one. Words: the English list ``data/english_words.txt``, the words of the
  CoT and prompt templates, the FACS names, muscles and phrases of ``data/au_definitions.csv``,
  the emotion words of ``data/emotion_lexicon.json`` and ``label_maps.json``, plus FACS codes
  AU01..AU46 (with an intensity letter), the letters A-E and numbers; a word may carry a plural,
  past, participle or adverb ending, a possessive, or join words with hyphens.
* ``annotation_wording``: the share of texts that speak of annotations, labels, datasets or
  ground truth (``engine.cot.verify.META_TERMS``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from engine.aus import au_definitions
from engine.cot.format import CoT, CoTFormatError
from engine.cot.verify import conclusion_label, emotions_in, meta_terms
from engine.data.datasets import label_maps
from engine.resources import data_file, templates_dir
from engine.types import EMOTIONS

#: The word list, one lower-case word a line (``#`` lines are comments).
WORD_LIST = "english_words.txt"
#: Template folders whose words the model may have learnt.
TEMPLATE_FOLDERS = ("cot", "prompts")
#: How many of the most frequent non-words a report lists.
NON_WORD_EXAMPLES = 10
#: The highest FACS action unit number.
MAX_AU = 46

_TOKEN = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_AU_CODE = re.compile(r"AU(\d{1,2})[A-E]?", re.IGNORECASE)
_INTENSITY = re.compile(r"[A-E]")
_JINJA = re.compile(r"\{%.*?%\}|\{\{.*?\}\}|\{#.*?#\}", re.DOTALL)
_LETTERS = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
#: Endings stripped to find a listed stem, with what the stem may have lost ("rais-ing" + "e").
_ENDINGS = (("'s", ""), ("s", ""), ("es", ""), ("ed", ""), ("ed", "e"), ("d", ""),
            ("ing", ""), ("ing", "e"), ("ly", ""), ("ily", "y"), ("ies", "y"), ("ied", "y"),
            ("er", ""), ("est", ""), ("ness", ""))  # fmt: skip


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


def interpretation_lead(text: str) -> str | None:
    """The first emotion the Overall Emotional Interpretation names (None without one)."""
    try:
        found = emotions_in(CoT.parse(text).interpretation)
    except CoTFormatError:
        return None
    return found[0] if found else None


def interpretation_agrees(text: str) -> bool:
    """Whether the Conclusion states the emotion the interpretation leads with."""
    lead = interpretation_lead(text)
    return lead is not None and conclusion_label(text) == lead


def non_words(text: str) -> list[str]:
    """The tokens of ``text`` that are no word, number or FACS code, in order."""
    return [token for token in _TOKEN.findall(text) if not is_word(token)]


def is_word(token: str) -> bool:
    """A listed word (or one with a listed stem, or hyphenated listed words), a number, a FACS
    code AU01..AU46 or an intensity letter A-E."""
    if _NUMBER.fullmatch(token) or _INTENSITY.fullmatch(token):
        return True
    code = _AU_CODE.fullmatch(token)
    if code:
        return 1 <= int(code.group(1)) <= MAX_AU
    lower = token.lower().replace("’", "'")
    return _known(lower) or all(_known(part) for part in re.split(r"[-.]", lower))


def _known(word: str) -> bool:
    words = vocabulary()
    if word in words:
        return True
    return any(
        word.endswith(ending) and word[: -len(ending)] + lost in words
        for ending, lost in _ENDINGS
        if len(word) > len(ending) + 1
    )


@cache
def vocabulary() -> frozenset[str]:
    """Every listed word, lower case (see the module's docstring for the sources)."""
    listed = data_file(WORD_LIST).read_text(encoding="utf-8").splitlines()
    words = {w.strip().lower() for w in listed if w.strip() and not w.startswith("#")}
    for folder in TEMPLATE_FOLDERS:
        for path in sorted((templates_dir() / folder).glob("*.j2")):
            words |= _words(_JINJA.sub(" ", path.read_text(encoding="utf-8")))
    for definition in au_definitions().values():
        words |= _words(f"{definition.name} {definition.muscle} {definition.phrase}")
    lexicon = json.loads(data_file("emotion_lexicon.json").read_text(encoding="utf-8"))
    synonyms = label_maps()["synonyms"]
    for emotion in EMOTIONS:
        words |= _words(" ".join([emotion, *lexicon.get(emotion, ())]))
    words |= {w for w in synonyms if len(w) > 2}  # two-letter label codes are no prose
    return frozenset(words)


def _words(text: str) -> set[str]:
    return set(_LETTERS.findall(text.lower()))
