"""Cue claims (engine.cot.cue_claims): what a CoT says a measured cue does for or against a
reading holds on the rule tables' reading of the face, in the templates' texts, in decoding and
in the evaluation."""

import pytest

from engine.cot.cue_claims import misstated_cues, reading_of
from engine.cot.render import CoTRenderer
from engine.cot.rules import RuleBook
from engine.cot.verify import verify
from engine.evaluation.scoring import Prediction, cot_metrics
from engine.model.decoding import AUGrounding
from engine.types import EMOTIONS, AUReading
from tests.test_render import random_readings

#: A smiling face with a lowered brow and a depressed lip corner: happiness leads; sadness
#: (AU15, AU04, AU06) and anger (AU04) have cues of their own; AU12 is the cue against them.
FACE = {"AU06": 2.6, "AU12": 4.2, "AU04": 1.8, "AU15": 1.5}
OBSERVATIONS = (
    "**Key Observations:** AU12 (lip corner puller) at pronounced intensity (D, 4.2/5); AU06 "
    "(cheek raiser) at marked intensity (C, 2.6/5); AU04 (brow lowerer) at slight intensity "
    "(B, 1.8/5); AU15 (lip corner depressor) at slight intensity (B, 1.5/5).\n\n"
    "**Overall Emotional Interpretation:** "
)


@pytest.fixture(scope="module")
def face(rules):
    return rules.evaluate(AUReading(FACE, "test", ""))


@pytest.mark.parametrize("backend", [None, "fused"])
def test_template_texts_claim_only_what_the_rules_read(backend):
    """Every cue claim the templates write (every variant, every reading, the hand-set and a
    fitted table) holds; every kind of claim occurs; read against another face, some fail."""
    rules = RuleBook.for_backend(backend) if backend else RuleBook.load()
    renderer = CoTRenderer(threshold=rules.active_threshold, max_aus=rules.max_cited_aus)
    kinds = {"Consistent with": 0, "contrary cue is AU": 0, "same movement": 0, "prototype": 0}
    caught = 0
    readings = [rules.evaluate(r) for r in random_readings(120, seed=3)]
    for index, evidence in enumerate(readings):
        for label in EMOTIONS:
            text = renderer.render(f"r{index}-{label}", label, evidence).cot.text
            assert not misstated_cues(text, evidence), text
            for kind in kinds:
                kinds[kind] += kind in text
            caught += bool(misstated_cues(text, readings[index - 1]))
    assert all(kinds.values()), kinds
    assert caught > 50


def test_cues_named_for_a_reading_must_add_evidence_for_it(face):
    text = OBSERVATIONS + "Consistent with sadness is AU15 (lip corner depressor) at slight"
    assert not misstated_cues(text, face)
    assert misstated_cues(OBSERVATIONS + "Consistent with anger is AU06 (cheek raiser)", face) == (
        "AU06 is not consistent with anger",
    )
    # the strongest contrary cue is not also a cue for the reading
    against = OBSERVATIONS + "The strongest contrary cue is AU12 (lip corner puller). "
    assert misstated_cues(against + "Consistent with contempt is AU12.", face) == (
        "AU12 is not consistent with contempt",
    )
    assert (
        misstated_cues(against + "The same movement is also consistent with contempt.", face) == ()
    )
    assert misstated_cues(against + "The same movement is also consistent with anger.", face)


def test_the_contrary_cue_is_the_one_against_the_verdict(face):
    text = OBSERVATIONS + "The strongest contrary cue is {code} (x), which weighs most towards "
    verdict = "happiness. Weighing these cues, the face reads as **sadness**."
    assert not misstated_cues(text.format(code="AU12") + verdict, face)
    assert misstated_cues(text.format(code="AU06") + verdict, face) == (
        "AU06 is not the strongest cue against sadness",
    )
    # before a verdict: it need only be some reading's contrary cue
    assert not misstated_cues(text.format(code="AU12"), face, partial=True)
    assert misstated_cues(text.format(code="AU15"), face, partial=True)
    assert reading_of("**Overall Emotional Interpretation:** ... reads as **fear") == "fear"
    assert reading_of("... reads as **happiness** rather than sadness.") == "sadness"


def test_prototypes_and_a_quiet_face_must_be_measured(face):
    assert not misstated_cues(OBSERVATIONS + "It fits the sadness prototype 4+15 (EMFACS).", face)
    assert misstated_cues(OBSERVATIONS + "It fits the fear prototype 1+2+4 (EMFACS).", face)
    assert not misstated_cues(OBSERVATIONS + "the sadness prototype 4+", face, partial=True)
    assert misstated_cues(OBSERVATIONS + "the sadness prototype 4+", face)  # finished: no match
    quiet = "Consistent with a neutral expression is the low overall activity."
    assert misstated_cues(OBSERVATIONS + quiet, face) == (
        "'low overall activity' does not hold of the face",
    )


def test_decoding_refuses_a_cue_the_rules_do_not_read(rules, face):
    grounding = AUGrounding.from_intensities(
        FACE, rules, evidence=face.scores, rules_reading=face, stated=len(OBSERVATIONS)
    )
    assert grounding.allows(OBSERVATIONS + "Consistent with sadness is AU15")
    together = (
        "Consistent with sadness are AU15 (lip corner depressor) at slight intensity and AU04 "
        "(brow lowerer) at slight intensity, which together match the sadness prototype 4+15 "
        "(EMFACS)."
    )  # the template's words: a parenthesis past a cue's comma is not the cue's own
    assert grounding.allows(OBSERVATIONS + together)
    assert not grounding.allows(OBSERVATIONS + together.replace("4+15", "1+4+15"))
    assert not grounding.allows(OBSERVATIONS + "Consistent with anger is AU06")
    # a consistent claim begun for an emotion no measured cue is consistent with: a dead end,
    # refused at its emotion (the templates say "No measured movement is typical of surprise.")
    assert misstated_cues(OBSERVATIONS + "Consistent with surprise", face, partial=True) == (
        "no measured cue is consistent with surprise",
    )
    assert not misstated_cues(OBSERVATIONS + "Consistent with surprise", face)  # no claim yet
    assert not grounding.allows(OBSERVATIONS + "Consistent with surprise")
    assert grounding.allows(OBSERVATIONS + "Consistent with sadness")
    # a code begun in a claim can only become a code the claim allows
    contrary = OBSERVATIONS + "The strongest contrary cue is AU"
    assert not grounding.allows(contrary + "0")  # no AU0x weighs against any reading
    assert grounding.continuations(contrary + "1") == ["2"]
    assert grounding.continuations(OBSERVATIONS + "Consistent with anger is AU0") == ["4"]
    # claims in the stated facts are the renderer's, not checked again
    stated = AUGrounding.from_intensities(
        FACE, rules, evidence=face.scores, rules_reading=face, stated=10_000
    )
    assert stated.allows(OBSERVATIONS + "Consistent with anger is AU06")


def test_evaluation_reports_the_share_of_texts_whose_cues_hold(face):
    text = (
        OBSERVATIONS + "Consistent with {0} is AU04 (brow lowerer) at slight intensity. Weighing "
        "these cues, the face reads as **{0}**.\n\n**Conclusion:** It is **{0}**."
    )
    predictions = [Prediction(e, e, cot=text.format(e)) for e in ("anger", "surprise")]
    metrics = cot_metrics(predictions, [None, None], rules_readings=[face, face])
    assert metrics.cues_as_measured == pytest.approx(0.5)  # AU04 does not add to surprise
    assert cot_metrics(predictions, [None, None]).cues_as_measured is None
    with pytest.raises(ValueError, match="rule readings"):
        cot_metrics(predictions, [None, None], rules_readings=[face])


@pytest.mark.parametrize("backend", [None, "fused"])
def test_the_facts_of_a_planned_reading_are_all_before_its_verdict(backend):
    """With a planned reading the stated facts are the template's text up to the verdict
    (where the evidence leads elsewhere: the contrary cue and the consistent ones), true, and
    grounded decoding takes them as they are; the model writes the verdict and Conclusion."""
    rules = RuleBook.for_backend(backend) if backend else RuleBook.load()
    renderer = CoTRenderer(threshold=rules.active_threshold, max_aus=rules.max_cited_aus)
    against = 0
    for reading in random_readings(40, seed=11):
        evidence = rules.evaluate(reading)
        for emotion in EMOTIONS:
            facts = renderer.facts(evidence, "evidence", emotion)
            grounding = AUGrounding.from_intensities(
                reading.intensities,
                rules,
                evidence=evidence.scores,
                reading=emotion,
                stated=len(facts),
                rules_reading=evidence,
            )
            assert grounding.allows(facts) and not misstated_cues(facts, evidence), facts
            assert "**" not in facts.partition("Interpretation:**")[2]  # not the verdict
            if emotion != evidence.dominant and evidence.active:
                against += 1
                last = facts.rpartition(". ")[2]
                assert last.startswith(
                    ("Consistent with", "The same movement", "No measured movement is")
                ), facts
    assert against > 100


def test_verification_fails_a_text_that_misstates_a_cue(face):
    """The engine loop's check (``judge`` through ``verify``): a draft whose cues the rules do
    not read is not verified, and the reason (the LLM writer's feedback) names the cue."""
    text = (
        OBSERVATIONS + "Consistent with {0} is {1} at slight intensity. Weighing these cues, "
        "the face reads as **{0}**.\n\n**Conclusion:** The expression is **{0}**."
    )
    active = frozenset(FACE)
    good = verify(text.format("anger", "AU04 (brow lowerer)"), "anger", active, rules_reading=face)
    assert good.verified and good.misstated_cues == ()
    bad = verify(text.format("anger", "AU06 (cheek raiser)"), "anger", active, rules_reading=face)
    assert not bad.verified and bad.misstated_cues == ("AU06 is not consistent with anger",)
    assert "misstates measured cues: AU06 is not consistent with anger" in bad.reason
