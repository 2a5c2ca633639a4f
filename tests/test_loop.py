"""The engine loop: format refinement, feedback rounds with memory, rejection, no crash."""

from __future__ import annotations

import pytest

from engine.cot.loop import EngineLoop, LoopItem, judge, refine_format
from engine.cot.render import CoTRenderer
from engine.cot.rules import RuleBook
from engine.cot.writers import Completion, Draft, TemplateWriter, Writer, WriteRequest
from engine.types import AUReading

GOOD = (
    "**Key Observations:** AU12 (lip corner puller) is marked.\n\n"
    "**Overall Emotional Interpretation:** The smile reads as joy.\n\n"
    "**Conclusion:** The expression is **happiness**."
)


class ScriptedWriter(Writer):
    """Test double: answers each round from a script and records the requests it saw."""

    name = "scripted"

    def __init__(self, script: list[Completion | str]):
        self.script = script
        self.seen: list[WriteRequest] = []

    @property
    def model(self) -> str:
        return "script"

    def write(self, requests):
        self.seen.extend(requests)
        out = []
        for request in requests:
            item = self.script[min(request.round, len(self.script)) - 1]
            completion = item if isinstance(item, Completion) else Completion(text=item)
            out.append(Draft(completion.text, "scripted@1", completion))
        return out


@pytest.fixture(scope="module")
def item() -> LoopItem:
    rules = RuleBook.load()
    evidence = rules.evaluate(AUReading({"AU06": 2.5, "AU12": 3.5}, "test", "t"))
    return LoopItem("r1", "happiness", evidence, frozenset(a.au for a in evidence.active))


def test_refine_format_repairs_header_variants_and_caps_words():
    variant = GOOD.replace("**Key Observations:**", "### Key Observations\n")
    cot, why = refine_format(f"```\nSure! Here it is.\n{variant}\n```", 130)
    assert why == "" and cot.text == GOOD
    cot, why = refine_format("just prose, no headers", 130)
    assert cot is None and why.startswith("format:")
    cot, why = refine_format(GOOD, 5)
    assert cot is None and "over the cap of 5" in why
    assert refine_format("   ", 130) == (None, "empty draft")


def test_loop_feeds_failures_back_until_a_draft_verifies(item):
    # round 2: the Conclusion names the label, but the description reads as sadness (Des2Exp)
    wrong = GOOD.replace("joy", "sorrow").replace("AU12 (lip corner puller)", "AU04")
    writer = ScriptedWriter(["broken output", wrong, GOOD])
    result = EngineLoop(writer, max_rounds=3).run([item])[0]
    assert result.verified and result.rounds == 3 and result.cot.text == GOOD
    assert result.failures[0].startswith("round 1: format:")
    assert "the description alone reads as sadness, not happiness" in result.failures[1]
    assert "AU04" in result.failures[1]
    # the writer of round 3 got the Des2Exp failure as feedback
    assert "reads as sadness, not happiness" in writer.seen[2].history[1][1]
    rounds = [r.round for r in writer.seen]
    assert rounds == [1, 2, 3]
    assert writer.seen[0].history == ()
    assert writer.seen[2].history[0] == ("broken output", result.failures[0][len("round 1: ") :])
    assert len(writer.seen[2].history) == 2


def test_loop_gives_up_after_max_rounds_and_survives_errors(item):
    writer = ScriptedWriter([Completion(error="APITimeoutError: timed out"), "nope"])
    result = EngineLoop(writer, max_rounds=2).run([item])[0]
    assert not result.verified and result.cot is None and result.rounds == 2
    assert result.failures[0] == "round 1: APITimeoutError: timed out"


def test_template_writer_takes_one_round(item):
    renderer = CoTRenderer(threshold=RuleBook.load().active_threshold)
    loop = EngineLoop(TemplateWriter(renderer), max_rounds=3, word_cap=None)
    result = loop.run([item])[0]
    assert loop.max_rounds == 1 and result.verified and result.rounds == 1
    assert result.template_id.startswith("cot/")


def test_judge_uses_the_given_reader_label(item):
    assert judge(GOOD, "happiness", item.measured, "happiness").verified
    check = judge(GOOD, "happiness", item.measured, "anger")
    assert not check.verified and "reads as anger" in check.reason
    assert check.faithfulness == 1.0


def test_the_loop_checks_completeness_and_annotation_talk(item):
    complete = LoopItem(
        item.record_id,
        item.label,
        item.evidence,
        item.measured,
        active=(("AU12", 3.5), ("AU06", 2.5)),
        cap=6,
    )
    result = EngineLoop(ScriptedWriter([GOOD]), max_rounds=1).run([complete])[0]
    assert result.verified and result.verification.complete is False  # AU06 is not cited
    assert result.verification.uncited_aus == ("AU06",)
    meta = GOOD.replace("reads as joy", "reads as joy, as labelled")
    result = EngineLoop(ScriptedWriter([meta, GOOD]), max_rounds=2).run([item])[0]
    assert result.verified and result.rounds == 2
    reason = "speaks of annotations, labels or datasets instead of the face: label"
    assert reason in result.failures[0]


def test_a_draft_must_name_the_required_aus(item):
    strict = LoopItem(
        item.record_id, item.label, item.evidence, item.measured, item.required | {"AU06"}
    )
    writer = ScriptedWriter([GOOD])  # names AU12 only
    result = EngineLoop(writer, max_rounds=1).run([strict])[0]
    assert not result.verified
    assert result.failures == ["round 1: leaves out measured AUs: AU06"]
    assert EngineLoop(ScriptedWriter([GOOD]), max_rounds=1).run([item])[0].verified


def test_loop_rejects_bad_round_counts():
    with pytest.raises(ValueError, match="max-rounds"):
        EngineLoop(ScriptedWriter([GOOD]), max_rounds=0)


def test_a_draft_that_misstates_a_cue_is_sent_back(item):
    """An LLM draft may reason freely, but a cue it names for the reading must add evidence
    for it on the rule tables (AU06 adds none to contempt here); the reason is its feedback."""
    invented = GOOD.replace(
        "The smile reads as joy.", "Consistent with happiness is AU12. The smile reads as joy."
    )
    wrong = invented.replace("happiness is AU12", "contempt is AU06")
    writer = ScriptedWriter([wrong, invented])
    result = EngineLoop(writer, max_rounds=2).run([item])[0]
    assert result.verified and result.rounds == 2
    assert "misstates measured cues: AU06 is not consistent with contempt" in result.failures[0]
    assert writer.seen[1].history[0][1] == result.failures[0][len("round 1: ") :]
