"""The ``openai`` chat back end: any OpenAI-compatible chat-completions endpoint.

GPT-4o at api.openai.com by default, or vLLM, or ``expllm serve-llm``. Base URL, model and key
come from the options or from ``OPENAI_BASE_URL``, ``EXPLLM_LLM_MODEL`` and ``OPENAI_API_KEY``.
Requests of a batch run concurrently (``asyncio``, at most ``concurrency`` in flight); the
``openai`` client retries 408/409/429/5xx answers and time-outs with exponential back-off
(``max_retries``, honouring ``Retry-After``). A call that still fails gives a ``Completion``
with ``error`` set, which the engine loop records as the draft's failure.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from engine.cot.writers.chat import (
    CHAT_MODELS,
    ChatModel,
    ChatParams,
    Completion,
    OnAnswer,
    price_for,
)

if TYPE_CHECKING:
    from engine.cot.writers.base import WriterOptions

DEFAULT_MODEL = "gpt-4o"


def _import_openai():
    try:
        import openai
    except ImportError as exc:
        raise ImportError("the openai writer needs: pip install 'expllm[llm]'") from exc
    return openai


@CHAT_MODELS.register()
class OpenAIChat(ChatModel):
    """Async chat completions against ``base_url`` with bounded concurrency and retries."""

    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = 120.0,
        max_retries: int = 5,
    ):
        self._openai = _import_openai()
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not self.api_key:
            if self.base_url is None:
                raise ValueError(
                    "the openai writer needs an API key for api.openai.com: set OPENAI_API_KEY "
                    "or --api-key (or point --base-url at a local server)"
                )
            self.api_key = "unused"  # local servers ignore it; the client requires one
        self.timeout = timeout
        self.max_retries = max_retries
        self.model = model or os.environ.get("EXPLLM_LLM_MODEL") or self._served_model()
        if concurrency < 1:
            raise ValueError(f"LLM concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self.price = price_for(self.model)
        if self.base_url and "api.openai.com" not in self.base_url and self.price is None:
            self.price = (0.0, 0.0)  # self-hosted: no per-token cost

    @classmethod
    def from_options(cls, options: WriterOptions) -> OpenAIChat:
        return cls(
            base_url=options.base_url,
            model=options.model,
            api_key=options.api_key,
            concurrency=options.concurrency,
            timeout=options.timeout,
            max_retries=options.max_retries,
        )

    def _served_model(self) -> str:
        """gpt-4o at api.openai.com; elsewhere the (first) model the server lists."""
        if self.base_url is None:
            return DEFAULT_MODEL
        client = self._openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )
        try:
            models = [m.id for m in client.models.list()]
        except self._openai.OpenAIError as exc:
            raise ValueError(
                f"could not list the models of {self.base_url} ({type(exc).__name__}: {exc}); "
                "name one with --model"
            ) from exc
        if not models:
            raise ValueError(f"{self.base_url} serves no model; name one with --model")
        return models[0]

    def complete_many(
        self, conversations: list[list[dict]], params: ChatParams, on_answer: OnAnswer = None
    ) -> list[Completion]:
        if not conversations:
            return []
        gather = self._gather(conversations, params, on_answer)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(gather)
        with ThreadPoolExecutor(1) as pool:  # called from inside an event loop
            return pool.submit(asyncio.run, gather).result()

    async def _gather(self, conversations: list[list[dict]], params: ChatParams, on_answer):
        client = self._openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )
        gate = asyncio.Semaphore(self.concurrency)
        async with client:
            return await asyncio.gather(
                *(
                    self._one(client, gate, c, params, i, on_answer)
                    for i, c in enumerate(conversations)
                )
            )

    async def _one(self, client, gate, messages: list[dict], params, index: int, on_answer):
        answer = await self._ask(client, gate, messages, params)
        if on_answer is not None:
            on_answer(index, answer)
        return answer

    async def _ask(self, client, gate: asyncio.Semaphore, messages: list[dict], params):
        async with gate:
            try:
                response = await client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    max_tokens=params.max_tokens,
                    temperature=params.temperature,
                    seed=params.seed,
                )
            except self._openai.OpenAIError as exc:
                return Completion(error=f"{type(exc).__name__}: {exc}")
        if not response.choices:
            return Completion(error="the endpoint answered with no choices")
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=(choice.message.content or "").strip(),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason or "stop",
        )
