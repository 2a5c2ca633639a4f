import json
import shutil

import pytest

from engine.cot.rules import RuleBook
from engine.resources import data_dir
from engine.types import EMOTIONS, AUReading


def reading(intensities, sides=None):
    return AUReading(intensities, "test", "v0", sides=sides or {})


def test_emfacs_happiness(rules):
    evidence = rules.evaluate(reading({"AU06": 2.6, "AU12": 3.9}))
    assert evidence.dominant == "happiness"
    assert "emfacs_happiness" in {m.prototype for m in evidence.prototypes}
    assert [a.au for a in evidence.active] == ["AU12", "AU06"]
    assert evidence.active[0].level == "D"
    assert sum(evidence.scores.values()) == pytest.approx(1.0)
    assert set(evidence.scores) == set(EMOTIONS)


@pytest.mark.parametrize(
    "aus, emotion, prototype",
    [
        ({"AU01": 2, "AU04": 2.5, "AU15": 3}, "sadness", "emfacs_sadness"),
        ({"AU01": 3, "AU02": 3, "AU05": 2, "AU26": 3}, "surprise", "emfacs_surprise"),
        ({"AU04": 3, "AU05": 2, "AU07": 3, "AU23": 3}, "anger", "emfacs_anger"),
        ({"AU09": 3, "AU15": 2, "AU16": 2}, "disgust", "emfacs_disgust"),
        (
            {"AU01": 2, "AU02": 2, "AU04": 2, "AU05": 2, "AU07": 2, "AU20": 3, "AU26": 2},
            "fear",
            "emfacs_fear",
        ),
    ],
)
def test_emfacs_prototypes(rules, aus, emotion, prototype):
    evidence = rules.evaluate(reading(aus))
    assert evidence.dominant == emotion
    assert prototype in {m.prototype for m in evidence.prototypes}


def test_surprise_needs_au05_at_level_b(rules):
    weak = rules.evaluate(reading({"AU01": 3, "AU02": 3, "AU05": 1.2, "AU26": 3}))
    full = {m.prototype: m.coverage for m in weak.prototypes}
    assert full["emfacs_surprise"] == pytest.approx(0.75)


def test_contempt_needs_unilateral_action(rules):
    sided = reading({"AU12": 2.3, "AU14": 2.8}, {"AU12": (0.1, 2.3), "AU14": (0.4, 2.8)})
    evidence = rules.evaluate(sided)
    assert evidence.dominant == "contempt"
    assert evidence.active[0].side == "right"
    symmetric = rules.evaluate(
        reading({"AU12": 2.3, "AU14": 2.8}, {"AU12": (2.3, 2.3), "AU14": (2.8, 2.8)})
    )
    assert "emfacs_contempt" not in {m.prototype for m in symmetric.prototypes}


def test_resting_face_is_neutral(rules):
    evidence = rules.evaluate(reading({"AU12": 0.4, "AU04": 0.9}))
    assert evidence.active == ()
    assert evidence.dominant == "neutral"
    assert evidence.scores["neutral"] == pytest.approx(1.0)
    assert evidence.secondary is None


def test_conflicting_evidence_is_reported(rules):
    evidence = rules.evaluate(
        reading({"AU06": 2.5, "AU12": 3, "AU01": 2.5, "AU04": 2.5, "AU15": 3})
    )
    assert "happiness_vs_sadness" in evidence.conflicts


def test_tables_are_data(tmp_path, rules):
    folder = tmp_path / "data"
    shutil.copytree(data_dir(), folder)
    config = json.loads((folder / "rules.json").read_text())
    config["active_threshold"] = 3.0
    (folder / "rules.json").write_text(json.dumps(config))
    strict = RuleBook.load(folder)
    assert strict.evaluate(reading({"AU12": 2.5})).dominant == "neutral"
    assert rules.evaluate(reading({"AU12": 2.5})).dominant == "happiness"


def test_bad_table_names_the_file(tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(data_dir(), folder)
    with (folder / "au_emotions.csv").open("a") as fh:
        fh.write("AU99,happiness,1.0,made up\n")
    with pytest.raises(ValueError, match="au_emotions.csv.*AU99|99.*au_definitions"):
        RuleBook.load(folder)
    (folder / "prototypes.csv").unlink()
    with pytest.raises((FileNotFoundError, ValueError)):
        RuleBook.load(folder)
