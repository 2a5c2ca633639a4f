"""Render stage: emotion evidence -> a three-part CoT through the Jinja templates in
``templates/cot``.

Each face gets one of several phrasings, chosen deterministically from its record id, so a
rerun reproduces the same text. Only AUs measured above threshold reach the templates, and
the Key Observations cite all of them, strongest first, up to ``max_aus`` (the rule tables'
``max_cited_aus``), so the text is ``complete`` (``engine.cot.verify.completeness``).

The interpretation reasons towards the emotion the face is read as (``target``: the expected
label, or the rules' dominant emotion for unlabelled faces) and ends with that emotion in
bold, which is what Des2Exp reads (``engine.cot.verify.infer_label``). When the rules favour
another emotion, it states the strongest contrary cue plainly, then names the measured cues
consistent with the target (``engine.cot.support``); when there are none, it says so, and
arrives at the rules' reading instead. No text speaks of annotations or labels.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from engine.aus import au_definitions
from engine.cot.format import HEADER_MARKS, CoT
from engine.cot.rules import EmotionEvidence
from engine.cot.support import support
from engine.resources import templates_dir
from engine.types import EMOTIONS

#: The CoT phrasings in ``templates/cot/``, in the order the per-record hash picks from.
DEFAULT_VARIANTS = ("listing", "regional", "evidence")
#: The end of a sentence in a CoT text: a full stop before a space or a section break.
_SENTENCE_END = re.compile(r"\.(?= |\n)")


@dataclass(frozen=True)
class RenderedCoT:
    """A CoT and the id of the template (``cot/<variant>@<source hash>``) that wrote it."""

    cot: CoT
    template_id: str


def join_and(items) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


class CoTRenderer:
    """Renders ``EmotionEvidence`` into a ``CoT``.

    Cites the ``max_aus`` strongest active AUs (all when there are fewer) and at most
    ``max_prototypes`` prototypes (the best per emotion); when a text would exceed
    ``max_words`` it cites them in a short form, then also leaves out how they combine, then
    which side is stronger.
    """

    def __init__(
        self,
        folder: Path | None = None,
        variants: tuple[str, ...] = DEFAULT_VARIANTS,
        max_aus: int = 6,
        max_prototypes: int = 2,
        max_words: int = 180,
        threshold: float = 1.0,
    ):
        if not variants:
            raise ValueError("at least one CoT template variant is required")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(folder or templates_dir())),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=False,
            lstrip_blocks=True,
        )
        self.env.filters["join_and"] = join_and
        self._macros = self.env.get_template("cot/_macros.j2")
        self.templates = {v: self.env.get_template(f"cot/{v}.j2") for v in variants}
        self.template_ids = {
            v: f"cot/{v}@{_source_hash(self.env, f'cot/{v}.j2', 'cot/_macros.j2')}"
            for v in variants
        }
        self.variants = variants
        self.max_aus = max_aus
        self.max_prototypes = max_prototypes
        self.max_words = max_words
        self.threshold = threshold
        self._phrases = {code: d.phrase for code, d in au_definitions().items()}

    def variant_for(self, record_id: str) -> str:
        digest = hashlib.sha1(record_id.encode()).digest()
        return self.variants[int.from_bytes(digest[:4], "big") % len(self.variants)]

    def render(self, record_id: str, label: str | None, evidence: EmotionEvidence) -> RenderedCoT:
        """The CoT of one face; ``label`` is the emotion the face is to be read as (None for
        unlabelled data: the rules' dominant emotion)."""
        variant = self.variant_for(record_id)
        cot, _ = self._fitted(self.templates[variant], evidence, label)
        return RenderedCoT(cot, self.template_ids[variant])

    def facts(self, evidence: EmotionEvidence, variant: str, reading: str | None = None) -> str:
        """What ``variant``'s CoT states of the measurements alone, as its text begins: the
        whole sentences it opens with whatever emotion the face is read as (the Key
        Observations, then the Interpretation's sentences on the rules' evidence, how the units
        combine, ...), up to where its reasoning towards one emotion starts; for a face read
        as ``reading``, everything its text states before the verdict (the sentence with the
        bold emotion): where the evidence leads elsewhere, the measured cue that weighs most
        against the reading ("The strongest contrary cue is ...") and the measured cues
        consistent with it ("Consistent with ...")."""
        if variant not in self.templates:
            raise ValueError(f"no CoT template variant {variant!r}; have {list(self.templates)}")
        template = self.templates[variant]
        compact = max(self._fitted(template, evidence, target)[1] for target in EMOTIONS)
        texts = [self._fitted(template, evidence, target, compact)[0].text for target in EMOTIONS]
        common = os.path.commonprefix(texts)
        ends = [m.end() for m in _SENTENCE_END.finditer(common)]
        facts = common[: ends[-1]] if ends else ""
        if reading is None or not facts:
            return facts
        text = texts[EMOTIONS.index(reading)]
        verdict = text.find("**", text.find(HEADER_MARKS[1]) + len(HEADER_MARKS[1]))
        ends = [m.end() for m in _SENTENCE_END.finditer(text, len(facts), verdict)]
        return text[: ends[-1]].rstrip() if ends else facts

    def conclusions(self, evidence: EmotionEvidence, reading: str) -> tuple[str, ...]:
        """The Conclusions the CoT templates write for a face read as ``reading``, one per
        variant (each a sentence that states the reading and how the measured evidence bears
        on it), distinct, in variant order."""
        context = {**self._context(evidence, reading), "compact": 0}
        texts = (self._render_blocks(t, context).conclusion for t in self.templates.values())
        return tuple(dict.fromkeys(texts))

    def _fitted(
        self,
        template: jinja2.Template,
        evidence: EmotionEvidence,
        label: str | None,
        least_compact: int = 0,
    ) -> tuple[CoT, int]:
        """The CoT of ``template`` and its compactness (0-3, at least ``least_compact``): as
        compact as it takes to fit ``max_words``."""
        context = self._context(evidence, label)
        # 0: full; 1: short AU items; 2: also no combination sentence; 3: also no side notes
        for compact in range(least_compact, 4):
            context["compact"] = compact
            cot = self._render_blocks(template, context)
            if cot.word_count <= self.max_words:
                break
        return cot, compact

    def _context(self, evidence: EmotionEvidence, label: str | None) -> dict:
        """The templates' context for a face read as ``label`` (None: the rules' dominant)."""
        best_per_emotion = {}
        ranked = sorted(
            evidence.prototypes,
            key=lambda p: (p.emotion != evidence.dominant, p.emotion != evidence.secondary),
        )
        for match in ranked:
            best_per_emotion.setdefault(match.emotion, match)
        target = label if label is not None else evidence.dominant
        cues = support(evidence, target)
        listed = evidence.active[: self.max_aus]
        return {
            "dominant": evidence.dominant,
            "secondary": evidence.secondary,
            "scores": evidence.scores,
            "prototypes": list(best_per_emotion.values())[: self.max_prototypes],
            "conflicts": evidence.conflicts,
            "target": target,
            "supported": cues.supported,
            "support": cues,
            "threshold": self.threshold,
            "aus": [{**a.__dict__, "phrase": self._phrases.get(a.au, a.name)} for a in listed],
            "hidden": len(evidence.active) - len(listed),
            "regions": list(dict.fromkeys(a.region for a in listed)),
        }

    def _render_blocks(self, template: jinja2.Template, context: dict) -> CoT:
        context["m"] = self._macros.make_module(context)
        ctx = template.new_context(context)
        return CoT(
            *(
                "".join(template.blocks[name](ctx))
                for name in ("observations", "interpretation", "conclusion")
            )
        )


def level_words(folder: Path | None = None) -> dict[str, str]:
    """The word the CoT templates give each FACS level letter (``_macros.j2``'s
    ``level_word``), e.g. ``{"C": "marked"}``."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder or templates_dir())))
    macros = env.get_template("cot/_macros.j2").make_module({})
    return {letter: str(macros.level_word(letter)) for letter in "ABCDE"}


def _source_hash(env: jinja2.Environment, *names: str) -> str:
    digest = hashlib.sha1()
    for name in names:
        source, _, _ = env.loader.get_source(env, name)
        digest.update(source.encode())
    return digest.hexdigest()[:8]
