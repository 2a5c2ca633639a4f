"""The ExpLLM model interface (``VisionLM``) and its bases, in a registry.

* ``nano`` (``engine.model.nano``): the shipped ONNX face encoder and the mesh AU back end, each
  with a 2-layer MLP projector into SmolLM2-135M-Instruct with LoRA;
* ``hf:<id or path>`` (``engine.model.hf``): a Hugging Face vision-language model with LoRA.

``create_model(base)`` builds a fresh trainable model, ``load_model(folder)`` a saved one
(``engine.model.config``). torch, transformers and peft are imported only when a model is built.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engine.model.config import LoraSettings, ModelConfig
from engine.model.settings import DecodingSettings
from engine.registry import Registry

#: The label of a token the loss leaves out.
IGNORE = -100

#: The model bases by name, each imported on first use (``data/plugins.json``).
BASES: Registry[type[VisionLM]] = Registry("model base")


def import_training():
    """(torch, transformers, peft), or an ImportError saying how to install them."""
    try:
        import peft
        import torch
        import transformers
    except ImportError as exc:
        raise ImportError(
            f"ExpLLM models need torch, transformers and peft ({exc}): pip install 'expllm[train]'"
        ) from exc
    _ignore_peft_deprecation()
    return torch, transformers, peft


@cache
def _ignore_peft_deprecation() -> None:
    """peft reads transformers 5's deprecated ``is_gradient_checkpointing`` whenever it wraps a
    model, a warning no user of ours can act on: ignored, the filter added once (each change
    of the filters makes Python show its once-only warnings again)."""
    warnings.filterwarnings(
        "ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning, "transformers"
    )


def _base_class(base: str) -> tuple[type[VisionLM], str]:
    kind, _, arg = base.partition(":")
    return BASES.get(kind), arg


def face_margin_of(base: str) -> float | None:
    """How a model of ``base`` frames detected faces (its ``VisionLM.face_margin``)."""
    return _base_class(base)[0].face_margin


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


@dataclass(frozen=True)
class Generation:
    """How ``VisionLM.generate`` answers: its token budget, decoding and the labels it may name
    (None: all)."""

    max_new_tokens: int
    decoding: DecodingSettings
    allowed_labels: Sequence[str] | None = None


class VisionLM(ABC):
    """A trainable vision-language model: ``module(**collate(examples)).loss`` trains it.

    An example is ``(visual, messages)``: ``visual`` is what ``visual_inputs`` made of a face
    crop, ``messages`` a conversation whose first user turn starts with ``<image>``.
    """

    name: ClassVar[str]
    #: How much a detected face box is grown to frame faces as the model's training crops were
    #: (``FaceFinder.margin``); None: the pipeline's own.
    face_margin: ClassVar[float | None] = None
    config: ModelConfig
    module: Any  # torch.nn.Module
    tokenizer: Any

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

    def generate(
        self,
        visuals: Sequence[Any],
        max_new_tokens: int | None = None,
        decoding: DecodingSettings | None = None,
        allowed_labels: Sequence[str] | None = None,
    ) -> list[str]:
        """Greedy answers to the CoT prompt, one per visual input; ``decoding`` (default: the
        model's own) says how they are guided (``engine.model.decoding``); ``allowed_labels``:
        the classes every label slot may name (default: all)."""
        max_new_tokens = max_new_tokens or self.config.max_new_tokens
        how = Generation(max_new_tokens, decoding or self.config.decoding, allowed_labels)
        return self._generate(visuals, how)

    @abstractmethod
    def _generate(self, visuals: Sequence[Any], how: Generation) -> list[str]:
        """``generate`` with its defaults filled in."""

    @abstractmethod
    def save(self, folder: str | Path) -> None:
        """Write the model folder (config, adapter, projector)."""

    def to_device(self, device: str | None = None) -> VisionLM:
        """Move the module to ``device`` (default: CUDA when available, else the CPU)."""
        torch = import_training()[0]
        self.module.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return self

    def trainable_parameters(self) -> list:
        return [p for p in self.module.parameters() if p.requires_grad]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
