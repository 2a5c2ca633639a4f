"""The known words of CoT texts (``Vocabulary``, ``vocabulary()``): the one vocabulary of the
project, used by grounded decoding (``engine.model.decoding``: what the nano ExpLLM may write)
and by the evaluation's wording check (``engine.evaluation.cot_quality``: what counts as a word).

Sources: the English list ``data/english_words.txt``, the words of the CoT and prompt templates
(``templates/cot``, ``templates/prompts``, their Jinja expressions included: they hold words
too), the words of the data tables (``data/**/*.csv``: FACS names, muscles and phrases,
prototype sources) and the emotion words of ``data/emotion_lexicon.json`` and
``label_maps.json``, each also with a plural, past, participle, adverb or comparative ending.
A token (``TOKEN``: letters and digits, maybe joined by an apostrophe, dot or hyphen) is a word
(``Vocabulary.is_word``) if it is a known word or known words joined by hyphens, a number, a
FACS code AU01..AU46 or prototype token (``5B``, ``R12A``), or an intensity letter A-E. The
evaluation counts the other tokens (``engine.evaluation.cot_quality``). For decoding
(``Vocabulary.allows``) every finished token of a text must be a word by the same test and an
unfinished last one must begin one (``completion`` finishes a word), so that a clause cannot
run into non-words such as "UiPuPurpSurvue", "Ther12" or "up-and-b" (the grounding checks
which codes). Single letters always pass ``knows`` and ``begins`` (``in`` is the plain
membership).
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from engine.resources import data_dir, data_file, templates_dir
from engine.types import EMOTIONS

#: A word: a run of ASCII letters.
WORD = re.compile(r"[A-Za-z]+")
#: A token of a text: letters and digits, maybe joined by an apostrophe, a dot or a hyphen.
TOKEN = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
#: A FACS code: ``AU12``, ``AU12E``, or a prototype token (``5B``, ``R12A``: side, AU, level).
_AU_CODE = re.compile(r"(?:AU|[LR])?(\d{1,2})[A-E]?", re.IGNORECASE)
_INTENSITY = re.compile(r"[A-E]")
#: The beginning of a number ("1.", "2,5").
_NUMBER_BEGUN = re.compile(r"\d+(?:[.,]\d*)*")
#: The beginning of a FACS code or prototype token (``_AU_CODE``).
_CODE_BEGUN = re.compile(r"(?:AU?|[LR])?\d{0,2}[A-E]?", re.IGNORECASE)
#: The highest FACS action unit number.
MAX_AU = 46
WORD_LIST = "english_words.txt"
TEMPLATE_FOLDERS = ("cot", "prompts")
#: Endings a listed word may take, with what it loses first ("raise" -> "rais" + "ing").
ENDINGS = (("s", ""), ("es", ""), ("ed", ""), ("ed", "e"), ("d", ""), ("ing", ""),
           ("ing", "e"), ("ly", ""), ("ily", "y"), ("ies", "y"), ("ied", "y"), ("er", ""),
           ("est", ""), ("ness", ""))  # fmt: skip
#: How many words beginning with a prefix ``completion`` looks at.
_COMPLETIONS = 64
#: Only the words ending this close to the end of a text are checked (earlier ones were, as the
#: text was written).
TAIL = 40


@dataclass(frozen=True)
class Vocabulary:
    """Known words, lower case, sorted (for prefix look-ups)."""

    words: tuple[str, ...]

    @classmethod
    def of(cls, words: Iterable[str]) -> Vocabulary:
        """The vocabulary of ``words`` and their forms with ``ENDINGS``."""
        stems = {w.lower() for w in words}
        forms = {
            stem[: len(stem) - len(lost)] + ending
            for stem in stems
            for ending, lost in ENDINGS
            if stem.endswith(lost) and len(stem) > 1
        }
        return cls(tuple(sorted(stems | forms)))

    def __contains__(self, word: object) -> bool:
        """Whether ``word`` (any case) is one of the words."""
        if not isinstance(word, str):
            return False
        word = word.lower()
        index = bisect.bisect_left(self.words, word)
        return index < len(self.words) and self.words[index] == word

    def knows(self, word: str) -> bool:
        """Whether ``word`` (any case) is a known word; single letters always are."""
        return len(word) == 1 or word in self

    def begins(self, prefix: str) -> bool:
        """Whether some known word starts with ``prefix`` (any case)."""
        prefix = prefix.lower()
        index = bisect.bisect_left(self.words, prefix)
        return len(prefix) == 1 or (
            index < len(self.words) and self.words[index].startswith(prefix)
        )

    def is_word(self, token: str) -> bool:
        """Whether ``token`` (a ``TOKEN``) is a known word (or known words joined by hyphens or
        dots, maybe with a possessive), a number, a FACS code AU01..AU46 or prototype token, or
        an intensity letter A-E."""
        if _NUMBER.fullmatch(token) or _INTENSITY.fullmatch(token):
            return True
        code = _AU_CODE.fullmatch(token)
        if code:
            return 1 <= int(code.group(1)) <= MAX_AU
        lower = token.lower().replace("’", "'")
        return self._known(lower) or all(self._known(part) for part in re.split(r"[-.]", lower))

    def _known(self, word: str) -> bool:
        return word in self or (word.endswith("'s") and word[:-2] in self)

    def completion(self, prefix: str) -> str:
        """The rest of the shortest known word that begins with ``prefix`` ("" if none)."""
        prefix = prefix.lower()
        index = bisect.bisect_left(self.words, prefix)
        fitting = []
        while index < len(self.words) and self.words[index].startswith(prefix):
            fitting.append(self.words[index])
            index += 1
            if len(fitting) >= _COMPLETIONS:
                break
        return min(fitting, key=len)[len(prefix) :] if fitting else ""

    def allows(self, text: str, tail: int = TAIL) -> bool:
        """Whether the tokens of ``text``'s last ``tail`` characters are words (``is_word``),
        the last one (unfinished at the end of ``text``) at least the beginning of one."""
        start = max(0, len(text) - tail)
        while start and not text[start - 1].isspace():
            start -= 1
        for match in TOKEN.finditer(text, start):
            if match.end() < len(text):
                if not self.is_word(match[0]):
                    return False
            elif not self._begins_token(match[0]):
                return False
        return True

    def _begins_token(self, token: str) -> bool:
        """Whether an unfinished ``token`` can still become a word as ``is_word`` has it: the
        beginning of a number or a code (``AU0`` -> ``AU01``), of a listed word ("x-r"), or
        known words joined by hyphens or dots whose last begins a word (maybe a possessive)."""
        lower = token.lower().replace("’", "'")
        if _NUMBER_BEGUN.fullmatch(token) or self.begins(lower):
            return True
        if not token.isalpha() and _CODE_BEGUN.fullmatch(token):
            return True
        *parts, last = re.split(r"[-.]", lower)
        stem, apostrophe, ending = last.partition("'")
        if apostrophe:
            last_begins = stem in self and "s".startswith(ending)
        else:
            last_begins = not last or (last.isalpha() and self.begins(last))
        return last_begins and all(self._known(part) for part in parts)


@cache
def vocabulary() -> Vocabulary:
    """The vocabulary of the module's sources."""
    listed = data_file(WORD_LIST).read_text(encoding="utf-8").splitlines()
    words = {w.strip() for w in listed if w.strip() and not w.startswith("#")}
    tables = sorted(data_dir().rglob("*.csv"))
    for path in [
        *(p for f in TEMPLATE_FOLDERS for p in (templates_dir() / f).glob("*.j2")),
        *tables,
    ]:
        # a lone letter there is an initial or a symbol, not a word (the list has "a" and "I")
        words.update(w for w in WORD.findall(path.read_text(encoding="utf-8")) if len(w) > 1)
    lexicon = json.loads(data_file("emotion_lexicon.json").read_text(encoding="utf-8"))
    labels = json.loads(data_file("label_maps.json").read_text(encoding="utf-8"))
    for emotion in EMOTIONS:
        words.update(WORD.findall(" ".join([emotion, *lexicon.get(emotion, ())])))
    words.update(w for w in labels.get("synonyms", {}) if len(w) > 2 and w.isalpha())
    return Vocabulary.of(words)
