"""How the nano ExpLLM decodes: ``DecodingSettings``, the ``decoding`` of a model folder's
``expllm_model.json`` (what each setting does: ``engine.model.decoding``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import cache

import numpy as np

from engine.model.labels import FOLLOWS, label_choices
from engine.types import EMOTIONS


@dataclass(frozen=True)
class DecodingSettings:
    """How the nano ExpLLM decodes (``expllm_model.json``'s ``decoding``): ``label_cue`` ends
    the text before a label ("the annotated label," of the shipped model's training texts, an
    opening ``**`` of the new ones); ``conclusion_follows``: the Conclusion's label is the
    Interpretation's first emotion (``"first"``), its verdict (``"verdict"``) or free (``""``),
    ``engine.model.labels``."""

    grounded: bool = False
    label_guidance: float = 0.0
    label_cue: str = r"(?:label,|\*\*)$"
    conclusion_follows: str = "first"
    #: Prior correction of label guidance: the classifier's log-probabilities minus
    #: ``class_balance`` x the log of the training labels' frequencies (EMOTIONS order), which
    #: trades a little accuracy on common classes for recall on rare ones (0: off).
    class_balance: float = 0.0
    class_frequencies: tuple[float, ...] = ()
    #: Prior correction where the answers are restricted to fewer classes (another dataset's
    #: label set, the cross-dataset protocol), whose frequencies are not the training labels':
    #: the one that maximises balanced accuracy (UAR) on the validation faces, as for a set
    #: whose classes are equally frequent (None: ``class_balance`` there too).
    transfer_balance: float | None = None
    #: Grounded text stays ASCII and never speaks of annotations, labels or datasets
    #: (``META_TERMS``); off for a model trained on texts that do (the shipped one), which
    #: these guards derail.
    strict_wording: bool = True
    #: A CoT template variant ("evidence"): each text begins with what that variant states of
    #: the face's measurements alone (``CoTRenderer.facts``: every cited AU, strongest first,
    #: and the rules' evidence), and the model writes the reasoning and the Conclusion from
    #: there; "" : it writes the whole text.
    stated_facts: str = ""
    #: Decide the reading of each face before its text (the encoder classifier's best allowed
    #: class, prior-corrected) and write towards it: every label slot names it, the stated
    #: facts include the measured cue that weighs most against it, and a text whose reading
    #: leads the evidence speaks of no contrary or competing evidence.
    planned_reading: bool = False
    #: Decide the planned reading by the LM's own answer to the label-only question
    #: (``engine.model.answers``: each allowed class name's log-likelihood) + ``label_guidance``
    #: x the encoder classifier's prior-corrected log-probability, a product of experts whose
    #: weight 0 leaves the reading to the LM alone; else by the classifier alone.
    reading_by_answer: bool = False
    #: With a planned reading, the Conclusion is one of the CoT templates' Conclusions for
    #: that reading (``CoTRenderer.conclusions``; the model picks among them) instead of a
    #: sentence of its own words (``engine.model.closing.CONCLUSION_CHARACTERS``).
    planned_conclusion: bool = False
    #: Run the LM's matrix products in bfloat16 on the CPU too (autocast), where the CPU does
    #: them natively (``native_cpu_bfloat16``: 2-3x faster than float32 there; elsewhere torch
    #: emulates them, 6x slower, so float32 is kept); on GPUs always.
    cpu_bfloat16: bool = False
    #: The model's own words (after any stated facts) never repeat a run of this many tokens,
    #: unless grounding or a label slot allows nothing else (transformers'
    #: ``no_repeat_ngram_size``; 0: off): a text that loops on a sentence moves on instead.
    no_repeat_ngram_size: int = 0

    def __post_init__(self):
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be >= 0, not {self.no_repeat_ngram_size}")

    def with_options(self, options: Mapping[str, object]) -> DecodingSettings:
        """These settings with ``options`` (setting name -> value, e.g. from
        ``--model-option``) replaced, each cast to its setting's type."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = sorted(set(options) - set(current))
        if unknown:
            raise ValueError(
                f"unknown decoding setting(s) {', '.join(unknown)}; known: {', '.join(current)}"
            )
        cast = {name: _cast(value, current[name], name) for name, value in options.items()}
        if "conclusion_follows" in cast and cast["conclusion_follows"] not in FOLLOWS:
            raise ValueError(f"conclusion_follows must be one of {FOLLOWS}")
        return replace(self, **cast)

    def balanced(
        self, log_priors: np.ndarray, allowed_labels: Sequence[str] | None = None
    ) -> np.ndarray:
        """``log_priors`` [faces, classes] with the prior correction applied (where
        ``allowed_labels`` are fewer than all classes: ``transfer_balance``)."""
        balance = self.class_balance
        restricted = len(label_choices(allowed_labels)) < len(EMOTIONS)
        if restricted and self.transfer_balance is not None:
            balance = self.transfer_balance
        if not balance or not self.class_frequencies:
            return log_priors
        frequencies = np.asarray(self.class_frequencies, np.float64)
        return log_priors - balance * np.log(np.maximum(frequencies, 1e-6))

    def bfloat16(self, device_type: str) -> bool:
        """Whether the LM's matrix products run in bfloat16 on a device of ``device_type``."""
        if device_type == "cpu":
            return self.cpu_bfloat16 and native_cpu_bfloat16()
        return device_type == "cuda" or self.cpu_bfloat16

    @property
    def guided(self) -> bool:
        """Whether decoding is guided at all (else plain greedy)."""
        return self.grounded or bool(self.label_guidance) or self.planned_reading


@cache
def native_cpu_bfloat16() -> bool:
    """Whether this machine's CPU does bfloat16 matrix products natively (x86 AVX512-BF16 or
    AMX, as torch detects them)."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _cast(value: object, like: object, name: str) -> object:
    """``value`` as the type of the setting ``name``'s current value ``like``."""
    try:
        if isinstance(like, bool) and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if isinstance(like, tuple):
            return tuple(float(v) for v in value)
        if like is None:  # an optional number, unset
            return float(value)
        return type(like)(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"decoding setting {name}: cannot read {value!r}") from error
