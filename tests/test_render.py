import itertools
import random

import pytest

from engine.aus import au_definitions
from engine.cot import CoT
from engine.render import DEFAULT_VARIANTS, CoTRenderer
from engine.rules import RuleBook
from engine.types import EMOTIONS, AUReading
from engine.verify import mentioned_aus, verify


@pytest.fixture(scope="module")
def rules():
    return RuleBook.load()


@pytest.fixture(scope="module")
def renderer(rules):
    return CoTRenderer(threshold=rules.active_threshold)


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


def test_every_variant_is_used_and_deterministic(renderer, rules):
    evidence = rules.evaluate(AUReading({"AU06": 2.0, "AU12": 3.0}, "t", "v"))
    seen = {renderer.render(f"id-{i}", "happiness", evidence).template_id for i in range(60)}
    assert {t.split("@")[0] for t in seen} == {f"cot/{v}" for v in DEFAULT_VARIANTS}
    first = renderer.render("same-id", "happiness", evidence)
    assert renderer.render("same-id", "happiness", evidence) == first


def test_random_readings_give_faithful_exact_cots(renderer, rules):
    for index, (reading, label) in enumerate(
        zip(random_readings(400), itertools.cycle(EMOTIONS), strict=False)
    ):
        evidence = rules.evaluate(reading)
        rendered = renderer.render(f"rec-{index}", label, evidence)
        text = rendered.cot.text
        assert CoT.is_exact(text)
        assert 60 <= rendered.cot.word_count <= 160, text
        measured = {a.au for a in evidence.active}
        assert set(mentioned_aus(text)) <= measured, text
        check = verify(text, label, measured)
        assert check.verified, (check.reason, text)
        assert f"**{label}**" in rendered.cot.conclusion


def test_disagreement_is_stated_honestly(renderer, rules):
    evidence = rules.evaluate(AUReading({"AU06": 3.0, "AU12": 4.0}, "t", "v"))
    for record_id in ("a", "b", "c", "d", "e"):
        cot = renderer.render(record_id, "sadness", evidence).cot
        assert "happiness" in cot.interpretation or "happiness" in cot.conclusion
        assert "**sadness**" in cot.conclusion
        assert "differs" in cot.interpretation


def test_unlabelled_face_concludes_from_evidence(renderer, rules):
    evidence = rules.evaluate(AUReading({"AU06": 3.0, "AU12": 4.0}, "t", "v"))
    cot = renderer.render("x", None, evidence).cot
    assert "**happiness**" in cot.conclusion
    assert "No annotation" in cot.interpretation


def test_long_au_lists_are_shortened_to_the_word_cap(rules):
    renderer = CoTRenderer(max_words=90)
    evidence = rules.evaluate(
        AUReading(
            {c: 3.0 for c in ("AU01", "AU02", "AU04", "AU05", "AU07", "AU20", "AU26")}, "t", "v"
        )
    )
    cot = renderer.render("x", "fear", evidence).cot
    assert cot.word_count <= 90 or len(mentioned_aus(cot.text)) <= 1
