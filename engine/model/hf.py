"""The ``hf:<id or path>`` base: a Hugging Face vision-language model loaded with
``AutoProcessor`` and ``AutoModelForImageTextToText`` (LLaVA, Qwen2-VL, SmolVLM ...); LoRA on the
language model's ``q_proj``/``v_proj``, its projector (``multi_modal_projector``, ``connector``
or ``merger``) trained in full. It decodes plain greedy (guided decoding needs the nano base's
AU and classifier inputs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.model.base import BASES, IGNORE, Generation, VisionLM, import_training
from engine.model.config import ADAPTER_DIR, LoraSettings, ModelConfig
from engine.model.conversations import IMAGE_TOKEN

#: Projector module names of Hugging Face VLMs (LLaVA, SmolVLM/Idefics3, Qwen2-VL).
HF_PROJECTORS = ("multi_modal_projector", "connector", "merger")


@BASES.register()
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
        return cls(config, *hf_module(config, None, True))

    @classmethod
    def load(cls, folder: Path, config: ModelConfig, trainable: bool) -> HFVisionLM:
        return cls(config, *hf_module(config, folder, trainable))

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
        torch = import_training()[0]
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

    def _generate(self, visuals: Sequence[np.ndarray], how: Generation) -> list[str]:
        if how.decoding.guided or how.allowed_labels is not None:
            raise ValueError(
                f"{self.config.base}: guided decoding needs the nano base's AU and classifier "
                "inputs (so do allowed labels); use DecodingSettings() for plain greedy decoding"
            )
        torch = import_training()[0]
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
                max_new_tokens=how.max_new_tokens,
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


def hf_module(config: ModelConfig, folder: Path | None, trainable: bool):
    """(peft module, processor) of an ``hf:`` base; LoRA from ``folder`` when given."""
    torch, transformers, peft = import_training()
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
