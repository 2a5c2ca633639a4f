"""``expllm serve-llm``: an OpenAI-compatible chat-completions server for the local writer's model.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (optionally ``"stream": true``,
as server-sent events) and ``GET /health``. Answers and errors use the OpenAI shapes
(``{"error": {"message", "type", "param", "code"}}``). The model behind it is pluggable:
``--backend local`` (transformers, SmolLM2-135M-Instruct by default) or ``--backend template``
(the deterministic template rewriter, no torch). Standard library only (``ThreadingHTTPServer``),
no Prefect; generation is serialised by the model's lock, so several workers can share one model.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from engine.cot.writers.chat import CHAT_MODELS, ChatModel, ChatParams

#: Chat back ends the server can serve (``openai`` is itself a client of such a server).
SERVED = ("local", "template")
#: OpenAI's default sampling temperature, used when a request names none.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_TOKENS = 200
MAX_BODY_BYTES = 4 * 1024 * 1024


class APIError(Exception):
    """An error answered in the OpenAI error shape."""

    def __init__(self, status: HTTPStatus, message: str, kind: str, param: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.param = status, kind, param

    def body(self) -> dict:
        code = {404: "model_not_found"}.get(self.status.value)
        return {
            "error": {"message": str(self), "type": self.kind, "param": self.param, "code": code}
        }


def _invalid(message: str, param: str | None = None) -> APIError:
    return APIError(HTTPStatus.BAD_REQUEST, message, "invalid_request_error", param)


def parse_request(body: dict, model_id: str) -> tuple[list[dict], ChatParams, bool]:
    """Messages, decoding parameters and the stream flag of a chat-completions request."""
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("you must provide a model parameter", "model")
    if model != model_id:
        raise APIError(
            HTTPStatus.NOT_FOUND,
            f"the model {model!r} does not exist; this server serves {model_id!r}",
            "invalid_request_error",
            "model",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty array", "messages")
    clean = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "developer",
            "user",
            "assistant",
        ):
            raise _invalid(f"messages[{index}] needs a role of system, user or assistant")
        content = message.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise _invalid(f"messages[{index}].content must be a string", "messages")
        role = "system" if message["role"] == "developer" else message["role"]
        clean.append({"role": role, "content": content})
    if body.get("n", 1) != 1:
        raise _invalid("only n=1 is supported", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or DEFAULT_MAX_TOKENS
    temperature = body.get("temperature")
    temperature = DEFAULT_TEMPERATURE if temperature is None else temperature
    seed = body.get("seed") or 0
    for name, value, low in (("max_tokens", max_tokens, 1), ("seed", seed, None)):
        if not isinstance(value, int) or isinstance(value, bool) or (low and value < low):
            raise _invalid(f"'{name}' must be an integer" + (f" >= {low}" if low else ""), name)
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise _invalid("'temperature' must be a number between 0 and 2", "temperature")
    return clean, ChatParams(max_tokens, float(temperature), seed), bool(body.get("stream"))


def make_handler(chat: ChatModel) -> type[BaseHTTPRequestHandler]:
    """A request handler class answering with ``chat``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "expllm-serve-llm"

        def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's name
            sys.stderr.write(f"serve-llm: {self.address_string()} {format % args}\n")

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") == "/v1/models":
                self._json(
                    HTTPStatus.OK,
                    {
                        "object": "list",
                        "data": [
                            {
                                "id": chat.model,
                                "object": "model",
                                "created": 0,
                                "owned_by": "expllm",
                            }
                        ],
                    },
                )
            elif self.path == "/health":
                self._json(HTTPStatus.OK, {"status": "ok", "model": chat.model})
            else:
                self._error(APIError(HTTPStatus.NOT_FOUND, f"no route {self.path}", "not_found"))

        def do_POST(self):  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(APIError(HTTPStatus.NOT_FOUND, f"no route {self.path}", "not_found"))
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    raise _invalid(f"request body over {MAX_BODY_BYTES} bytes")
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise _invalid(f"the body is not valid JSON: {exc}") from exc
                messages, params, stream = parse_request(body, chat.model)
                answer = chat.complete_many([messages], params)[0]
                if answer.error is not None:
                    raise APIError(HTTPStatus.INTERNAL_SERVER_ERROR, answer.error, "server_error")
            except APIError as exc:
                self._error(exc)
                return
            except Exception as exc:  # noqa: BLE001 - answered as a 500 in the OpenAI shape
                self._error(
                    APIError(
                        HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"{type(exc).__name__}: {exc}",
                        "server_error",
                    )
                )
                return
            completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
            created = int(time.time())
            usage = {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            }
            if stream:
                self._stream(completion_id, created, answer.text, answer.finish_reason, usage)
                return
            self._json(
                HTTPStatus.OK,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": chat.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer.text},
                            "logprobs": None,
                            "finish_reason": answer.finish_reason,
                        }
                    ],
                    "usage": usage,
                },
            )

        def _stream(self, cid: str, created: int, text: str, finish: str, usage: dict) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            base = {"id": cid, "object": "chat.completion.chunk", "created": created}
            deltas = [
                ({"role": "assistant", "content": ""}, None),
                ({"content": text}, None),
                ({}, finish),
            ]
            for delta, reason in deltas:
                chunk = {
                    **base,
                    "model": chat.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
                }
                if reason is not None:
                    chunk["usage"] = usage
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def _json(self, status: HTTPStatus, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, exc: APIError) -> None:
            self._json(exc.status, exc.body())

    return Handler


def make_server(host: str, port: int, chat: ChatModel) -> ThreadingHTTPServer:
    """A bound (not yet serving) server; ``server.server_address[1]`` is the port."""
    server = ThreadingHTTPServer((host, port), make_handler(chat))
    server.daemon_threads = True
    return server


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: str = "local",
    model: str | None = None,
    port_file: str | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM; writes the bound port to ``port_file`` when given."""
    if backend not in SERVED:
        raise ValueError(
            f"unknown serve-llm back end {backend!r}; choose one of {', '.join(SERVED)}"
        )
    chat = CHAT_MODELS.create(backend, model=model)
    server = make_server(host, port, chat)
    bound = server.server_address[1]
    if port_file:
        tmp = Path(f"{port_file}.tmp")
        tmp.write_text(str(bound))
        tmp.replace(port_file)
    print(f"serve-llm: {chat.model} on http://{host}:{bound}/v1", file=sys.stderr, flush=True)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        chat.close()
