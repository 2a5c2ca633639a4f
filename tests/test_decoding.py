import json
import re

import numpy as np
import pytest

from engine.cot.format import CoT, exact_format_prefix
from engine.cot.render import CoTRenderer
from engine.cot.verify import verify
from engine.cot.vocabulary import Vocabulary, vocabulary
from engine.model.closing import VERDICT_OPENING
from engine.model.decoding import AUGrounding, label_slot
from engine.model.labels import LabelSlot, label_slot_at
from engine.model.settings import DecodingSettings
from engine.types import EMOTIONS, AUReading
from tests.test_render import random_readings

SMILE = {"AU06": 2.63, "AU12": 4.2, "AU04": 0.8}
OBSERVATION = (
    "**Key Observations:** Most prominent is AU12 (lip corner puller) at pronounced intensity "
    "(D, 4.2/5), associated with happiness. Next comes AU06 (cheek raiser) at marked intensity "
    "(C, 2.6/5)"
)

#: A cue claim of the model's own, past the observations.
CUE = OBSERVATION + ".\n\n**Overall Emotional Interpretation:** Consistent with happiness is "


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
    shares = 0
    for index, reading in enumerate(random_readings(40, seed=3)):
        evidence = rules.evaluate(reading)
        text = renderer.render(f"r{index}", None, evidence).cot.text
        shares += "%)" in text
        grounding = AUGrounding.from_intensities(
            reading.intensities, rules, evidence=evidence.scores
        )
        refused = [k for k in range(1, len(text) + 1) if not grounding.allows(text[:k])]
        assert not refused, text[: refused[0]]
    assert shares  # some texts quote evidence shares


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
        # past the observations too: codes glued to more, one-digit codes, another's name
        CUE + "AU12D",
        CUE + "AU1_",
        CUE + "AU6 ",
        CUE + "AU 4",
        CUE + "AU12 (upper lip raiser)",
    ],
)
def test_refuses_what_the_measurements_do_not_support(smile, text):
    assert not smile.allows(text)


def test_allows_the_faithful_text_and_names_its_continuations(smile):
    assert smile.allows(OBSERVATION)
    assert smile.continuations("**Key Observations:** AU") == ["12"]  # strongest first
    assert smile.continuations("**Key Observations:** AU1") == ["2"]
    assert not smile.allows("**Key Observations:** AU0")
    assert not smile.allows("**Key Observations:** AU06 (cheek raiser), then AU12")
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
    finished = OBSERVATION + ".\n\n**Overall Emotional Interpretation:** A **happiness** smile."
    assert not smile.may_end(OBSERVATION) and not smile.may_end(finished)
    assert smile.may_end(finished + "\n\n**Conclusion:** The expression is **happiness**.")
    cut = finished + "\n\n**Conclusion:** The expression is **happiness**, read from the upp"
    assert smile.allows(cut) and not smile.may_end(cut)  # a sentence cut off does not end


def test_label_slots():
    cue = DecodingSettings().label_cue
    assert label_slot("This differs from the annotated label,", cue)
    assert label_slot("**Conclusion:** The expression is **", cue)
    assert not label_slot("most typical of", cue)


def test_model_config_reads_decoding_and_defaults_to_plain_greedy(tmp_path):
    from engine.model.config import CONFIG_FILE, FORMAT, ModelConfig

    data = {"base": "nano", "lm": "x.gguf", "lora": {"r": 8, "targets": ["q_proj"]}}
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**data, "format": FORMAT}))
    assert ModelConfig.read(tmp_path).decoding == DecodingSettings()
    guided = {"grounded": True, "label_guidance": 2.0}
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**data, "format": FORMAT, "decoding": guided}))
    config = ModelConfig.read(tmp_path)
    assert config.decoding.grounded and config.decoding.label_guidance == 2.0
    config.write(tmp_path)
    assert ModelConfig.read(tmp_path) == config
    for bad in ({"no_repeat_ngram_size": -1}, {"temperature": 0.7}):
        (tmp_path / CONFIG_FILE).write_text(json.dumps({**data, "format": FORMAT, "decoding": bad}))
        with pytest.raises(ValueError, match=r"expllm_model.json: decoding: .*(>= 0|temperature)"):
            ModelConfig.read(tmp_path)


def test_reading_type_is_what_grounding_takes(rules):
    reading = AUReading({"AU12": 3.0}, "mesh", "v")
    assert AUGrounding.from_intensities(reading.intensities, rules).intensities == {"AU12": 3.0}


INTERPRETATION = OBSERVATION + ".\n\n**Overall Emotional Interpretation:** "
VERDICT = INTERPRETATION + "The movements point to happiness; the face reads as **happiness**."
CONCLUSION = VERDICT + "\n\n**Conclusion:** The expression is "


def test_the_interpretations_first_emotion_and_bold_verdict_are_weighted_slots():
    cue = DecodingSettings().label_cue
    first = label_slot_at(INTERPRETATION + "The movements point to", cue)
    assert first == LabelSlot(EMOTIONS, weighted=True, cued=False)  # only if an emotion begins
    assert label_slot_at(INTERPRETATION + "It is happiness, with", cue) is None  # named already
    verdict = label_slot_at(INTERPRETATION + "It is happiness; it reads as **", cue)
    assert verdict == LabelSlot(EMOTIONS, weighted=True, cued=True)
    assert label_slot_at(VERDICT[: VERDICT.rindex(".")], cue) is None  # the bold closes
    allowed = label_slot_at(INTERPRETATION + "It reads as **", cue, ["sadness", "happiness"])
    assert allowed.choices == ("happiness", "sadness")  # in the order of EMOTIONS
    assert label_slot_at(OBSERVATION + ", associated with", cue) is None  # not in the observations


def test_the_conclusion_names_the_emotion_its_interpretation_leads_with():
    cue = DecodingSettings().label_cue
    slot = label_slot_at(CONCLUSION + "**", cue)
    assert slot == LabelSlot(("happiness",), weighted=False, cued=True)
    assert label_slot_at(CONCLUSION + "**hap", cue).rest == "piness"  # a label begun: finished
    assert label_slot_at(CONCLUSION + "**happiness**", cue) is None
    assert label_slot_at(CONCLUSION + "**happiness** rather than", cue) is None
    assert label_slot_at(CONCLUSION, cue) == LabelSlot(("happiness",), False, False)
    free = label_slot_at(CONCLUSION + "**", cue, follows="")
    assert free == LabelSlot(EMOTIONS, weighted=True, cued=True)
    other = label_slot_at(CONCLUSION + "**", cue, allowed=["anger", "sadness"])
    assert other == LabelSlot(("sadness", "anger"), weighted=True, cued=True)  # not allowed
    lead = INTERPRETATION + "Evidence for surprise, yet the face reads as **fear**.\n\n"
    twice = lead + "**Conclusion:** The expression is **"
    assert label_slot_at(twice, cue).choices == ("surprise",)  # the first emotion named
    assert label_slot_at(twice, cue, follows="verdict").choices == ("fear",)  # Des2Exp's
    shipped = "**Conclusion:** This differs from the annotated label,"
    assert label_slot_at(INTERPRETATION + "A smile.\n\n" + shipped, cue).cued  # the old cue
    with pytest.raises(ValueError, match="allowed labels"):
        label_slot_at(CONCLUSION, cue, ["happy"])


def test_grounding_refuses_non_words_and_allows_words_begun(smile):
    assert smile.allows(INTERPRETATION + "The cheeks are rai")
    assert smile.allows(INTERPRETATION + "The cheeks are raised, and AU12 (lip")
    for garbage in ("UiPuPurpSurvueUprapPurpPurpPurp", "UiPu", "Purp Purpur Purpose", "the Survue"):
        assert not smile.allows(INTERPRETATION + "The cheeks are " + garbage), garbage
    assert smile.allows(INTERPRETATION + "The cheeks are raised at 2.6/5 (C).")


@pytest.mark.parametrize(
    "begun, allowed",
    [
        ("1.5", True),  # a number
        ("AU0", True),  # becomes AU01..AU09
        ("left-sid", True),
        ("face's", True),
        # joined to a word, digits do not become a word the evaluation counts as one
        ("AU1.5C", False),
        ("to-07C", False),
        ("i.15222", False),
        ("E.52", False),
    ],
)
def test_a_token_begun_is_allowed_only_if_it_can_still_become_a_word(begun, allowed):
    text = "The brows are " + begun
    assert vocabulary().allows(text) is allowed
    finished = vocabulary().allows(text + " ")
    assert not finished or allowed  # what is refused begun is refused finished too


def test_vocabulary_knows_english_facs_and_template_words():
    words = vocabulary()
    assert all(words.knows(w) for w in ("lowerer", "tightener", "dimpler", "contempt", "movements"))
    assert words.knows("X") and not words.knows("Lowe") and words.begins("Lowe")
    assert not words.begins("uipu") and not words.begins("Purp")
    small = Vocabulary.of(["brow", "brows", "raised"])
    assert small.allows("the brows are raised") is False  # "the", "are" unknown here
    assert small.allows("brows raised, 2.6/5; AU04 bro") and not small.allows("brows raized x")


def test_generation_batch_and_prompts_are_one_named_default_each():
    from engine.model.config import GENERATION_BATCH, ModelConfig
    from engine.model.conversations import prompts
    from engine.model.training import FinetuneConfig, generate_cots

    assert FinetuneConfig().generation_batch == GENERATION_BATCH
    assert generate_cots.__defaults__[1] == GENERATION_BATCH
    task = prompts().task
    assert ", ".join(EMOTIONS) in task and f" {len(EMOTIONS)} " not in task  # spelt out
    config = ModelConfig(base="nano", lm="x")
    assert config.prompt == prompts().cot_prompt and config.system_prompt == prompts().system


def test_the_shipped_config_still_reads_with_its_own_prompts():
    from engine.model.config import SHIPPED_MODEL, ModelConfig

    saved = json.loads((SHIPPED_MODEL / "expllm_model.json").read_text())
    config = ModelConfig.read(SHIPPED_MODEL)
    assert config.prompt == saved["prompt"] and config.decoding.conclusion_follows == "verdict"
    assert config.decoding.label_cue == saved["decoding"]["label_cue"]
    assert config.decoding.stated_facts == "evidence" and config.decoding.planned_reading
    assert config.decoding.planned_conclusion
    assert config.decoding.transfer_balance == saved["decoding"]["transfer_balance"]


class FakeTokenizer:
    """Longest-match tokens: whole words (with and without a space), then single characters;
    padded to more ids than grounding's fallback candidates."""

    eos_token_id = 0

    def __init__(self, words):
        chars = [chr(c) for c in range(32, 127)] + ["\n"]
        pieces = [w for word in words for w in (" " + word, word)]
        self.tokens = ["<eos>", *dict.fromkeys(pieces + chars)]
        self.tokens += [f"<unused{i}>" for i in range(2100 - len(self.tokens))]
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.longest = max(map(len, pieces))

    def __call__(self, text, add_special_tokens=False):
        ids, position = [], 0
        while position < len(text):
            for size in range(min(self.longest, len(text) - position), 0, -1):
                if text[position : position + size] in self.ids:
                    ids.append(self.ids[text[position : position + size]])
                    position += size
                    break
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.tokens[i] for i in ids if i)


def _step(tokenizer, guide, text, preferred):
    """The token greedy decoding takes after ``text`` when the LM prefers ``preferred`` (best
    first)."""
    import torch

    scores = torch.full((1, len(tokenizer.tokens)), -30.0)
    for rank, token in enumerate(preferred):
        scores[0, tokenizer.ids[token]] = -float(rank)
    return tokenizer.tokens[int(guide([0], [tokenizer(text)["input_ids"]], scores)[0].argmax())]


def test_the_guide_applies_label_slots_and_the_word_check(smile):
    pytest.importorskip("torch")
    from engine.model.guide import TokenGuide

    tokenizer = FakeTokenizer([*EMOTIONS, "hap", "py", "raised", "UiPu", "annotated"])
    priors = np.log(np.full((1, len(EMOTIONS)), 0.01))
    priors[0, EMOTIONS.index("sadness")] = 0.0
    settings = DecodingSettings(grounded=True, label_guidance=5.0)
    guide = TokenGuide(tokenizer, settings, [smile], priors, ["happiness", "sadness"])
    # the Conclusion follows the description, whatever the LM and the prior prefer
    assert _step(tokenizer, guide, CONCLUSION + "**", ["surprise", "sadness"]) == "happiness"
    assert _step(tokenizer, guide, CONCLUSION + "**hap", ["py"]) == "p"  # "hap|piness"
    # the Interpretation's first emotion: an allowed class, weighted by the prior
    text = INTERPRETATION + "The face reads as"
    lm = [" surprise", " happiness", " sadness"]
    assert _step(tokenizer, guide, text, lm) == " sadness"
    plain = TokenGuide(tokenizer, DecodingSettings(grounded=True), [smile], None)
    assert _step(tokenizer, plain, text, lm) == " surprise"  # all classes, the LM alone
    only = TokenGuide(
        tokenizer, DecodingSettings(grounded=True), [smile], None, ["happiness", "sadness"]
    )
    assert _step(tokenizer, only, text, lm) == " happiness"  # allowed classes, the LM alone
    # grounding: no non-words
    assert _step(tokenizer, plain, INTERPRETATION + "The cheeks are", [" UiPu", " raised"]) == (
        " raised"
    )


def test_strict_wording_keeps_to_ascii_words_and_off_annotations(rules, smile):
    readings = dict(smile.intensities)
    loose = AUGrounding.from_intensities(readings, rules, strict_wording=False)
    text = INTERPRETATION + "The face reads as happiness. The "
    for bad in ("annotated", "annot", "label", "data", "dataset", "EPi\u2082S"):
        assert not smile.allows(text + bad), bad
    assert loose.allows(text + "annotated") and not loose.allows(text + "annotatedX")
    assert smile.allows(text + "measured")
    assert Vocabulary.of(["raised"]).completion("rai") == "sed"
    assert Vocabulary.of(["raised"]).completion("xyz") == ""
    pytest.importorskip("torch")
    from engine.model.guide import TokenGuide

    tokenizer = FakeTokenizer(["raised", "annotated", "measured"])
    guide = TokenGuide(tokenizer, DecodingSettings(grounded=True), [smile], None)
    assert _step(tokenizer, guide, text.rstrip(), [" annotated", " measured"]) == " measured"
    # a word begun that the LM will not finish is finished with the shortest known word
    assert _step(tokenizer, guide, INTERPRETATION + "The cheeks are rai", ["Q"]) == "s"


def test_prior_correction_lifts_rare_classes_and_is_off_by_default():
    import numpy as np

    from engine.model.settings import DecodingSettings

    log_priors = np.log(np.array([[0.5, 0.45, 0.05]]))
    assert DecodingSettings().balanced(log_priors) is log_priors
    settings = DecodingSettings(class_balance=1.0, class_frequencies=(0.6, 0.3, 0.1))
    corrected = settings.balanced(log_priors)
    assert int(np.argmax(log_priors)) == 0 and int(np.argmax(corrected)) == 1
    assert np.allclose(corrected - log_priors, -np.log([0.6, 0.3, 0.1]))


def test_the_transfer_correction_applies_only_where_fewer_classes_are_allowed():
    import numpy as np

    from engine.model.settings import DecodingSettings

    log_priors = np.log(np.array([[0.5, 0.44, 0.06]]))
    frequencies = (0.6, 0.3, 0.1)
    settings = DecodingSettings(class_balance=0.5, class_frequencies=frequencies)
    fewer = ["neutral", "happiness", "surprise"]
    assert np.array_equal(settings.balanced(log_priors, fewer), settings.balanced(log_priors))
    settings = settings.with_options({"transfer_balance": "2"})
    assert settings.transfer_balance == 2.0
    assert np.allclose(settings.balanced(log_priors) - log_priors, -0.5 * np.log(frequencies))
    assert np.array_equal(
        settings.balanced(log_priors, list(EMOTIONS)), settings.balanced(log_priors)
    )
    restricted = settings.balanced(log_priors, fewer)
    assert np.allclose(restricted - log_priors, -2.0 * np.log(frequencies))
    assert int(np.argmax(restricted)) == 2 != int(np.argmax(settings.balanced(log_priors)))


def test_quoted_evidence_shares_are_the_measured_ones(rules):
    reading = AUReading(SMILE, "test", "")
    scores = rules.evaluate(reading).scores
    grounding = AUGrounding.from_intensities(SMILE, rules, evidence=scores)
    happy, neutral = (f"{100 * scores[e]:.0f}" for e in ("happiness", "neutral"))
    text = (
        f"{OBSERVATION}.\n\n**Overall Emotional Interpretation:** Weighing each unit, happiness "
        "carries the most evidence ("
    )
    assert grounding.continuations(text + happy[0]) == [f"{happy[1:]} %)"]
    assert grounding.allows(f"{text}{happy} %), followed by neutral ({neutral} %)")
    wrong = str((int(happy) + 7) % 100)
    assert not grounding.allows(f"{text}{wrong} %)")
    assert not grounding.allows(f"{text}{happy} %), followed by neutral ({int(neutral) + 2} %)")
    assert grounding.allows(f"{text}{happy} %). The smile (Du")  # not a share
    unchecked = AUGrounding.from_intensities(SMILE, rules)
    assert unchecked.allows(f"{text}{wrong} %)")


def test_the_interpretation_closes_only_with_a_verdict_in_bold(smile):
    interpretation = OBSERVATION + ".\n\n**Overall Emotional Interpretation:** A smile"
    assert not smile.allows(interpretation + ", so happiness.\n")
    assert smile.allows(interpretation + ", so the face reads as **happiness**.\n")


def test_where_the_conclusion_follows_the_verdict_only_the_bold_is_a_slot():
    cue = DecodingSettings().label_cue
    text = INTERPRETATION + "The movements point to"
    assert label_slot_at(text, cue, follows="verdict") is None  # the evidence is the LM's
    verdict = label_slot_at(text + " surprise; it reads as **", cue, follows="verdict")
    assert verdict == LabelSlot(EMOTIONS, weighted=True, cued=True)


def test_stated_facts_are_what_every_reading_of_the_face_shares(rules):
    renderer = CoTRenderer(threshold=rules.active_threshold, max_aus=rules.max_cited_aus)
    for reading in random_readings(40, seed=3):
        evidence = rules.evaluate(reading)
        facts = renderer.facts(evidence, "evidence")
        grounding = AUGrounding.from_intensities(
            reading.intensities, rules, evidence=evidence.scores
        )
        assert facts.startswith("**Key Observations:** ") and facts.endswith(".")
        assert grounding.allows(facts)
        cited = [a.au for a in evidence.active[: rules.max_cited_aus]]
        assert re.findall(r"AU\d\d", facts.partition("\n")[0]) == cited  # complete, in order
        if evidence.active:  # the rules' evidence, as measured
            assert f"{evidence.dominant} carries the most evidence" in facts
        assert "**" not in facts.partition("Interpretation:**")[2]  # never the verdict
    with pytest.raises(ValueError, match="no CoT template variant 'essay'"):
        renderer.facts(evidence, "essay")


def test_decoding_options_are_read_as_their_settings_types():
    settings = DecodingSettings().with_options(
        {"grounded": "true", "label_guidance": "40", "stated_facts": "evidence"}
    )
    assert (settings.grounded, settings.label_guidance, settings.stated_facts) == (
        True,
        40.0,
        "evidence",
    )
    assert DecodingSettings(grounded=True).with_options({"grounded": "false"}).grounded is False
    with pytest.raises(ValueError, match="unknown decoding setting.*temperature"):
        DecodingSettings().with_options({"temperature": 0.7})
    with pytest.raises(ValueError, match="label_guidance: cannot read 'strong'"):
        DecodingSettings().with_options({"label_guidance": "strong"})
    with pytest.raises(ValueError, match="conclusion_follows"):
        DecodingSettings().with_options({"conclusion_follows": "majority"})
    assert DecodingSettings().with_options({"no_repeat_ngram_size": "8"}).no_repeat_ngram_size == 8
    with pytest.raises(ValueError, match="no_repeat_ngram_size must be >= 0"):
        DecodingSettings().with_options({"no_repeat_ngram_size": "-2"})


def test_the_emotion_said_to_lead_the_evidence_is_the_measured_lead(rules):
    scores = rules.evaluate(AUReading(SMILE, "test", "")).scores
    grounding = AUGrounding.from_intensities(SMILE, rules, evidence=scores)
    other = next(e for e in EMOTIONS if e != "happiness")
    assert max(scores, key=scores.get) == "happiness"
    text = f"{OBSERVATION}.\n\n**Overall Emotional Interpretation:** "
    assert grounding.allows(text + "happiness carries the most evidence")
    assert not grounding.allows(text + f"{other} carries the most evidence")
    assert grounding.allows(text + f"{other} carries the most weight")  # no claim
    verdict = text + f"A smile, so the face reads as **{other}**, with happiness as the competing"
    assert grounding.allows(verdict + " reading")
    conclusion = text + "A smile reads as **happiness**.\n\n**Conclusion:** The expression is "
    claim = "**{}**, the reading best supported by the measured units"
    assert grounding.allows(conclusion + claim.format("happiness"))
    assert not grounding.allows(conclusion + claim.format(other))


def test_a_planned_reading_that_leads_the_evidence_speaks_of_nothing_against_it(rules):
    scores = rules.evaluate(AUReading(SMILE, "test", "")).scores
    facts = f"{OBSERVATION}.\n\n**Overall Emotional Interpretation:** The smile is clear."
    args = dict(evidence=scores, stated=len(facts))
    led = AUGrounding.from_intensities(SMILE, rules, reading="happiness", **args)
    against = AUGrounding.from_intensities(SMILE, rules, reading="sadness", **args)
    assert led.lead == against.lead == "happiness"
    assert led.allows(facts)  # the stated facts' own sentences are not the model's
    # they state all that comes before the verdict, which the model writes next
    for own in (" The strongest", " Taken together, the contrary", " A **happiness**, with"):
        assert not led.allows(facts + own) and not against.allows(facts + own), own
    assert led.continuations(facts) == against.continuations(facts) == [VERDICT_OPENING]
    verdict = facts + VERDICT_OPENING
    assert led.allows(verdict + "happiness**.") and not led.allows(verdict + "happiness**, with")
    assert against.allows(verdict + "sadness**, with")  # the competing reading comes next


def test_a_planned_reading_names_every_label_slot_and_the_evidence_the_competing_one(rules):
    pytest.importorskip("torch")
    from engine.model.guide import TokenGuide

    scores = rules.evaluate(AUReading(SMILE, "test", "")).scores
    grounding = AUGrounding.from_intensities(SMILE, rules, evidence=scores, reading="sadness")
    tokenizer = FakeTokenizer([*EMOTIONS, "with"])
    priors = np.log(np.full((1, len(EMOTIONS)), 0.01))
    priors[0, EMOTIONS.index("fear")] = 0.0  # the classifier's own best is not the plan
    settings = DecodingSettings(grounded=True, label_guidance=40.0, conclusion_follows="verdict")
    guide = TokenGuide(tokenizer, settings, [grounding], priors, readings=["sadness"])
    text = f"{OBSERVATION}.\n\n**Overall Emotional Interpretation:** It reads as **"
    assert _step(tokenizer, guide, text, ["fear", "happiness"]) == "sadness"
    assert _step(tokenizer, guide, text + "sadness**, with", [" fear", " sadness"]) == " happiness"


def test_a_planned_conclusion_is_one_of_the_templates_conclusions_for_the_reading(rules):
    evidence = rules.evaluate(AUReading(SMILE, "test", ""))
    renderer = CoTRenderer(threshold=rules.active_threshold, max_aus=rules.max_cited_aus)
    conclusions = renderer.conclusions(evidence, "sadness")
    assert len(conclusions) == len(renderer.variants)
    assert all(c.count("**sadness**") == 1 and c.endswith(".") for c in conclusions)
    assert all("happiness" in c for c in conclusions)  # the evidence's lead, stated
    grounding = AUGrounding.from_intensities(
        SMILE, rules, evidence=evidence.scores, reading="sadness", conclusions=conclusions
    )
    text = renderer.render("r", "sadness", evidence).cot.text
    head = text[: text.index("**Conclusion:** ") + len("**Conclusion:** ")]
    assert grounding.allows(head) and set(grounding.continuations(head)) == set(conclusions)
    for conclusion in conclusions:
        assert grounding.allows(head + conclusion[:20])
        assert grounding.may_end(head + conclusion)
        assert not grounding.may_end(head + conclusion[:-1])
        assert not grounding.allows(head + conclusion + " It")  # one sentence, then the end
    assert not grounding.allows(head + "The expression is **sadness**, as the face shows.")
    free = AUGrounding.from_intensities(SMILE, rules, evidence=evidence.scores, reading="sadness")
    assert free.allows(head + "The expression is **sadness**, as the face shows")


def test_a_planned_conclusion_that_only_one_ending_fits_is_finished_at_once(rules):
    """``AUGrounding.ending``: once the Conclusion written begins only one of the planned
    ones, its rest; while several fit, before the Conclusion or without a plan, none."""
    evidence = rules.evaluate(AUReading(SMILE, "test", ""))
    renderer = CoTRenderer(threshold=rules.active_threshold, max_aus=rules.max_cited_aus)
    conclusions = renderer.conclusions(evidence, "sadness")
    grounding = AUGrounding.from_intensities(
        SMILE, rules, evidence=evidence.scores, reading="sadness", conclusions=conclusions
    )
    text = renderer.render("r", "sadness", evidence).cot.text
    head = text[: text.index("**Conclusion:** ") + len("**Conclusion:** ")]
    assert len(set(conclusions)) > 1 and grounding.ending(head) is None
    assert grounding.ending(head[: -len("**Conclusion:** ")]) is None
    for conclusion in set(conclusions):
        others = [c for c in conclusions if c != conclusion]
        cut = next(
            n for n in range(len(conclusion)) if all(c[:n] != conclusion[:n] for c in others)
        )
        assert grounding.ending(head + conclusion[: cut - 1]) is None  # still shared
        assert grounding.ending(head + conclusion[:cut]) == conclusion[cut:]
        assert grounding.ending(head + conclusion) is None  # nothing left to write
    free = AUGrounding.from_intensities(SMILE, rules, evidence=evidence.scores, reading="sadness")
    assert free.ending(head + conclusions[0][:40]) is None


def test_the_lms_own_verdict_keeps_to_the_cues_its_text_has_named(rules):
    """Without a planned reading, a verdict slot offers only the emotions that the cues the
    text has named allow: after "the strongest contrary cue ... towards happiness" the verdict
    cannot be happiness, where the text would end cut off at "**h"."""
    pytest.importorskip("torch")
    from engine.model.guide import TokenGuide

    evidence = rules.evaluate(AUReading(SMILE, "test", ""))
    grounding = AUGrounding.from_intensities(
        SMILE, rules, evidence=evidence.scores, rules_reading=evidence
    )
    text = (
        f"{OBSERVATION}.\n\n**Overall Emotional Interpretation:** The strongest contrary cue is "
        "AU12 (lip corner puller) at pronounced intensity, which weighs most towards happiness."
        f"{VERDICT_OPENING}"
    )
    assert grounding.allows(text) and not grounding.allows(text + "happiness**")
    # "happiness" is "h" + "appiness", as in SmolLM2's vocabulary: "**h" is still grounded
    tokenizer = FakeTokenizer([*(e for e in EMOTIONS if e != "happiness"), "h", "appiness"])
    assert grounding.allows(text + "h")
    guide = TokenGuide(tokenizer, DecodingSettings(grounded=True), [grounding], None)
    chosen = _step(tokenizer, guide, text, ["h", "anger", "sadness"])
    assert chosen == "anger" and grounding.allows(text + "anger**")
    # a competing reading is the evidence's lead, so a verdict that is the lead names none
    plain = f"{OBSERVATION}.\n\n**Overall Emotional Interpretation:** It is clear.{VERDICT_OPENING}"
    assert grounding.allows(plain + "happiness**.")
    assert not grounding.allows(plain + "happiness**, with")
    assert grounding.allows(text + "anger**, with")
    assert _step(tokenizer, guide, text + "anger**, with", [" sadness", " h"]) == " h"


def test_a_text_that_nothing_keeps_grounded_ends_where_it_is(smile):
    """Where no candidate keeps a text grounded it ends, complete or not, instead of running
    on unguided: nothing after it could be grounded again."""
    pytest.importorskip("torch")
    from engine.model.guide import TokenGuide

    tokenizer = FakeTokenizer(["raised", "the"])
    guide = TokenGuide(tokenizer, DecodingSettings(grounded=True), [smile], None)
    stuck = "**Key Observations:** AU04 (brow lowerer) is"  # AU04 is not active
    assert not any(smile.allows(stuck + t) for t in (" raised", " the", "."))
    assert _step(tokenizer, guide, stuck, [" raised", " the"]) == "<eos>"
    assert _step(tokenizer, guide, INTERPRETATION + "The cheeks are", [" raised"]) == " raised"


def test_cpu_bfloat16_only_where_the_cpu_does_it_natively(monkeypatch):
    """Emulated bfloat16 (a CPU without AVX512-BF16 or AMX) is ~6x slower than float32: there
    the shipped ``cpu_bfloat16`` falls back to float32; GPUs always use bfloat16."""
    from engine.model import settings

    asked = DecodingSettings(cpu_bfloat16=True)
    for native in (True, False):
        monkeypatch.setattr(settings, "native_cpu_bfloat16", lambda native=native: native)
        assert asked.bfloat16("cpu") is native
        assert DecodingSettings().bfloat16("cpu") is False
        assert asked.bfloat16("cuda") and DecodingSettings().bfloat16("cuda")
