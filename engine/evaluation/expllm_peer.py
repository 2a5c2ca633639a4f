"""The ``expllm`` predictor: a fine-tuned ExpLLM model folder (``expllm finetune``) writes a CoT
for each face; its label is the one the CoT's Conclusion states."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.cot.verify import conclusion_label
from engine.evaluation.face_batches import FacePredictor
from engine.evaluation.scoring import PREDICTORS, Prediction
from engine.model.config import GENERATION_BATCH
from engine.types import EMOTIONS


@PREDICTORS.register()
class ExpLLMPredictor(FacePredictor):
    """A fine-tuned ExpLLM model folder: writes a CoT for each face, ``batch_size`` at once.

    The label is the one read from the CoT's Conclusion (``engine.cot.verify.conclusion_label``);
    decoding is greedy with at most ``max_new_tokens`` tokens (default: the model's), guided as
    the model's ``decoding`` settings say, but for the settings given as keywords (``grounded``,
    ``label_guidance``, ``class_balance``, ``stated_facts``, ...:
    ``engine.model.settings.DecodingSettings``), and held to the evaluation's class set
    (``allowed_labels``). Detected faces are framed as the model's training crops were
    (``VisionLM.face_margin``).
    """

    name = "expllm"

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_new_tokens: int | None = None,
        batch_size: int = GENERATION_BATCH,
        face_mode: str = "auto",
        **decoding: object,
    ):
        from engine.model import load_model

        self.path = Path(path)
        self.model = load_model(self.path).to_device()
        super().__init__(face_mode, batch_size, margin=self.model.face_margin)
        self.max_new_tokens = max_new_tokens
        self.decoding = self.model.config.decoding.with_options(decoding)

    @property
    def au_backend(self) -> str | None:
        """The AU back end the model measures faces with (its CoTs cite those AUs), if any."""
        return self.model.config.au_backend or None

    def answer(self, faces: list[np.ndarray], classes: Sequence[str]) -> list[Prediction]:
        allowed = None if set(classes) == set(EMOTIONS) else list(classes)
        visuals = self.model.visual_inputs(faces)
        texts = self.model.generate(
            visuals, self.max_new_tokens, self.decoding, allowed_labels=allowed
        )
        return [Prediction("", conclusion_label(text), cot=text) for text in texts]

    def describe(self) -> str:
        guided = ["AU-grounded"] if self.decoding.grounded else []
        if self.decoding.label_guidance:
            guided.append(f"label guidance {self.decoding.label_guidance:g}")
        if self.decoding.stated_facts:
            guided.append(f"stated facts of the {self.decoding.stated_facts} template")
        if self.decoding.planned_reading:
            prior = self.model.config.prior_classifiers
            by = f"classifiers {', '.join(prior)}" if prior else "the encoder's classifier"
            guided.append(f"reading planned by {by}")
        correction = self.decoding.class_balance
        transfer = self.decoding.transfer_balance
        if (self.decoding.label_guidance or self.decoding.planned_reading) and (
            correction or transfer
        ):
            where = "" if transfer is None else f", {transfer:g} where fewer classes are allowed"
            guided.append(f"prior correction {correction:g}{where}")
        if self.decoding.planned_reading and self.decoding.planned_conclusion:
            guided.append("the templates' Conclusions")
        return f"ExpLLM ({self.model.config.base}) {self.path}" + (
            f" ({', '.join(guided)})" if guided else ""
        )
