import json

import pytest

from engine.cot.format import CoT
from engine.cot.render import CoTRenderer
from engine.cot.rules import RuleBook
from engine.cot.verify import verify
from engine.model.decoding import AUGrounding, DecodingSettings, exact_format_prefix, label_slot
from engine.types import AUReading
from tests.test_render import random_readings

SMILE = {"AU06": 2.63, "AU12": 4.2, "AU04": 0.8}
OBSERVATION = (
    "**Key Observations:** Most prominent is AU12 (lip corner puller) at pronounced intensity "
    "(D, 4.2/5), associated with happiness. Next comes AU06 (cheek raiser) at marked intensity "
    "(C, 2.6/5)"
)


@pytest.fixture(scope="module")
def rules():
    return RuleBook.load()


@pytest.fixture(scope="module")
def smile(rules):
    return AUGrounding.from_intensities(SMILE, rules)


def test_keeps_the_active_aus_with_their_levels_and_names(smile):
    assert set(smile.intensities) == {"AU06", "AU12"}  # AU04 is below threshold
    assert smile.levels == {"AU06": "C", "AU12": "D"}
    assert smile.names["AU12"] == "lip corner puller" and smile.words["AU12"] == "pronounced"


def test_every_prefix_of_a_faithful_template_cot_is_allowed(rules):
    """The rule templates name measured AUs only, so no prefix of theirs is refused."""
    renderer = CoTRenderer(threshold=rules.active_threshold)
    for index, reading in enumerate(random_readings(40, seed=3)):
        text = renderer.render(f"r{index}", None, rules.evaluate(reading)).cot.text
        grounding = AUGrounding.from_intensities(reading.intensities, rules)
        refused = [k for k in range(1, len(text) + 1) if not grounding.allows(text[:k])]
        assert not refused, text[: refused[0]]


@pytest.mark.parametrize(
    "text",
    [
        "**Key Observations:** AU04 (brow lowerer)",  # not active
        "**Key Observations:** AU3",  # no active AU starts so
        "**Key Observations:** the brow lowerer is drawn",  # named, not active
        OBSERVATION.replace("(D, 4.2", "(D, 3.5"),  # misquoted intensity
        OBSERVATION.replace("(D, 4", "(C, 4"),  # wrong level
        OBSERVATION.replace("(D, 4.2/5)", "(B"),  # a wrong level in lower case
        OBSERVATION.replace("(D, 4.2/5)", "( D"),  # a space to slip past the quote
        OBSERVATION.replace("(D, 4.2/5)", "(D, 4; A"),  # a clause end inside the quote
        OBSERVATION.replace("at pronounced", "at marked"),  # the word of another level
        OBSERVATION.replace("at pronounced", "at marke"),  # on its way to it
        OBSERVATION.replace("at pronounced", "atpronounced"),  # no space
        OBSERVATION + ". Finally, there is Au zero",  # "AU" in lower case, no code
        OBSERVATION + ". Finally, there is U02",  # a code look-alike
        OBSERVATION.replace("(lip corner puller)", "(lip corner depressor)"),  # wrong name
        OBSERVATION.replace("(lip corner puller)", "(lip corner pull-up)"),  # misspelt name
        OBSERVATION + ". Finally, AU12",  # the same AU twice in the observations
        OBSERVATION + ". Finally, AU1",  # no active AU left to list
        OBSERVATION + ". AU",  # no active AU left: "AU" cannot become a code
        OBSERVATION + ". AU Sus",  # an "AU" that is no code in the observations
        OBSERVATION + ". AE10 (upper lip raiser) at slight intensity",  # a code look-alike
        OBSERVATION + ". +12 (oui) at slight",  # a parenthesis with no code
        OBSERVATION + ". U16 at slightintensity",  # an intensity with no code
        OBSERVATION + ", associated with happiness;",  # every active AU listed: no ";"
        OBSERVATION + ".  The",  # a double space
        OBSERVATION + ". The\u2009",  # a thin space
        OBSERVATION + ".\n\n**Conclusion:**",  # a header skipped
        "Key Observations: AU12",  # not the exact header
    ],
)
def test_refuses_what_the_measurements_do_not_support(smile, text):
    assert not smile.allows(text)


def test_allows_the_faithful_text_and_names_its_continuations(smile):
    assert smile.allows(OBSERVATION)
    assert smile.continuations("**Key Observations:** AU") == ["06", "12"]
    assert smile.continuations("**Key Observations:** AU1") == ["2"]
    assert smile.continuations(OBSERVATION[: OBSERVATION.index("(C") + 6]) == ["6/5)"]
    assert smile.continuations(OBSERVATION.split("(cheek")[0] + "(") == [
        "cheek raiser)",
        "C, 2.6/5)",
    ]
    assert smile.continuations(OBSERVATION.split(" intensity")[0][:-3]) == ["ced"]
    assert smile.continuations(OBSERVATION) == []
    text = OBSERVATION + ".\n\n**Overall Emotional Interpretation:** AU12 and AU06 together"
    assert smile.allows(text)  # the interpretation may name listed AUs again


def test_grounded_text_verifies_as_fully_faithful(rules, smile):
    measured = set(smile.intensities)
    assert verify(OBSERVATION, None, measured, intensities=SMILE).faithfulness == 1.0
    bare = AUGrounding.from_intensities({}, rules)
    assert bare.allows("**Key Observations:** No action unit reaches the threshold")
    assert not bare.allows("**Key Observations:** AU1")
    interpretation = "**Key Observations:** None.\n\n**Overall Emotional Interpretation:** the AU"
    assert bare.allows(interpretation + " evidence") and not bare.continuations(interpretation)


def test_format_prefixes_of_exact_cots_are_allowed_and_nothing_else(rules):
    renderer = CoTRenderer(threshold=rules.active_threshold)
    for index, reading in enumerate(random_readings(10, seed=5)):
        text = renderer.render(f"r{index}", None, rules.evaluate(reading)).cot.text
        assert all(exact_format_prefix(text[:k])[0] for k in range(len(text) + 1))
        for broken in (
            text.replace(". ", ".  ", 1),
            text.replace("\n\n", " \n\n", 1),
            text.replace("\n\n", "\n", 1),
            text + "\n",
            text.replace("**Overall Emotional Interpretation:**", "**Interpretation:**"),
        ):
            assert not exact_format_prefix(broken)[0] and not CoT.is_exact(broken)


@pytest.mark.parametrize("loop", ["Purp" * 9, "U+U+UUUUUUUUUUUUU " * 3])
def test_format_guard_refuses_degenerate_repetition(smile, loop):
    assert not exact_format_prefix(f"{OBSERVATION}. Finally, there is {loop}")[0]


def test_format_guard_names_the_rest_of_a_header_and_when_the_cot_may_end(smile):
    assert exact_format_prefix("") == (True, ["**Key Observations:** "])
    assert exact_format_prefix(OBSERVATION + ".\n") == (
        True,
        ["\n**Overall Emotional Interpretation:** "],
    )
    assert smile.continuations(OBSERVATION + ".\n\n**Ov") == ["erall Emotional Interpretation:** "]
    assert not exact_format_prefix("**Key Observations:** \n\n")[0]  # an empty section
    finished = OBSERVATION + ".\n\n**Overall Emotional Interpretation:** A smile."
    assert not smile.may_end(OBSERVATION) and not smile.may_end(finished)
    assert smile.may_end(finished + "\n\n**Conclusion:** The expression is **happiness**.")


def test_label_slots():
    cue = DecodingSettings().label_cue
    assert label_slot("This differs from the annotated label,", cue)
    assert label_slot("**Conclusion:** The expression is **", cue)
    assert not label_slot("most typical of", cue)


def test_model_config_reads_decoding_and_defaults_to_plain_greedy(tmp_path):
    from engine.model.vlm import CONFIG_FILE, FORMAT, ModelConfig

    data = {"base": "nano", "lm": "x.gguf", "lora": {"r": 8, "targets": ["q_proj"]}}
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**data, "format": FORMAT}))
    assert ModelConfig.read(tmp_path).decoding == DecodingSettings()
    guided = {"grounded": True, "label_guidance": 2.0}
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**data, "format": FORMAT, "decoding": guided}))
    config = ModelConfig.read(tmp_path)
    assert config.decoding.grounded and config.decoding.label_guidance == 2.0
    config.write(tmp_path)
    assert ModelConfig.read(tmp_path) == config


def test_reading_type_is_what_grounding_takes(rules):
    reading = AUReading({"AU12": 3.0}, "mesh", "v")
    assert AUGrounding.from_intensities(reading.intensities, rules).intensities == {"AU12": 3.0}
