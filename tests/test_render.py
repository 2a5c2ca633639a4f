import itertools
import random

import pytest

from engine.aus import au_definitions
from engine.cot.format import CoT
from engine.cot.render import DEFAULT_VARIANTS, CoTRenderer
from engine.cot.rules import RuleBook
from engine.cot.support import support
from engine.cot.verify import conclusion_label, description_of, mentioned_aus, meta_terms, verify
from engine.types import EMOTIONS, AUReading


@pytest.fixture(scope="module")
def renderer(rules):
    return CoTRenderer(threshold=rules.active_threshold, max_aus=rules.max_cited_aus)


def random_readings(count, seed=0):
    rng = random.Random(seed)
    codes = list(au_definitions())
    for _ in range(count):
        chosen = rng.sample(codes, rng.randint(0, 10))
        intensities = {c: round(rng.uniform(0, 5), 2) for c in chosen}
        sides = {
            c: (round(rng.uniform(0, 5), 2), round(rng.uniform(0, 5), 2))
            for c in chosen
            if rng.random() < 0.3
        }
        yield AUReading(intensities, "test", "v0", sides=sides)


def active_of(evidence):
    return [(a.au, a.intensity) for a in evidence.active]


def test_every_variant_is_used_and_deterministic(renderer, rules):
    evidence = rules.evaluate(AUReading({"AU06": 2.0, "AU12": 3.0}, "t", "v"))
    seen = {renderer.render(f"id-{i}", "happiness", evidence).template_id for i in range(60)}
    assert {t.split("@")[0] for t in seen} == {f"cot/{v}" for v in DEFAULT_VARIANTS}
    first = renderer.render("same-id", "happiness", evidence)
    assert renderer.render("same-id", "happiness", evidence) == first


@pytest.mark.parametrize("table", ["hand-set", "mesh"])
def test_random_readings_give_faithful_complete_cots_whose_description_leads_on(table, rules):
    """Every text: exact format, faithful, complete, no annotation talk, within the word cap.
    Its description reads as the expected emotion whenever a measured cue is consistent with
    it; else (and only then) it arrives at the rules' own reading, and says so."""
    book = rules if table == "hand-set" else RuleBook.for_backend("mesh")
    renderer = CoTRenderer(threshold=book.active_threshold, max_aus=book.max_cited_aus)
    outcomes = set()
    for index, (reading, label) in enumerate(
        zip(random_readings(400), itertools.cycle(EMOTIONS), strict=False)
    ):
        evidence = book.evaluate(reading)
        rendered = renderer.render(f"rec-{index}", label, evidence)
        text = rendered.cot.text
        assert CoT.is_exact(text)
        assert 60 <= rendered.cot.word_count <= 210, text
        measured = {a.au for a in evidence.active}
        assert set(mentioned_aus(text)) <= measured, text
        check = verify(text, label, measured, active=active_of(evidence), cap=book.max_cited_aus)
        assert check.complete, (check.uncited_aus, text)
        assert check.faithfulness == 1.0 and not check.meta_terms, text
        assert f"**{label}**" in rendered.cot.conclusion and conclusion_label(text) == label
        cues = support(evidence, label)
        if cues.supported or cues.has_cues:
            assert check.verified, (check.reason, text)
            outcomes.add("leads to the label")
        else:
            assert check.inferred_label == evidence.dominant and not check.verified, text
            assert f"No measured movement is typical of {label}" in text
            outcomes.add("says no cue fits")
        if not cues.supported and cues.contrary is not None:
            assert f"The strongest contrary cue is {cues.contrary.au} ({cues.contrary.name})" in (
                text
            )
    assert outcomes == {"leads to the label", "says no cue fits"}


def test_a_contrary_face_states_the_contrary_cue_and_the_consistent_ones(renderer, rules):
    evidence = rules.evaluate(AUReading({"AU04": 2.6, "AU07": 2.0, "AU12": 1.7}, "t", "v"))
    assert evidence.dominant == "anger"
    for record_id in ("a", "b", "c", "d", "e"):
        cot = renderer.render(record_id, "happiness", evidence).cot
        assert "The strongest contrary cue is AU04 (brow lowerer) at marked intensity" in (
            cot.interpretation
        )
        assert "which weighs most towards anger" in cot.interpretation
        assert "Consistent with happiness is AU12 (lip corner puller) at slight intensity" in (
            cot.interpretation
        )
        assert cot.interpretation.endswith(
            "the face reads as **happiness**, with anger as the competing reading."
        )
        assert "**happiness**" in cot.conclusion
        assert verify(cot.text, "happiness", {"AU04", "AU07", "AU12"}).verified


def test_no_consistent_cue_is_said_plainly(renderer, rules):
    evidence = rules.evaluate(AUReading({"AU06": 3.0, "AU12": 4.0}, "t", "v"))
    for record_id in ("a", "b", "c", "d", "e"):
        cot = renderer.render(record_id, "surprise", evidence).cot
        assert "No measured movement is typical of surprise" in cot.interpretation
        assert "reads as **happiness** rather than surprise" in cot.interpretation
        assert "**surprise**" in cot.conclusion
        check = verify(cot.text, "surprise", {"AU06", "AU12"})
        assert check.inferred_label == "happiness" and not check.verified


def test_unlabelled_face_concludes_from_evidence(renderer, rules):
    evidence = rules.evaluate(AUReading({"AU06": 3.0, "AU12": 4.0}, "t", "v"))
    cot = renderer.render("x", None, evidence).cot
    assert "**happiness**" in cot.conclusion and "**happiness**" in cot.interpretation
    assert not meta_terms(cot.text)
    assert verify(cot.text, None, {"AU06", "AU12"}).inferred_label == "happiness"
    assert "Conclusion" not in description_of(cot.text)


def test_every_active_au_is_cited_strongest_first_up_to_the_cap(rules):
    renderer = CoTRenderer(max_words=90, max_aus=4)
    aus = {"AU01": 3.9, "AU02": 3.5, "AU04": 3.1, "AU05": 2.7, "AU07": 2.3, "AU20": 2.0}
    evidence = rules.evaluate(AUReading(aus, "t", "v"))
    for record_id in ("a", "b", "c", "d"):
        cot = renderer.render(record_id, "fear", evidence).cot
        check = verify(cot.text, "fear", set(aus), active=list(aus.items()), cap=4)
        assert check.complete, cot.text
        assert set(mentioned_aus(cot.observations)) >= {"AU01", "AU02", "AU04", "AU05"}
        assert "2" in cot.observations  # the two weaker units are counted, not named
        assert not verify(cot.text, "fear", set(aus), active=list(aus.items()), cap=6).complete


@pytest.mark.parametrize("table", ["hand-set", "mesh"])
def test_texts_keep_to_the_nano_models_au_grounding(table, rules):
    """engine.model.decoding's AU grounding (the nano ExpLLM's guided decoding) allows every prefix
    of the templates' texts, for faces read as another emotion than the rules' too."""
    from engine.model.decoding import AUGrounding

    book = rules if table == "hand-set" else RuleBook.for_backend("mesh")
    renderer = CoTRenderer(threshold=book.active_threshold, max_aus=book.max_cited_aus)
    for index, (reading, label) in enumerate(
        zip(random_readings(40, seed=5), itertools.cycle(EMOTIONS), strict=False)
    ):
        text = renderer.render(f"g{index}", label, book.evaluate(reading)).cot.text
        grounding = AUGrounding.from_intensities(reading.intensities, book)
        refused = [k for k in range(1, len(text) + 1, 5) if not grounding.allows(text[:k])]
        assert not refused and grounding.may_end(text), text[: (refused or [len(text)])[0]]


def test_the_contrary_cue_is_not_also_named_as_consistent():
    """AU16 adds to anger and to happiness in the mesh table; AU26 pulls towards anger only."""
    book = RuleBook.for_backend("mesh")
    renderer = CoTRenderer(threshold=book.active_threshold, max_aus=book.max_cited_aus)
    evidence = book.evaluate(AUReading({"AU16": 3.9, "AU26": 3.1}, "t", "v"))
    assert evidence.dominant == "anger"
    cues = support(evidence, "happiness")
    assert cues.contrary.au == "AU26" and [a.au for a in cues.consistent] == ["AU16"]
    text = renderer.render("a", "happiness", evidence).cot.interpretation
    assert "contrary cue is AU26" in text and "Consistent with happiness is AU16" in text
    alone = book.evaluate(AUReading({"AU16": 3.9}, "t", "v"))
    if alone.dominant == "anger":  # one movement on both sides: said so
        text = renderer.render("a", "happiness", alone).cot.interpretation
        assert "The same movement is also consistent with happiness" in text
