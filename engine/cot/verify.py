"""Verify stage: read a CoT back without the image (Des2Exp) and check it against the measurements.

* ``infer_label``: Des2Exp, the emotion a reader takes from the *description* alone — Key
  Observations and Overall Emotional Interpretation, with the Conclusion removed
  (``description_of``): the emphasised (``**bold**``) emotion of the interpretation (the
  verdict the templates write), else the emotion the description names most, the
  interpretation's mentions counting twice (synonyms such as "happy" or "sorrow" count, from
  ``label_maps.json`` and ``emotion_lexicon.json``). On the ExpLLM paper's released RAF-DB
  CoTs this reads 86.5 % of the labels from the description alone (95.4 % from the Conclusion).
* ``conclusion_label``: the answer a text states — the bold emotion of the Conclusion, else its
  first emotion word, else the most-named emotion of the whole text. That is how a model's
  prediction is read from the CoT it generates
  (``engine.evaluation.scoring``, ``engine.model.training``).
* ``faithfulness``: of the AUs the text mentions (by FACS number or by name), the share that was
  measured above threshold; 1.0 when it mentions none. References that are wrong as written
  (``misnamed_aus``: "AU1_25", "AU05 (upper lip raiser)"; ``engine.cot.au_references``)
  count as unfaithful ones.
* ``complete`` (``completeness``): the Key Observations cite every AU measured at or above the
  active threshold, strongest first, up to the cap of ``data/rules.json``
  (``max_cited_aus``); a description that leaves out contrary evidence is not complete.
* ``misquoted_aus``: AUs whose intensity the text quotes ("AU12 ... (D, 4.0/5)") more than 0.1
  away from the measured ``intensities`` (when given).
* ``misstated_evidence``: emotions whose evidence share the text quotes ("anger (31 %)") more
  than half a point away from the rule tables' ``evidence`` on the measured AUs (when given),
  or that it says the evidence favours most ("anger carries the most evidence", the phrases of
  ``data/evidence_claims.json``) when the tables' leading emotion is another: a text may not
  invent the weight of its reasons. ``misstated_cues``: its cue claims ("Consistent with
  sadness is AU01 ...", the strongest contrary cue, a prototype named) that the rule tables'
  whole reading of the face (``rules_reading``, when given) does not bear out
  (``engine.cot.cue_claims``).
* ``missing_aus``: of the AUs a text is ``required`` to name (the engine loop asks an LLM draft
  for those its reference draft names), the ones it leaves out.
* ``meta_terms``: words that speak of annotations, labels, datasets or ground truth instead of
  the face (``META_TERMS``); a CoT must read as reasoning from the face.
* ``verified``: exact format, the description alone reads as the expected label, faithfulness
  1.0, nothing missing, no intensity misquoted, no evidence or cue misstated, no meta terms.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

from engine.cot.au_references import au_name_pattern, misnamed_aus
from engine.cot.cue_claims import misstated_cues
from engine.cot.format import _HEADER, CoT, CoTFormatError
from engine.cot.rules import EmotionEvidence, ranked_emotions
from engine.resources import data_file
from engine.types import EMOTIONS

_AU_NUMBER = re.compile(r"\bAU\s?(\d{1,2})(?:[A-E]\b|\b)", re.IGNORECASE)
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
#: An AU code and the first "N.N/5" quoted after it in the same clause.
_QUOTE = re.compile(r"\b(AU\d{2})\b[^;.]*?(\d(?:\.\d+)?)\s*/\s*5\b")
#: How far a quoted intensity may be from the measured one (the templates round to 0.1).
QUOTE_TOLERANCE = 0.1
#: A quoted evidence share: "(31 %)"; it belongs to the last emotion named before it in its
#: sentence ("anger carries the most evidence (31 %)").
_SHARE = re.compile(r"\((\d{1,3}(?:\.\d+)?)\s?%\)")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
#: How far a quoted evidence share (percent) may be from the rule tables' (they round to 1).
SHARE_TOLERANCE = 0.5
#: Substrings (case-insensitive) no CoT may contain: it reasons from the face, not from how the
#: image was annotated.
META_TERMS = ("annotat", "label", "ground truth", "dataset")
_META = re.compile("|".join(map(re.escape, META_TERMS)), re.IGNORECASE)


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
    complete: bool | None = None  # None when the active AUs were not given
    uncited_aus: tuple[str, ...] = ()
    meta_terms: tuple[str, ...] = ()
    misstated_evidence: tuple[str, ...] = ()
    misstated_cues: tuple[str, ...] = ()
    misnamed_aus: tuple[str, ...] = ()


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


def emotions_in(text: str) -> list[str]:
    """Canonical emotions named in ``text``, in order of appearance (synonyms resolved)."""
    pattern, words = _emotion_words()
    return [words[m.group(1).lower()] for m in pattern.finditer(text)]


def _sections(text: str) -> dict[str, str]:
    """The bodies of the CoT headers found in ``text`` (``observations``, ``interpretation``,
    ``conclusion``), for exact, variant and partial texts; ``{}`` when it has no header."""
    return dict(_parsed_sections(text))


@lru_cache(maxsize=256)  # one text is read several times while it is judged
def _parsed_sections(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(_read_sections(text).items())


def _read_sections(text: str) -> dict[str, str]:
    try:
        cot = CoT.parse(text)
        return dict(
            zip(("observations", "interpretation", "conclusion"), cot.sections, strict=True)
        )
    except CoTFormatError:
        pass
    found = list(_HEADER.finditer(text))
    keys = {"key observations": "observations", "conclusion": "conclusion"}
    out: dict[str, str] = {}
    for index, match in enumerate(found):
        end = found[index + 1].start() if index + 1 < len(found) else len(text)
        key = keys.get(match["name"].lower(), "interpretation")
        out.setdefault(key, text[match.end() : end].strip())
    return out


def interpretation_lead(text: str) -> str | None:
    """The emotion the Overall Emotional Interpretation leads with: the first it names (None
    without that section or without an emotion in it)."""
    named = emotions_in(_sections(text).get("interpretation", ""))
    return named[0] if named else None


def description_of(text: str) -> str:
    """What Des2Exp reads: Key Observations and Overall Emotional Interpretation, without the
    Conclusion (for a text without headers, the text before any "Conclusion" header)."""
    parts = _sections(text)
    if not parts:
        return text.strip()
    return "\n\n".join(
        f"**{header}:** {parts[key]}"
        for header, key in (
            ("Key Observations", "observations"),
            ("Overall Emotional Interpretation", "interpretation"),
        )
        if parts.get(key)
    )


def infer_label(text: str) -> str | None:
    """Des2Exp: the label a reader infers from a CoT's description alone (no Conclusion): the
    last emphasised emotion of the interpretation, else the emotion the description names most
    (the interpretation's mentions count twice; a tie goes to the one named first)."""
    parts = _sections(text)
    if not parts:
        return _most_named(text)
    interpretation = parts.get("interpretation", "")
    for bold in reversed(_BOLD.findall(interpretation)):
        found = emotions_in(bold)
        if found:
            return found[-1]
    counts = Counter(emotions_in(parts.get("observations", "")))
    for emotion in emotions_in(interpretation):
        counts[emotion] += 2
    return counts.most_common(1)[0][0] if counts else None


def conclusion_label(text: str) -> str | None:
    """The answer a CoT states: the bold emotion of its Conclusion, else the Conclusion's first
    emotion word, else the most-named emotion of the whole text."""
    conclusion = _sections(text).get("conclusion", "")
    for bold in _BOLD.findall(conclusion):
        found = emotions_in(bold)
        if found:
            return found[0]
    found = emotions_in(conclusion)
    if found:
        return found[0]
    return _most_named(text)


def _most_named(text: str) -> str | None:
    counts = Counter(emotions_in(text))
    return counts.most_common(1)[0][0] if counts else None


def mentioned_aus(text: str) -> tuple[str, ...]:
    """FACS codes the text refers to, by number (``AU12``) or by name ("lip corner puller")."""
    return tuple(sorted(_first_mentions(text)))


def _first_mentions(text: str) -> dict[str, int]:
    """Each FACS code the text refers to and the position of its first mention."""
    first: dict[str, int] = {}
    for match in _AU_NUMBER.finditer(text):
        first.setdefault(f"AU{int(match.group(1)):02d}", match.start())
    pattern, names = au_name_pattern()
    for match in pattern.finditer(text):
        code = names[match.group(1).lower()]
        first[code] = min(first.get(code, match.start()), match.start())
    return first


def quoted_intensities(text: str) -> dict[str, float]:
    """The intensities a text quotes per AU code (the first quote after each mention)."""
    quotes: dict[str, float] = {}
    for code, value in _QUOTE.findall(text):
        quotes.setdefault(code, float(value))
    return quotes


def quoted_evidence(text: str) -> dict[str, float]:
    """The evidence share (percent) a text quotes per emotion: each "(NN %)" with the last
    emotion named before it in its sentence, since the previous quote (the first quote of each
    emotion)."""
    quotes: dict[str, float] = {}
    start = 0
    for match in _SHARE.finditer(text):
        owner = share_owner(text[start : match.start()])
        if owner is not None:
            quotes.setdefault(owner, float(match[1]))
        start = match.end()
    return quotes


def share_owner(before: str) -> str | None:
    """The emotion a share quoted after ``before`` belongs to: the last one named in its last
    sentence (None if it names none)."""
    ends = list(_SENTENCE_END.finditer(before))
    named = emotions_in(before[ends[-1].end() :] if ends else before)
    return named[-1] if named else None


def evidence_claims(text: str) -> list[str]:
    """The emotions ``text`` says the measured evidence favours most (``data/
    evidence_claims.json``), in order."""
    found = [(m.start(), m[1].lower()) for p in _claim_patterns() for m in p.finditer(text)]
    return [emotion for _, emotion in sorted(found)]


@cache
def _claim_patterns() -> tuple[re.Pattern, ...]:
    phrases = json.loads(data_file("evidence_claims.json").read_text())["patterns"]
    emotion = f"({'|'.join(EMOTIONS)})"
    return tuple(re.compile(p.replace("{emotion}", emotion), re.IGNORECASE) for p in phrases)


def misstated_evidence(text: str, evidence: Mapping[str, float]) -> tuple[str, ...]:
    """The emotions whose quoted evidence share is more than ``SHARE_TOLERANCE`` points away
    from ``evidence`` (share per emotion, 0-1), or which ``text`` says the evidence favours
    most when another leads it; sorted."""
    lead = ranked_emotions(evidence)[0]
    wrong = {
        emotion
        for emotion, value in quoted_evidence(text).items()
        if abs(value - 100 * evidence.get(emotion, 0.0)) > SHARE_TOLERANCE + 1e-9
    }
    wrong.update(emotion for emotion in evidence_claims(text) if emotion != lead)
    return tuple(sorted(wrong))


def meta_terms(text: str) -> tuple[str, ...]:
    """The ``META_TERMS`` a text uses (talk of annotations, labels, datasets, ground truth)."""
    return tuple(sorted({m.group(0).lower() for m in _META.finditer(text)}))


def completeness(
    text: str, active: Sequence[tuple[str, float]], cap: int | None = None
) -> tuple[bool, tuple[str, ...]]:
    """Whether the Key Observations cite the ``active`` AUs (code, intensity) — all of them, or
    the ``cap`` strongest — strongest first; and the ones they leave out."""
    ranked = sorted(active, key=lambda item: (-item[1], item[0]))
    expected = ranked[:cap] if cap is not None else ranked
    observations = _sections(text).get("observations") or description_of(text)
    first = _first_mentions(observations)
    uncited = tuple(code for code, _ in expected if code not in first)
    if uncited:
        return False, uncited
    order = sorted(expected, key=lambda item: first[item[0]])
    values = [value for _, value in order]
    return all(a >= b - 1e-9 for a, b in zip(values, values[1:], strict=False)), ()


def verify(
    text: str,
    label: str | None,
    measured: set[str] | frozenset[str],
    required: set[str] | frozenset[str] = frozenset(),
    intensities: Mapping[str, float] | None = None,
    active: Sequence[tuple[str, float]] | None = None,
    cap: int | None = None,
    evidence: Mapping[str, float] | None = None,
    rules_reading: EmotionEvidence | None = None,
) -> Verification:
    """Check a CoT text against the expected ``label`` and the AUs ``measured`` (active);
    ``required``: AUs the text must name; ``intensities``: measured values its quotes must
    match; ``active``: the active AUs with their intensities, for ``complete`` (the ``cap``
    strongest); ``evidence``: the rule tables' share per emotion on those AUs, which its quoted
    shares must match; ``rules_reading``: the tables' whole reading, which its cue claims must
    match. The label is read from the description with ``infer_label``."""
    inferred = infer_label(text)
    return judge(
        text, label, measured, inferred, required, intensities, active, cap, evidence, rules_reading
    )


def judge(
    text: str,
    label: str | None,
    measured: set[str] | frozenset[str],
    inferred: str | None,
    required: set[str] | frozenset[str] = frozenset(),
    intensities: Mapping[str, float] | None = None,
    active: Sequence[tuple[str, float]] | None = None,
    cap: int | None = None,
    evidence: Mapping[str, float] | None = None,
    rules_reading: EmotionEvidence | None = None,
) -> Verification:
    """``verify`` with the label ``inferred`` by another reader (the engine loop's)."""
    format_ok = CoT.is_exact(text)
    mentioned = mentioned_aus(text)
    unmeasured = tuple(au for au in mentioned if au not in measured)
    misnamed = misnamed_aus(text)
    references = len(mentioned) + len(misnamed)
    faithfulness = 1.0 - (len(unmeasured) + len(misnamed)) / references if references else 1.0
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
    misstated = misstated_evidence(text, evidence) if evidence is not None else ()
    cues = misstated_cues(text, rules_reading) if rules_reading is not None else ()
    meta = meta_terms(text)
    complete, uncited = completeness(text, active, cap) if active is not None else (None, ())
    label_match = label is not None and inferred == label
    reasons = []
    if not format_ok:
        reasons.append("not in the exact three-header format")
    if label is not None and not label_match:
        reasons.append(f"the description alone reads as {inferred or 'no emotion'}, not {label}")
    if unmeasured:
        reasons.append("mentions AUs not measured above threshold: " + ", ".join(unmeasured))
    if misnamed:
        reasons.append("refers to AUs wrongly: " + ", ".join(misnamed))
    if missing:
        reasons.append("leaves out measured AUs: " + ", ".join(missing))
    if misquoted:
        reasons.append("misquotes the intensity of " + ", ".join(misquoted))
    if misstated:
        reasons.append("misstates the measured evidence for " + ", ".join(misstated))
    if cues:
        reasons.append("misstates measured cues: " + "; ".join(cues))
    if meta:
        reasons.append(
            "speaks of annotations, labels or datasets instead of the face: " + ", ".join(meta)
        )
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
        complete=complete,
        uncited_aus=uncited,
        meta_terms=meta,
        misstated_evidence=misstated,
        misstated_cues=cues,
        misnamed_aus=misnamed,
    )
