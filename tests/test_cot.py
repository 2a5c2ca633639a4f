import json

import pytest

from engine.cot.format import HEADERS, CoT, CoTFormatError


def test_renders_exact_format_and_parses_back():
    cot = CoT("AU12 is  active.", "It reads\nas happiness.", "The expression is **happiness**.")
    assert cot.text == (
        "**Key Observations:** AU12 is active.\n\n"
        "**Overall Emotional Interpretation:** It reads as happiness.\n\n"
        "**Conclusion:** The expression is **happiness**."
    )
    assert CoT.parse(cot.text) == cot
    assert CoT.is_exact(cot.text)


@pytest.mark.parametrize(
    "text",
    [
        "**Key Observations**: a\n\n**Overall Emotional Interpretation**: b\n\n**Conclusion**: c",
        "**Key Observations**\na\n**Emotional Interpretation:**\nb\n**Conclusion**\nc",
        "### Key Observations\na\n### Overall Emotional Interpretation\nb\n### Conclusion\nc",
        "Key Observations: a\n\nOverall Emotional Interpretation: b\n\nConclusion: c",
    ],
)
def test_parses_header_variants(text):
    cot = CoT.parse(text)
    assert cot.sections == ("a", "b", "c")
    assert not CoT.is_exact(text)
    assert CoT.is_exact(cot.text)


@pytest.mark.parametrize(
    "text",
    [
        "just prose about a happy face",
        "**Conclusion:** c\n\n**Key Observations:** a\n\n**Overall Emotional Interpretation:** b",
        "**Key Observations:** a\n\n**Conclusion:** c",
        "**Key Observations:** \n\n**Overall Emotional Interpretation:** b\n\n**Conclusion:** c",
    ],
)
def test_rejects_malformed_text(text):
    with pytest.raises(CoTFormatError):
        CoT.parse(text)


def test_headers_constant_matches_rendering():
    text = CoT("a", "b", "c").text
    assert [line.split(":**")[0].strip("*") for line in text.split("\n\n")] == list(HEADERS)


def test_parses_the_papers_released_rafdb_cots(shared_dir):
    records = json.loads((shared_dir / "reference" / "expllm_rafdb_test_cot.json").read_text())
    parsed = failed = 0
    for record in records:
        try:
            cot = CoT.parse(record["description"])
        except CoTFormatError:
            failed += 1
            continue
        parsed += 1
        assert all(cot.sections)
        assert CoT.parse(cot.text) == cot
    assert len(records) == 3068
    # one released CoT has no section headers at all ("Key observations include ...")
    assert (parsed, failed) == (3067, 1)
