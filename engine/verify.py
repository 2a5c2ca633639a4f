"""Verify stage: read a CoT back without the image (Des2Exp) and check it against the measurements.

* ``inferred_label``: the emotion a reader takes from the text alone — the emphasised
  (``**bold**``) emotion of the Conclusion, else its first emotion word, else the most-named
  emotion of the whole text (synonyms such as "happy" or "sorrow" count, from
  ``label_maps.json`` and ``emotion_lexicon.json``).
* ``faithfulness``: of the AUs the text mentions (by FACS number or by name), the share that was
  measured above threshold; 1.0 when it mentions none.
* ``misquoted_aus``: AUs whose intensity the text quotes ("AU12 ... (D, 4.0/5)") more than 0.1
  away from the measured ``intensities`` (when given).
* ``missing_aus``: of the AUs a text is ``required`` to name (the engine loop asks an LLM draft
  for those its reference draft names), the ones it leaves out.
* ``verified``: exact format, inferred label = ground truth, faithfulness 1.0, nothing missing,
  nothing misquoted.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from engine.aus import au_definitions
from engine.cot import CoT, CoTFormatError
from engine.resources import data_file
from engine.types import EMOTIONS

_AU_NUMBER = re.compile(r"\bAU\s?(\d{1,2})(?:[A-E]\b|\b)", re.IGNORECASE)
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
#: An AU code and the first "N.N/5" quoted after it in the same clause.
_QUOTE = re.compile(r"\b(AU\d{2})\b[^;.]*?(\d(?:\.\d+)?)\s*/\s*5\b")
#: How far a quoted intensity may be from the measured one (the templates round to 0.1).
QUOTE_TOLERANCE = 0.1


@dataclass(frozen=True)
class Verification:
    """The verdict on one CoT text."""

    format_ok: bool
    inferred_label: str | None
    label_match: bool
    faithfulness: float
    mentioned_aus: tuple[str, ...]
    unmeasured_aus: tuple[str, ...]
    missing_aus: tuple[str, ...]
    misquoted_aus: tuple[str, ...]
    verified: bool
    reason: str  # empty when verified; else what failed


@cache
def _emotion_words() -> tuple[re.Pattern, dict[str, str]]:
    synonyms = json.loads(data_file("label_maps.json").read_text()).get("synonyms", {})
    words = {e: e for e in EMOTIONS}
    # label codes such as "ha" or "an" are no words of prose
    words.update({k.lower(): v for k, v in synonyms.items() if v in EMOTIONS and len(k) > 2})
    lexicon = json.loads(data_file("emotion_lexicon.json").read_text())
    words.update({w.lower(): e for e in EMOTIONS for w in lexicon.get(e, [])})
    alternation = "|".join(sorted(map(re.escape, words), key=len, reverse=True))
    return re.compile(rf"\b({alternation})\b", re.IGNORECASE), words


@cache
def _au_name_pattern() -> tuple[re.Pattern, dict[str, str]]:
    names = {d.name.lower(): code for code, d in au_definitions().items()}
    alternation = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    return re.compile(rf"\b({alternation})\b", re.IGNORECASE), names


def emotions_in(text: str) -> list[str]:
    """Canonical emotions named in ``text``, in order of appearance (synonyms resolved)."""
    pattern, words = _emotion_words()
    return [words[m.group(1).lower()] for m in pattern.finditer(text)]


def infer_label(text: str) -> str | None:
    """Des2Exp: the label a reader infers from a CoT's text alone."""
    try:
        conclusion = CoT.parse(text).conclusion
    except CoTFormatError:
        conclusion = ""
    for bold in _BOLD.findall(conclusion):
        found = emotions_in(bold)
        if found:
            return found[0]
    found = emotions_in(conclusion)
    if found:
        return found[0]
    counts = Counter(emotions_in(text))
    return counts.most_common(1)[0][0] if counts else None


def mentioned_aus(text: str) -> tuple[str, ...]:
    """FACS codes the text refers to, by number (``AU12``) or by name ("lip corner puller")."""
    codes = {f"AU{int(n):02d}" for n in _AU_NUMBER.findall(text)}
    pattern, names = _au_name_pattern()
    codes.update(names[m.group(1).lower()] for m in pattern.finditer(text))
    return tuple(sorted(codes))


def quoted_intensities(text: str) -> dict[str, float]:
    """The intensities a text quotes per AU code (the first quote after each mention)."""
    quotes: dict[str, float] = {}
    for code, value in _QUOTE.findall(text):
        quotes.setdefault(code, float(value))
    return quotes


def verify(
    text: str,
    label: str | None,
    measured: set[str] | frozenset[str],
    required: set[str] | frozenset[str] = frozenset(),
    intensities: Mapping[str, float] | None = None,
) -> Verification:
    """Check a CoT text against the ground truth ``label`` and the AUs ``measured`` (active);
    ``required``: AUs the text must name; ``intensities``: measured values its quotes must
    match. The label is read from the text with ``infer_label``."""
    return judge(text, label, measured, infer_label(text), required, intensities)


def judge(
    text: str,
    label: str | None,
    measured: set[str] | frozenset[str],
    inferred: str | None,
    required: set[str] | frozenset[str] = frozenset(),
    intensities: Mapping[str, float] | None = None,
) -> Verification:
    """``verify`` with the label ``inferred`` by another reader (the engine loop's)."""
    format_ok = CoT.is_exact(text)
    mentioned = mentioned_aus(text)
    unmeasured = tuple(au for au in mentioned if au not in measured)
    faithfulness = 1.0 if not mentioned else 1.0 - len(unmeasured) / len(mentioned)
    missing = tuple(sorted(set(required) - set(mentioned)))
    misquoted = tuple(
        sorted(
            code
            for code, value in quoted_intensities(text).items()
            if intensities is not None
            and code in intensities
            and abs(value - intensities[code]) > QUOTE_TOLERANCE + 1e-9
        )
    )
    label_match = label is not None and inferred == label
    reasons = []
    if not format_ok:
        reasons.append("not in the exact three-header format")
    if label is not None and not label_match:
        reasons.append(f"text reads as {inferred or 'no emotion'}, ground truth is {label}")
    if unmeasured:
        reasons.append("mentions AUs not measured above threshold: " + ", ".join(unmeasured))
    if missing:
        reasons.append("leaves out measured AUs: " + ", ".join(missing))
    if misquoted:
        reasons.append("misquotes the intensity of " + ", ".join(misquoted))
    return Verification(
        format_ok=format_ok,
        inferred_label=inferred,
        label_match=label_match,
        faithfulness=faithfulness,
        mentioned_aus=mentioned,
        unmeasured_aus=unmeasured,
        missing_aus=missing,
        misquoted_aus=misquoted,
        verified=not reasons and (label is None or label_match),
        reason="; ".join(reasons),
    )
