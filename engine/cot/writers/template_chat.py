"""The ``template`` chat back end: a deterministic, model-free rewriter behind the chat interface.

It answers a writer prompt with the prompt's ``<reference>`` draft (the CoT templates' text,
put into the exact format), a section prompt with its paragraph (the text after
``Paraphrase:``) and a reader prompt (one with a ``<cot>`` block) with the rule reader's label.
``expllm serve-llm --backend template`` serves it, so the ``openai`` writer can be tested over
real HTTP without torch.
"""

from __future__ import annotations

import re

from engine.cot.format import CoT, CoTFormatError
from engine.cot.verify import infer_label
from engine.cot.writers.chat import CHAT_MODELS, ChatModel, ChatParams, Completion, OnAnswer

_BLOCK = re.compile(r"<(reference|cot)>\s*(.*?)\s*</\1>", re.DOTALL)
_PARAPHRASE = re.compile(r"^Paraphrase:\s*(.+)$", re.MULTILINE)


@CHAT_MODELS.register()
class TemplateChat(ChatModel):
    """Echoes the reference draft (writer prompts) or reads the label (reader prompts)."""

    name = "template"

    def __init__(self, model: str | None = None):
        self.model = model or "expllm-template"

    def complete_many(
        self, conversations: list[list[dict]], params: ChatParams, on_answer: OnAnswer = None
    ) -> list[Completion]:
        answers = [self._answer(c, params) for c in conversations]
        for index, answer in enumerate(answers if on_answer is not None else []):
            on_answer(index, answer)
        return answers

    def _answer(self, messages: list[dict], params: ChatParams) -> Completion:
        user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        blocks = {kind: body for kind, body in _BLOCK.findall(user)}
        if "cot" in blocks:
            text = infer_label(blocks["cot"]) or "unknown"
        elif "reference" in blocks:
            try:
                text = CoT.parse(blocks["reference"]).text
            except CoTFormatError:
                text = blocks["reference"]
        elif _PARAPHRASE.search(user):
            text = _PARAPHRASE.search(user).group(1).strip()
        else:
            text = "No <reference> or <cot> block and no Paraphrase: line in the last user message."
        words = text.split()
        finish = "length" if len(words) > params.max_tokens else "stop"
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in messages)
        return Completion(
            text=" ".join(words[: params.max_tokens]) if finish == "length" else text,
            prompt_tokens=prompt_words,
            completion_tokens=min(len(words), params.max_tokens),
            finish_reason=finish,
        )
