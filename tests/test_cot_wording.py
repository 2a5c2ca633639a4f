"""The wording checks of CoT texts (engine/evaluation/cot_quality.py): on the paper's released
RAF-DB CoTs and on hand-written bad cases."""

import json

import pytest

from engine.cot.verify import interpretation_lead
from engine.cot.vocabulary import vocabulary
from engine.evaluation.cot_quality import interpretation_agrees, non_words, wording
from engine.evaluation.scoring import Prediction, cot_metrics

GOOD = (
    "**Key Observations:** AU06 (cheek raiser) at C, 3.1/5 and AU12 (lip corner puller) at D, "
    "4.0/5 are active on both sides.\n\n"
    "**Overall Emotional Interpretation:** The raised cheeks with pulled lip corners read as "
    "**happiness**, a genuine Duchenne smile.\n\n"
    "**Conclusion:** The expression is **happiness**."
)
#: The interpretation leads with sadness, the conclusion says anger.
DISAGREES = (
    "**Key Observations:** AU04 (brow lowerer) at B.\n\n"
    "**Overall Emotional Interpretation:** Lowered brows suggest sadness, perhaps anger.\n\n"
    "**Conclusion:** The expression is **anger**."
)
#: Garbled tokens of a small model, an unknown AU code and talk of the label.
GARBLED = (
    "**Key Observations:** AU12 (lip cornerpullr) at D; AU77 xqzt raised.\n\n"
    "**Overall Emotional Interpretation:** The annotated label is happiness.\n\n"
    "**Conclusion:** The expression is **happiness**."
)


def test_hand_written_cases():
    assert non_words(GOOD) == []
    assert non_words(GARBLED) == ["cornerpullr", "AU77", "xqzt"]
    assert interpretation_lead(DISAGREES) == "sadness" and not interpretation_agrees(DISAGREES)
    assert interpretation_agrees(GOOD)
    assert interpretation_lead("happy face, AU12") is None  # no sections: does not agree
    checks = wording([GOOD, DISAGREES, GARBLED])
    assert checks.interpretation_agreement == pytest.approx(2 / 3)
    assert checks.non_word_cots == pytest.approx(1 / 3)
    assert checks.annotation_wording == pytest.approx(1 / 3)  # "annotated label"
    assert set(checks.non_words) == {"cornerpullr", "au77", "xqzt"}
    assert 0 < checks.non_word_tokens < 0.1


def test_words_numbers_and_facs_codes():
    for token in (
        "AU01",
        "AU46",
        "au12",
        "AU12E",
        "C",
        "4.0",
        "3",
        "raiser",
        "smiles",
        "lip-corner",
    ):
        assert vocabulary().is_word(token), token
    for token in ("AU47", "AU00", "F", "zzq", "lipcornr"):
        assert not vocabulary().is_word(token), token


def test_cot_metrics_carry_the_wording_checks():
    cot = cot_metrics([Prediction("a", "happiness", cot=GARBLED)], [None])
    assert cot.annotation_wording == 1.0 and cot.non_word_cots == 1.0
    assert cot.interpretation_agreement == 1.0


def test_the_papers_released_cots(shared_dir):
    path = shared_dir / "reference" / "expllm_rafdb_test_cot.json"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    texts = [item["description"] for item in json.loads(path.read_text())]
    assert len(texts) == 3068
    checks = wording(texts)
    # GPT-written prose: the conclusion mostly follows the interpretation's lead, nearly every
    # token is a word, and almost none speaks of labels
    assert 0.8 < checks.interpretation_agreement < 0.9
    assert checks.non_word_tokens < 0.01
    assert checks.annotation_wording < 0.01


def test_every_word_of_our_template_cots_is_known():
    """Rendered template CoTs (a run's shards) hold only known words, for the wording check and
    for grounded decoding alike: one vocabulary (``engine.cot.vocabulary``)."""
    from pathlib import Path

    from engine.cot.vocabulary import vocabulary
    from engine.store.stats import read_shards

    run = Path(__file__).resolve().parents[1] / "runs" / "v13-test"
    if not any(run.glob("shard-*.parquet")):
        pytest.skip(f"{run} has no shards")
    texts = list(read_shards(run, ["cot_text"])["cot_text"].dropna().head(400))
    assert len(texts) >= 200
    assert [w for t in texts for w in non_words(t)] == []
    words = vocabulary()
    assert all(words.allows(t, tail=len(t)) for t in texts)
