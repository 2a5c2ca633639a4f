"""The engine loop of one batch of faces: write -> format refinement -> read -> verify -> feedback.

Round 1: the writer drafts from the AUs and the rule evidence alone (no ground truth). Each
draft is put into the exact three-header format (header variants repaired by ``CoT.parse``,
white space cleaned, at most ``word_cap`` words); the reader infers the label from the
description alone — Key Observations and Interpretation, the Conclusion removed (Des2Exp) —
and ``engine.cot.verify`` checks that label, faithfulness, completeness and that the text speaks
of the face, not of annotations. Faces that fail go back to the writer with their earlier
drafts and what was wrong (the feedback reflection with memory: a Des2Exp failure reads "the
description alone reads as anger, not happiness") until they verify or ``max_rounds`` is
spent. A broken or failed draft is never written and never raises: it becomes the round's
failure reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.cot.format import CoT, CoTFormatError
from engine.cot.rules import EmotionEvidence
from engine.cot.verify import Verification, judge
from engine.cot.writers import Reader, RuleReader, Writer, WriteRequest

_FENCE = re.compile(r"^```[a-z]*\s*|\s*```$")


@dataclass(frozen=True)
class LoopItem:
    """One face entering the loop: its id, ground truth, evidence and measured (active) AUs.

    ``required``: AUs every draft must name (the pipeline passes those the template's draft
    names, so that an LLM rewrite cannot drop the measured facts); ``intensities``: the
    measured values, which quoted intensities must match; ``active``: the active AUs with their
    intensities, strongest first, and ``cap``: how many of them a complete text cites.
    """

    record_id: str
    label: str | None
    evidence: EmotionEvidence
    measured: frozenset[str]
    required: frozenset[str] = frozenset()
    intensities: Mapping[str, float] | None = None
    active: tuple[tuple[str, float], ...] | None = None
    cap: int | None = None


@dataclass
class LoopResult:
    """A face's last well-formed draft (``cot`` None when none was), its verdict and history."""

    cot: CoT | None = None
    verification: Verification | None = None
    template_id: str | None = None
    rounds: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.verification is not None and self.verification.verified


def refine_format(text: str, word_cap: int | None) -> tuple[CoT | None, str]:
    """The draft as a ``CoT`` in the exact format, or None and why it cannot be repaired."""
    text = _FENCE.sub("", text.strip())
    if not text:
        return None, "empty draft"
    try:
        cot = CoT.parse(text)
    except CoTFormatError as exc:
        return None, f"format: {exc}"
    if word_cap is not None and cot.word_count > word_cap:
        return None, f"{cot.word_count} words, over the cap of {word_cap}"
    return cot, ""


class EngineLoop:
    """Runs writer and reader over a batch, round by round (a round's calls go out together)."""

    def __init__(
        self,
        writer: Writer,
        reader: Reader | None = None,
        max_rounds: int = 3,
        word_cap: int | None = 130,
    ):
        if max_rounds < 1:
            raise ValueError(f"--max-rounds must be at least 1, got {max_rounds}")
        self.writer = writer
        self.reader = reader or RuleReader()
        self.max_rounds = max_rounds if writer.uses_model else 1  # a model-free text repeats
        self.word_cap = word_cap

    def run(self, items: list[LoopItem]) -> list[LoopResult]:
        results = [LoopResult() for _ in items]
        history: list[list[tuple[str, str]]] = [[] for _ in items]
        pending = list(range(len(items)))
        for round_no in range(1, self.max_rounds + 1):
            if not pending:
                break
            requests = [
                WriteRequest(
                    items[i].record_id,
                    items[i].label,
                    items[i].evidence,
                    round=round_no,
                    history=tuple(history[i]),
                )
                for i in pending
            ]
            drafts = self.writer.write(requests)
            candidates: list[tuple[int, CoT, str]] = []
            for index, draft in zip(pending, drafts, strict=True):
                results[index].rounds = round_no
                if draft.completion.error is not None:
                    self._fail(results[index], history[index], round_no, "", draft.completion.error)
                    continue
                cot, why = refine_format(draft.text, self.word_cap)
                if cot is None:
                    self._fail(results[index], history[index], round_no, draft.text, why)
                else:
                    candidates.append((index, cot, draft.template_id))
            inferred = self.reader.read_many([cot.text for _, cot, _ in candidates])
            for (index, cot, template_id), label in zip(candidates, inferred, strict=True):
                item = items[index]
                check = judge(
                    cot.text,
                    item.label,
                    item.measured,
                    label,
                    item.required,
                    item.intensities,
                    item.active,
                    item.cap,
                    item.evidence.scores,
                    item.evidence,
                )
                results[index].cot = cot
                results[index].verification = check
                results[index].template_id = template_id
                if not check.verified:
                    self._fail(results[index], history[index], round_no, cot.text, check.reason)
            pending = [i for i in pending if not results[i].verified]
        return results

    @staticmethod
    def _fail(result: LoopResult, memory: list, round_no: int, text: str, reason: str) -> None:
        result.failures.append(f"round {round_no}: {reason}")
        memory.append((text, reason))
