import pytest

from engine.cot.au_references import misnamed_aus
from engine.cot.render import CoTRenderer
from engine.cot.verify import mentioned_aus, verify
from tests.test_render import random_readings


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("AU05 (upper lip raiser) at slight intensity", ("AU05 (upper lip raiser)",)),
        ("AU04B (outer brow raisers) at slight", ("AU04B (outer brow raisers)",)),
        ("Consistent with surprise is AU1_25 (lower lip depressor)", ("AU1_25",)),
        ("the strongest measured up to AU1.5C and AU0.", ("AU1.5C", "AU0")),
        ("AU123 is no unit", ("AU123",)),
        # right as written: its own name, in any case, a plural, other wordings, quotes
        ("AU05 (upper lid raiser) at slight intensity (B, 1.6/5)", ()),
        ("AU12 (Lip Corner Puller) and AU06B (cheek raisers)", ()),
        ("AU12 (a smile), AU 6 with au1 and AU25B", ()),
        ("no action units named here", ()),
    ],
)
def test_finds_references_wrong_as_written(text, wrong):
    assert misnamed_aus(text) == wrong


def test_names_in_the_plural_are_mentions():
    assert mentioned_aus("the outer brow raisers and the lip corner puller") == ("AU02", "AU12")


def test_a_misnamed_unit_is_unfaithful_even_when_measured():
    text = "**Key Observations:** AU05 (upper lip raiser) at slight intensity."
    check = verify(text, None, {"AU05", "AU10"})
    assert check.misnamed_aus == ("AU05 (upper lip raiser)",)
    assert check.faithfulness == pytest.approx(2 / 3)  # AU05, AU10 (by name), the misnaming
    assert not check.verified and "refers to AUs wrongly: AU05 (upper lip raiser)" in check.reason
    right = verify(text.replace("lip", "lid"), None, {"AU05"})
    assert right.faithfulness == 1.0 and right.misnamed_aus == ()


def test_the_templates_refer_to_every_unit_rightly(rules):
    renderer = CoTRenderer(threshold=rules.active_threshold)
    for index, reading in enumerate(random_readings(60, seed=11)):
        evidence = rules.evaluate(reading)
        for label in (None, "anger", "neutral"):
            text = renderer.render(f"r{index}", label, evidence).cot.text
            assert misnamed_aus(text) == (), text
