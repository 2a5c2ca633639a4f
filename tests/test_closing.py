"""The bounds within which grounded decoding lets the model reason (engine.model.closing) and
the word check it shares with the evaluation (engine.cot.vocabulary)."""

from engine.cot.vocabulary import vocabulary
from engine.evaluation.cot_quality import non_words
from engine.model.closing import VERDICT_OPENING, reasoning_closes

HEAD = "**Key Observations:** AU12 (lip corner puller).\n\n**Overall Emotional Interpretation:** "
FACTS = len(HEAD) + len("Stated facts.")


def test_an_overdue_verdict_must_open_and_is_offered():
    text = HEAD + "Stated facts. One. Two. Three."
    ok, rests = reasoning_closes(text, FACTS)
    assert ok and rests == [VERDICT_OPENING]
    assert reasoning_closes(text + " Weigh", FACTS) == (True, [VERDICT_OPENING[6:]])
    assert not reasoning_closes(text + " The", FACTS)[0]
    assert reasoning_closes(text + VERDICT_OPENING, FACTS)[0]
    # without stated facts the templates' longer interpretations pass
    assert reasoning_closes(text + " The", 0)[0]


def test_a_verdict_is_followed_by_the_conclusion_of_one_sentence():
    verdict = HEAD + "It reads as **happiness**."
    assert reasoning_closes(verdict, 0) == (True, ["\n\n**Conclusion:** "])
    assert not reasoning_closes(verdict + " More", 0)[0]
    done = verdict + "\n\n**Conclusion:** The expression is **happiness** (B, 2.1/5)."
    assert reasoning_closes(done, 0)[0]
    assert not reasoning_closes(done + " The term", 0)[0]


def test_a_long_sentence_may_only_finish_its_word():
    sentence = HEAD + "Stated facts." + (" word" * 96)  # 480 characters of its own
    assert reasoning_closes(sentence + "ing", FACTS)[0]
    assert not reasoning_closes(sentence + "ing more", FACTS)[0]


def test_decoding_refuses_what_the_evaluation_counts_as_non_words():
    words = vocabulary()
    for text in ("There is tension. Ther12 core", "up-and-b.", "AU25R ", "MART0 "):
        assert non_words(text), text
        assert not words.allows(text), text
    for text in ("AU12 (lip", "prototype 12+25B (Du)", "R12A", "(B, 1.6/5),", "AU0"):
        assert words.allows(text), text


def test_after_the_facts_of_a_planned_reading_the_verdict_comes_next():
    """Those facts state all the templates say before the verdict: no sentence of its own."""
    text = HEAD + "Stated facts."
    assert reasoning_closes(text, FACTS, planned=True) == (True, [VERDICT_OPENING])
    assert not reasoning_closes(text + " One.", FACTS, planned=True)[0]
    assert reasoning_closes(text + VERDICT_OPENING, FACTS, planned=True)[0]
    assert reasoning_closes(text + " One.", FACTS)[0]  # facts of no planned reading
