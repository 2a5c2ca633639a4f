"""No CoT speaks of annotations, labels, datasets or ground truth: every template, macro, prompt
and writer reasons from the face alone (issue 11).

Checked on the template sources themselves (every branch, rendered or not), on synthetic
readings through every variant with both rule tables (hand-set and fitted), on the prompts of
the LLM writer and reader, on the LLM writer's drafts (the ``template`` chat back end), and on
the template writer over real FER+ faces when ``../shared`` is present.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from engine.cot.format import CoT
from engine.cot.render import DEFAULT_VARIANTS, CoTRenderer
from engine.cot.rules import RuleBook
from engine.cot.verify import META_TERMS, infer_label, mentioned_aus, meta_terms, verify
from engine.cot.writers import CHAT_MODELS, ChatClient, ChatParams, LLMWriter, WriteRequest
from engine.cot.writers.prompts import PromptBook
from engine.resources import templates_dir
from engine.types import EMOTIONS, AUReading
from tests.test_render import random_readings

#: Jinja markup: what a template outputs is the text outside it (and what its expressions give).
_MARKUP = re.compile(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
#: Words of a text that reasons from the face.
_FACE_WORDS = re.compile(
    r"\b(face|facial|AU\d{2}|action units?|movements?|brows?|eyes?|mouth|lips?|cheeks?|jaw|"
    r"activity|resting)\b",
    re.IGNORECASE,
)


def tables() -> list[tuple[str, RuleBook]]:
    return [("hand-set", RuleBook.load()), ("mesh", RuleBook.for_backend("mesh"))]


@pytest.mark.parametrize("folder", ["cot", "prompts"])
def test_template_sources_never_speak_of_annotations(folder):
    """The literal text of every CoT template, macro and prompt, all branches included."""
    files = sorted((templates_dir() / folder).glob("*.j2"))
    assert files
    for path in files:
        literal = _MARKUP.sub(" ", path.read_text())
        assert not meta_terms(literal), (path.name, meta_terms(literal))


def _readings():
    """Synthetic faces covering every branch: rest, one unit, prototypes, mixtures, many units
    (compact forms), unilateral units, random ones."""
    fixed = [
        {},
        {"AU12": 1.6},
        {"AU06": 3.0, "AU12": 4.0},
        {"AU04": 2.6, "AU07": 2.0, "AU12": 1.7},
        {"AU01": 2, "AU04": 2.5, "AU15": 3},
        {"AU01": 3, "AU02": 3, "AU05": 2, "AU26": 3},
        {"AU09": 3, "AU15": 2, "AU16": 2},
        {"AU43": 2.9, "AU07": 2.2},
        {c: 3.0 for c in ("AU01", "AU02", "AU04", "AU05", "AU07", "AU20", "AU26", "AU16")},
    ]
    yield from (AUReading(aus, "test", "v0") for aus in fixed)
    yield AUReading(
        {"AU12": 2.3, "AU14": 2.8}, "test", "v0", sides={"AU12": (0.1, 2.3), "AU14": (0.4, 2.8)}
    )
    yield from random_readings(120, seed=11)


@pytest.mark.parametrize("name, book", tables(), ids=[n for n, _ in tables()])
def test_every_variant_reasons_from_the_face(name, book):
    for variant in DEFAULT_VARIANTS:
        renderer = CoTRenderer(
            variants=(variant,), threshold=book.active_threshold, max_aus=book.max_cited_aus
        )
        for index, (reading, label) in enumerate(itertools.product(_readings(), (*EMOTIONS, None))):
            evidence = book.evaluate(reading)
            cot = renderer.render(f"{variant}-{index}", label, evidence).cot
            _assert_reads_as_reasoning(cot.text, {a.au for a in evidence.active})


def _assert_reads_as_reasoning(text: str, measured: set[str]) -> None:
    assert not meta_terms(text), text
    cot = CoT.parse(text)
    assert set(mentioned_aus(text)) <= measured, text
    # each section speaks of the face and its movements
    for section in (cot.observations, cot.interpretation):
        assert _FACE_WORDS.search(section), section
    # the interpretation arrives at an emotion of its own (its bold verdict)
    assert re.search(r"\*\*[a-z]+\*\*\.?[^*]*$", cot.interpretation), cot.interpretation
    assert infer_label(text) in EMOTIONS


def test_prompts_never_speak_of_annotations():
    book = RuleBook.for_backend("mesh")
    renderer = CoTRenderer(threshold=book.active_threshold, max_aus=book.max_cited_aus)
    evidence = book.evaluate(AUReading({"AU04": 2.6, "AU07": 2.0, "AU12": 1.7}, "t", "v"))
    for scope in ("sections", "text"):
        prompts = PromptBook(renderer, scope=scope)
        for round_no, label in itertools.product((1, 2), ("happiness", "anger", "surprise")):
            history = (("an earlier draft", "the description alone reads as anger, not x"),)
            request = WriteRequest("r", label, evidence, round=round_no, history=history)
            if scope == "text":
                conversations = [prompts.writer_messages(request)]
            else:
                conversations = [c for c, _ in prompts.section_messages(request)]
            for conversation in conversations:
                for message in conversation:
                    assert not meta_terms(message["content"]), message["content"]
        text = renderer.render("r", "happiness", evidence).cot.text
        for message in prompts.reader_messages(text):
            assert not meta_terms(message["content"])


def test_llm_writer_drafts_never_speak_of_annotations():
    """The LLM writer (both scopes) through the deterministic ``template`` chat back end, for
    round 1 (no expected emotion) and round 2 (rendered for it)."""
    book = RuleBook.for_backend("mesh")
    renderer = CoTRenderer(threshold=book.active_threshold, max_aus=book.max_cited_aus)
    for scope in ("sections", "text"):
        writer = LLMWriter(
            "openai",
            ChatClient(CHAT_MODELS.create("template")),
            PromptBook(renderer, scope=scope),
            ChatParams(max_tokens=400),
        )
        requests = [
            WriteRequest(f"r{i}", label, book.evaluate(reading), round=1 + i % 2)
            for i, (reading, label) in enumerate(
                zip(_readings(), itertools.cycle(EMOTIONS), strict=False)
            )
        ]
        for request, draft in zip(requests, writer.write(requests), strict=True):
            measured = {a.au for a in request.evidence.active}
            _assert_reads_as_reasoning(CoT.parse(draft.text).text, measured)


def test_template_writer_on_real_ferplus_faces(ferplus_dir: Path, tmp_path):
    """The default pipeline (``mesh`` AUs, the fitted ``data/rules/mesh/`` table, the template
    writer) on FER+ test faces of every class: exact, faithful, complete texts that reason from
    the face and never speak of annotations."""
    pytest.importorskip("mediapipe")
    from engine.data.datasets import read_dataset
    from engine.pipeline import ExpCoTPipeline, PipelineConfig

    records = read_dataset(f"ferplus:{ferplus_dir}", split="test", limit=64).records
    pipeline = ExpCoTPipeline(PipelineConfig(au_backend="mesh"))
    try:
        result = pipeline.run(records)
    finally:
        pipeline.close()
    assert len(result.rows) >= 60
    assert pipeline.rules.backend == "mesh"
    for row in result.rows:
        text = row["cot_text"]
        assert CoT.is_exact(text) and row["faithfulness"] == 1.0 and row["complete"], text
        assert not meta_terms(text) and row["rules_table"].startswith("data/rules/mesh@")
        _assert_reads_as_reasoning(text, set(row["active_aus"]))
        check = verify(text, row["label"], set(row["active_aus"]))
        assert check.inferred_label == row["inferred_label"]
    assert {row["label"] for row in result.rows} == set(EMOTIONS)


def test_meta_terms_list():
    assert META_TERMS == ("annotat", "label", "ground truth", "dataset")
