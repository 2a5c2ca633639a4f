"""The token guide of guided decoding (``TokenGuide``): ``engine.model.decoding``'s label slots
and AU grounding applied to the next-token scores of a batch of faces, for
``engine.model.greedy.greedy_decode``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.cot.vocabulary import vocabulary
from engine.model.decoding import (
    CANDIDATES,
    COMPETING_CUE,
    FALLBACK_CANDIDATES,
    LAST_WORD,
    AUGrounding,
)
from engine.model.labels import LabelSlot, emotion_token_families, label_choices, label_slot_at
from engine.model.settings import DecodingSettings
from engine.types import EMOTIONS


class TokenGuide:
    """Applies ``settings`` to the next-token scores of a batch of faces (``greedy_decode``'s
    guide): label slots first, then AU grounding.

    ``groundings``: per face (for ``settings.grounded``); ``log_priors``: [faces, 8] classifier
    log-probabilities (for ``settings.label_guidance``); ``allowed_labels``: the classes label
    slots may name (default: all); ``readings``: per face, the planned reading every label
    slot names (``DecodingSettings.planned_reading``).
    """

    def __init__(
        self,
        tokenizer,
        settings: DecodingSettings,
        groundings: Sequence[AUGrounding] | None,
        log_priors: np.ndarray | None,
        allowed_labels: Sequence[str] | None = None,
        readings: Sequence[str] | None = None,
    ):
        self.tokenizer = tokenizer
        self.settings = settings
        self.groundings = groundings
        self.families = emotion_token_families(tokenizer)
        self.weight = settings.label_guidance if log_priors is not None else 0.0
        self.log_priors = (
            settings.balanced(log_priors, allowed_labels) if log_priors is not None else None
        )
        self.allowed = label_choices(allowed_labels)
        self._decode = _fast_decoder(tokenizer)
        self.readings = readings
        # control tokens (chat roles, ...) are skipped when texts are decoded, so grounding
        # cannot see them: the end-of-sequence token is the only one a text may write
        added = getattr(tokenizer, "added_tokens_decoder", {})  # absent: a plain test tokenizer
        special = {i for i, t in added.items() if t.special}
        self._control = sorted(special - {tokenizer.eos_token_id})

    def __call__(self, rows: Sequence[int], ids: Sequence[list[int]], scores):
        """``scores`` [len(rows), vocabulary] (logits) as guided log-probabilities."""
        import torch

        scores = torch.log_softmax(scores.float(), dim=-1)
        scores[:, self._control] = float("-inf")
        texts = [self._decode(row_ids) for row_ids in ids]
        for index, row in enumerate(rows):
            self._guide_label(row, texts[index], scores[index])
        if self.groundings is None:
            return scores
        best = torch.topk(scores, CANDIDATES).indices.tolist()
        for index, row in enumerate(rows):
            self._ground(ids[index], texts[index], self.groundings[row], scores[index], best[index])
        return scores

    def ending(self, row: int, ids: list[int]) -> list[int]:
        """The tokens that must end the text ``ids`` of face ``row`` where only one ending
        remains (``AUGrounding.ending``: a planned Conclusion begun), written at once instead
        of a decoding step each; empty otherwise."""
        if self.groundings is None:
            return []
        rest = self.groundings[row].ending(self._decode(ids))
        return self._encode(rest) if rest else []

    def _guide_label(self, row: int, text: str, row_scores) -> None:
        import torch

        settings = self.settings
        slot = label_slot_at(text, settings.label_cue, self.allowed, settings.conclusion_follows)
        if slot is None and self.groundings and COMPETING_CUE.search(text):
            lead = self.groundings[row].lead
            if lead:  # the competing reading is the one the evidence leads with
                _keep(row_scores, self._encode(f" {lead}")[:1])
            return
        if slot is None:
            return
        if slot.rest:  # a label word begun: finish it
            _keep(row_scores, self._encode(slot.rest)[:1])
            return
        best = int(row_scores.argmax())
        family = next((f for f in self.families if best in f), None)
        if family is None:
            if not slot.cued:
                return
            family = self.families[1] if _word_joins(text) else self.families[0]
        choices = (self.readings[row],) if self.readings else self._groundable(row, text, slot)
        wanted = {EMOTIONS.index(e) for e in choices}
        weighted = slot.weighted and self.weight
        guided = torch.full_like(row_scores, float("-inf"))
        for token, emotion in family.items():
            if emotion in wanted:
                prior = float(self.log_priors[row, emotion]) if weighted else 0.0
                guided[token] = row_scores[token] + self.weight * prior
        row_scores.copy_(guided)

    def _groundable(self, row: int, text: str, slot: LabelSlot) -> tuple[str, ...]:
        """The choices of ``slot`` that keep ``text`` grounded once written (a bold one closed:
        a verdict must agree with the cues the text has named), or all where none does."""
        if self.groundings is None:
            return slot.choices
        space = "" if _word_joins(text) else " "
        close = "**" if text.endswith("**") else ""
        grounding = self.groundings[row]
        kept = tuple(e for e in slot.choices if grounding.allows(f"{text}{space}{e}{close}"))
        return kept or slot.choices

    def _ground(self, ids, text, grounding, row_scores, best: list[int]) -> None:
        eos = self.tokenizer.eos_token_id
        for token in self._candidates(row_scores, text, grounding, best):
            if (
                grounding.may_end(text)
                if token == eos
                else grounding.allows(self._decode([*ids, token]))
            ):
                # the first grounded candidate is the only choice left (the best token may
                # tie with it: bfloat16 scores often do)
                _keep(row_scores, [token])
                return
        # nothing keeps the text grounded: it ends as written (complete or cut short), since
        # whatever follows a text that is no longer grounded cannot be grounded either
        _keep(row_scores, [eos])

    def _candidates(self, row_scores, text, grounding, best: list[int]):
        """The best tokens; only if none of them will do, those continuing a header, code,
        name, word or quote begun, then the shortest known word's rest; then the next best."""
        import torch

        yield from best
        for rest in grounding.continuations(text):
            yield from self._encode(rest)[:1]
        word = LAST_WORD.search(text)[0]
        rest = vocabulary().completion(word) if word else ""
        if rest:  # a word begun that the LM does not finish: the shortest known word
            yield from self._encode(rest)[:1]
        yield from torch.topk(row_scores, FALLBACK_CANDIDATES).indices.tolist()[CANDIDATES:]

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def _fast_decoder(tokenizer):
    """``tokenizer.decode(ids, skip_special_tokens=True)``, straight through the Rust backend
    of a fast tokenizer (the Python wrapper checks every id's type, which dominates at each
    generated token) where it decodes alike."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return lambda ids: tokenizer.decode(ids, skip_special_tokens=True)
    return lambda ids: backend.decode(ids, skip_special_tokens=True)


def _word_joins(text: str) -> bool:
    """Whether a word written after ``text`` takes no space of its own (at the start, after a
    space or bold marks)."""
    return text[-1:] in ("", " ", "*")


def _keep(row_scores, tokens: Sequence[int]) -> None:
    """Leave only ``tokens`` (their scores kept) in one row of scores."""
    keep = row_scores[tokens].clone()
    row_scores.fill_(float("-inf"))
    row_scores[tokens] = keep
