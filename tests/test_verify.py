import json

import pytest

from engine.cot.render import CoTRenderer
from engine.cot.rules import RuleBook, ranked_emotions
from engine.cot.verify import (
    completeness,
    conclusion_label,
    description_of,
    emotions_in,
    evidence_claims,
    infer_label,
    mentioned_aus,
    meta_terms,
    misstated_evidence,
    quoted_evidence,
    quoted_intensities,
    verify,
)
from engine.types import EMOTIONS
from tests.test_render import random_readings

EXACT = (
    "**Key Observations:** AU12 (lip corner puller) is marked and the brow lowerer is absent "
    "from the measurements.\n\n**Overall Emotional Interpretation:** A happy display.\n\n"
    "**Conclusion:** The expression is **happiness**."
)


def test_mentions_by_number_and_name():
    assert mentioned_aus(EXACT) == ("AU04", "AU12")
    assert mentioned_aus("AU 6 with au1 and AU25B") == ("AU01", "AU06", "AU25")
    assert mentioned_aus("no action units named here") == ()


def test_faithfulness_counts_unmeasured_mentions():
    check = verify(EXACT, "happiness", {"AU12"})
    assert check.faithfulness == pytest.approx(0.5)
    assert check.unmeasured_aus == ("AU04",)
    assert not check.verified
    assert "AU04" in check.reason
    assert verify(EXACT, "happiness", {"AU12", "AU04"}).verified


def test_des2exp_reads_the_description_not_the_conclusion():
    assert description_of(EXACT) == (
        "**Key Observations:** AU12 (lip corner puller) is marked and the brow lowerer is absent "
        "from the measurements.\n\n**Overall Emotional Interpretation:** A happy display."
    )
    assert infer_label(EXACT) == "happiness"
    # a Conclusion that names another emotion than the description changes nothing
    contrary = EXACT.replace("The expression is **happiness**.", "The expression is **sadness**.")
    assert infer_label(contrary) == "happiness" and conclusion_label(contrary) == "sadness"
    check = verify(contrary, "sadness", {"AU12", "AU04"})
    assert not check.verified and "the description alone reads as happiness, not sadness" in (
        check.reason
    )
    # the interpretation's emphasised emotion is its verdict; else the most-named emotion
    verdict = EXACT.replace(
        "A happy display.", "Sadness fits the brows, but the face reads as **anger**."
    )
    assert infer_label(verdict) == "anger"
    plain = EXACT.replace("A happy display.", "She looks angry and tense, angry above all.")
    assert infer_label(plain) == "anger"
    assert infer_label(EXACT.replace("A happy display.", "Nothing to see.")) is None
    # a text without the Conclusion (what the llm reader gets) reads the same
    assert infer_label(description_of(verdict)) == "anger"


def test_conclusion_label_reads_the_stated_answer():
    assert conclusion_label(EXACT) == "happiness"
    mixed = EXACT.replace(
        "The expression is **happiness**.", "**Sadness**, although the AUs favour happiness."
    )
    assert conclusion_label(mixed) == "sadness"
    plain = EXACT.replace("The expression is **happiness**.", "She looks angry and tense.")
    assert conclusion_label(plain) == "anger"


def test_meta_terms_are_found_and_fail_verification():
    assert meta_terms("The annotated LABEL is x; ground truth of the dataset.") == (
        "annotat",
        "dataset",
        "ground truth",
        "label",
    )
    assert meta_terms(EXACT) == ()
    text = EXACT.replace("A happy display.", "A happy display, as labelled.")
    check = verify(text, "happiness", {"AU12", "AU04"})
    assert not check.verified and check.meta_terms == ("label",)
    assert "instead of the face" in check.reason


def test_completeness_wants_every_active_au_strongest_first_up_to_the_cap():
    text = (
        "**Key Observations:** AU12 (lip corner puller, 3.0/5); the cheek raiser (AU06, 2.0/5); "
        "AU25 (1.6/5).\n\n**Overall Emotional Interpretation:** A smile; **happiness**.\n\n"
        "**Conclusion:** The expression is **happiness**."
    )
    active = [("AU06", 2.0), ("AU12", 3.0), ("AU25", 1.6)]
    assert completeness(text, active) == (True, ())
    assert completeness(text, active + [("AU04", 1.5)]) == (False, ("AU04",))
    assert completeness(text, active + [("AU04", 1.5)], cap=3) == (True, ())
    swapped = text.replace("AU25 (1.6/5)", "AU25 (2.6/5)")
    assert completeness(swapped, [("AU06", 2.0), ("AU12", 3.0), ("AU25", 2.6)]) == (False, ())
    check = verify(text, "happiness", {"AU06", "AU12"}, active=active[:2], cap=6)
    assert check.complete is True and check.uncited_aus == ()
    assert verify(text, "happiness", {"AU06", "AU12", "AU25"}).complete is None  # not asked


def test_synonyms_resolve():
    assert emotions_in("joyful, afraid, surprised, disgusted") == [
        "happiness",
        "fear",
        "surprise",
        "disgust",
    ]


def test_format_failure_is_reported():
    check = verify("The face looks happy.", "happiness", set())
    assert not check.format_ok and not check.verified
    assert check.inferred_label == "happiness"


def test_reads_labels_of_the_papers_cots(shared_dir):
    records = json.loads((shared_dir / "reference" / "expllm_rafdb_test_cot.json").read_text())
    labels = [r["emo"].lower() for r in records]
    stated = sum(
        conclusion_label(r["description"]) == y for r, y in zip(records, labels, strict=True)
    )
    described = sum(
        infer_label(r["description"]) == y for r, y in zip(records, labels, strict=True)
    )
    # the released CoTs were verified against their labels: their Conclusions state nearly all;
    # the descriptions alone (Des2Exp) carry most: 86.5 % (neutral faces are often read as
    # the mild emotions their descriptions discuss)
    assert stated / len(records) > 0.9
    assert described / len(records) > 0.84


def test_quoted_intensities_must_match_the_measured_ones():
    text = (
        "**Key Observations:** AU12 (lip corner puller) at pronounced intensity (D, 4.0/5); "
        "AU07 (lid tightener) at marked intensity (C, 2.6/5).\n\n"
        "**Overall Emotional Interpretation:** A happy smile.\n\n"
        "**Conclusion:** The expression is **happiness**."
    )
    assert quoted_intensities(text) == {"AU12": 4.0, "AU07": 2.6}
    active = frozenset({"AU07", "AU12"})
    assert verify(text, "happiness", active, intensities={"AU12": 3.96, "AU07": 2.64}).verified
    check = verify(text, "happiness", active, intensities={"AU12": 3.5, "AU07": 2.6})
    assert check.misquoted_aus == ("AU12",) and not check.verified
    assert "misquotes the intensity of AU12" in check.reason
    assert verify(text, "happiness", active).verified  # no intensities: no check


def test_quoted_evidence_shares_must_match_the_rules():
    text = (
        "**Key Observations:** AU04 (brow lowerer) at marked intensity (C, 2.6/5).\n\n"
        "**Overall Emotional Interpretation:** Weighing each unit, anger carries the most "
        "evidence (31 %), followed by sadness (19 %). The brows are drawn. Taken together, "
        "the face reads as **anger**.\n\n"
        "**Conclusion:** The expression is **anger**."
    )
    assert quoted_evidence(text) == {"anger": 31.0, "sadness": 19.0}
    active = frozenset({"AU04"})
    assert verify(text, "anger", active, evidence={"anger": 0.3061, "sadness": 0.1949}).verified
    check = verify(text, "anger", active, evidence={"anger": 0.23, "sadness": 0.31})
    assert check.misstated_evidence == ("anger", "sadness") and not check.verified
    assert "misstates the measured evidence for anger, sadness" in check.reason
    assert verify(text, "anger", active).verified  # no evidence: no check


def test_template_texts_state_the_evidence_they_were_rendered_from():
    """Every share the templates quote and every emotion they say the evidence favours is the
    rules' (for every expected label, supported or not); the same text read against another
    face's evidence is caught."""
    rules = RuleBook.load()
    renderer = CoTRenderer(threshold=rules.active_threshold)
    quoting = claiming = caught = 0
    for index, reading in enumerate(random_readings(96, seed=5)):
        evidence = rules.evaluate(reading)
        label = EMOTIONS[index % len(EMOTIONS)]
        text = renderer.render(f"r{index}", label, evidence).cot.text
        quoting += bool(quoted_evidence(text))
        claims = evidence_claims(text)
        claiming += bool(claims)
        assert not misstated_evidence(text, evidence.scores), text
        assert set(claims) <= {ranked_emotions(evidence.scores)[0]}, text
        other = dict.fromkeys(EMOTIONS, 0.0) | {label: 0.5}  # evidence led by the label
        caught += bool(misstated_evidence(text, other))
    assert quoting and claiming > 48 and caught


def test_evidence_claims_name_the_leading_emotion():
    text = (
        "**Key Observations:** AU04 (brow lowerer) at marked intensity (C, 2.6/5).\n\n"
        "**Overall Emotional Interpretation:** Read together, the movements of the brows form a "
        "pattern that is most typical of Anger. Taken together, the face reads as **anger**."
        "\n\n**Conclusion:** Therefore, the expression is **anger**, the reading best "
        "supported by the measured units."
    )
    assert evidence_claims(text) == ["anger", "anger"]
    assert ranked_emotions({"anger": 0.4, "sadness": 0.4})[0] == "sadness"  # EMOTIONS order
    assert verify(text, "anger", frozenset({"AU04"}), evidence={"anger": 0.4}).verified
    check = verify(text, "anger", frozenset({"AU04"}), evidence={"anger": 0.2, "fear": 0.3})
    assert check.misstated_evidence == ("anger",)
