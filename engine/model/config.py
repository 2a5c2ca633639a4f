"""What a model folder is: ``expllm_model.json`` (``ModelConfig``, ``LoraSettings``) beside the
LoRA adapter (``adapter/``) and, for ``nano``, ``projector.safetensors``; the encoder and the LM
are named (with the encoder's sha256), not copied. Its ``decoding`` settings say how the model
writes (``engine.model.decoding``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.model.conversations import prompts
from engine.model.settings import DecodingSettings

CONFIG_FILE = "expllm_model.json"
PROJECTOR_FILE = "projector.safetensors"
ADAPTER_DIR = "adapter"
FORMAT = "expllm-model/2"
#: The shipped weights: the nano encoder and the nano ExpLLM model folder.
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SHIPPED_MODEL = WEIGHTS / "expllm_nano"
#: Faces a model writes CoTs for at once (``generate_cots``, the ``expllm`` predictor); the
#: training batch is ``FinetuneConfig.batch_size``.
GENERATION_BATCH = 64


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
    #: file -> sha256 of classifiers beside the encoder (ONNX, its interface) whose face + mirror
    #: probabilities, averaged, are the prior that label guidance and the planned reading weigh;
    #: empty: the encoder's own classifier
    prior_classifiers: dict[str, str] = field(default_factory=dict)
    feature_dim: int = 0
    visual_tokens: int = 0
    au_backend: str = ""
    au_codes: tuple[str, ...] = ()
    lora: LoraSettings = field(default_factory=LoraSettings)
    system_prompt: str = field(default_factory=lambda: prompts().system)
    prompt: str = field(default_factory=lambda: prompts().cot_prompt)
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
        priors = data.get("prior_classifiers", {})
        if not isinstance(priors, dict) or not all(isinstance(v, str) for v in priors.values()):
            raise ValueError(f"{path}: prior_classifiers must map file names to sha256 strings")
        decoding = data.get("decoding", {})
        decoding["class_frequencies"] = tuple(decoding.get("class_frequencies", ()))
        try:
            data["decoding"] = DecodingSettings(**decoding)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: decoding: {exc}") from exc
        return cls(**data)

    def write(self, folder: Path) -> None:
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self), indent=1) + "\n")
