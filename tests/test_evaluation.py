"""Evaluation metrics, CoT checks, class sets and the predictors (csv, gpt4v, rules, nano)."""

import csv
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from engine.data.datasets import read_dataset
from engine.evaluation.rules_peer import RuleEvidence, RuleReading
from engine.evaluation.scoring import (
    NO_LABEL,
    PREDICTORS,
    Prediction,
    allowed_classes,
    argmax_labels,
    classification_metrics,
    cot_metrics,
    create_predictor,
    evaluate_predictions,
)
from engine.pipeline import PipelineConfig
from engine.types import EMOTIONS, FaceRecord
from tests.test_flow import make_table_dataset

HAPPY_COT = (
    "**Key Observations:** AU06 (cheek raiser) and AU12 (lip corner puller) are active."
    "\n\n**Overall Emotional Interpretation:** Raised cheeks with pulled lip corners."
    "\n\n**Conclusion:** The expression is **happiness**."
)


def make_tiny_onnx(path: Path, favour: str = "happiness") -> Path:
    """An ONNX model with the nano interface whose logits favour one class (bright faces more)."""
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def forward(self, image):
            mean = image.mean(dim=(1, 2, 3)).unsqueeze(1)
            bias = torch.zeros(1, len(EMOTIONS))
            bias[0, EMOTIONS.index(favour)] = 1.0
            return mean * bias + bias

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter needs no onnx
        _export(torch, Tiny(), path)
    return path


def _export(torch, module, path: Path) -> None:
    torch.onnx.export(
        module,
        torch.zeros(2, 1, 48, 48),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}},
        dynamo=False,
    )


def test_metrics_by_hand_with_a_class_never_predicted():
    y_true = ["happiness", "happiness", "sadness", "sadness", "anger", "anger"]
    y_pred = ["happiness", "happiness", "sadness", "happiness", "sadness", None]
    m = classification_metrics(y_true, y_pred, "hand", seconds=3.0)
    assert m.n == 6 and m.answered == 5
    assert m.accuracy == pytest.approx(3 / 6)
    assert m.uar == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    happy, sad, anger = (m.per_class[e] for e in ("happiness", "sadness", "anger"))
    assert happy.precision == pytest.approx(2 / 3) and happy.recall == 1.0
    assert happy.f1 == pytest.approx(0.8)
    assert sad.precision == pytest.approx(0.5) and sad.recall == pytest.approx(0.5)
    assert sad.f1 == pytest.approx(0.5)
    assert anger.predicted == 0 and anger.precision == 0 and anger.f1 == 0 and anger.support == 2
    assert m.macro_f1 == pytest.approx((0.8 + 0.5 + 0.0) / 3)  # absent classes left out
    assert m.faces_per_second == pytest.approx(2.0)
    assert m.per_class["fear"].support == 0 and m.per_class["fear"].f1 == 0


def test_headline_figures_of_score_rows():
    scores = np.zeros((3, len(EMOTIONS)))
    scores[0, EMOTIONS.index("fear")] = 2.0
    scores[1, EMOTIONS.index("happiness")] = -0.5  # every other class lower still
    scores[1, [i for i, e in enumerate(EMOTIONS) if e != "happiness"]] = -1.0
    scores[2, EMOTIONS.index("neutral")] = 1.0
    labels = argmax_labels(scores)
    assert labels == ["fear", "happiness", "neutral"]
    headline = classification_metrics(["fear", "sadness", "neutral"], labels).headline()
    assert headline == {"accuracy": 0.6667, "uar": 0.6667}


def test_confusion_counts_and_row_normalisation():
    y_true = ["neutral"] * 4 + ["fear"] * 2
    y_pred = ["neutral", "neutral", "fear", None, "fear", "contempt"]
    m = classification_metrics(y_true, y_pred)
    rows = m.to_dict()
    assert rows["confusion_columns"][-1] == NO_LABEL and len(m.confusion[0]) == 9
    neutral, fear = EMOTIONS.index("neutral"), EMOTIONS.index("fear")
    assert m.confusion[neutral][neutral] == 2 and m.confusion[neutral][fear] == 1
    assert m.confusion[neutral][-1] == 1
    assert m.confusion_normalised[neutral][neutral] == pytest.approx(0.5)
    assert m.confusion_normalised[neutral][-1] == pytest.approx(0.25)
    for row, support in zip(m.confusion_normalised, m.confusion, strict=True):
        assert sum(row) == pytest.approx(1.0 if sum(support) else 0.0)
    assert m.faces_per_second is None  # not timed


def test_metrics_refuse_bad_input():
    with pytest.raises(ValueError, match="2 ground-truth labels but 1"):
        classification_metrics(["neutral", "fear"], ["neutral"])
    with pytest.raises(ValueError, match="ground-truth"):
        classification_metrics(["joy"], ["neutral"])
    with pytest.raises(ValueError, match="not one of"):
        Prediction("r", "joy")


def test_cot_metrics_format_conclusion_and_faithfulness():
    predictions = [
        Prediction("a", "happiness", cot=HAPPY_COT),
        Prediction("b", "sadness", cot=HAPPY_COT),  # conclusion says happiness
        Prediction("c", "happiness", cot="happy face, AU12"),  # not the exact format
        Prediction("d", "neutral"),  # no CoT: left out
    ]
    measured = [frozenset({"AU06", "AU12"}), frozenset({"AU12"}), None, None]
    cot = cot_metrics(predictions, measured)
    assert cot.n == 3 and cot.measured == 2
    assert cot.exact_format == pytest.approx(2 / 3)
    assert cot.conclusion_matches == pytest.approx(2 / 3)
    assert cot.faithfulness_mean == pytest.approx((1.0 + 0.5) / 2)
    assert cot.fully_faithful == pytest.approx(0.5)
    assert cot.evidence_as_measured is None  # no evidence given
    assert cot_metrics([Prediction("d", "neutral")], [None]) is None


def test_cot_metrics_check_quoted_evidence_shares():
    quoting = HAPPY_COT.replace(
        "**Overall Emotional Interpretation:** ",
        "**Overall Emotional Interpretation:** Happiness carries the most evidence (62 %). ",
    )
    assert quoting != HAPPY_COT
    predictions = [Prediction(r, "happiness", cot=quoting) for r in "abc"]
    evidence = [{"happiness": 0.62}, {"happiness": 0.40}, None]  # c: not measured
    cot = cot_metrics(predictions, [frozenset({"AU06", "AU12"})] * 3, evidence)
    assert cot.evidence_as_measured == pytest.approx(0.5)
    with pytest.raises(ValueError, match="evidence rows"):
        cot_metrics(predictions, [None] * 3, evidence[:2])


def test_cot_metrics_count_complete_observations():
    predictions = [Prediction(r, "happiness", cot=HAPPY_COT) for r in "abcd"]
    cited = [
        (("AU06", 4.5), ("AU12", 4.0)),  # both cited, strongest first
        (("AU12", 4.0), ("AU06", 3.1)),  # cited in the wrong order
        (("AU06", 4.5), ("AU12", 4.0), ("AU25", 2.0)),  # AU25 left out
        None,  # not measured
    ]
    cot = cot_metrics(predictions, [None] * 4, None, cited)
    assert cot.complete == pytest.approx(1 / 3)
    assert cot_metrics(predictions, [None] * 4).complete is None
    with pytest.raises(ValueError, match="cited-AU rows"):
        cot_metrics(predictions, [None] * 4, None, cited[:2])


def test_registry_lists_every_predictor():
    assert {"csv", "expllm", "fer", "gpt4v", "nano", "rules"} <= set(PREDICTORS.names())
    with pytest.raises(ValueError, match="unknown predictor 'nope'"):
        create_predictor("nope")


def test_class_sets():
    assert allowed_classes("all") == EMOTIONS
    assert allowed_classes("dataset", ["fear", "happiness", "fear"]) == ("happiness", "fear")
    assert allowed_classes(" Sadness,happiness ") == ("happiness", "sadness")
    with pytest.raises(ValueError, match="class 'joy' in --classes"):
        allowed_classes("happiness,joy")
    with pytest.raises(ValueError, match="names no class"):
        allowed_classes("dataset", [])


def test_answers_outside_the_class_set_count_as_wrong_and_are_reported(tmp_path):
    records = _records(tmp_path, {"a.png": "happiness", "b.png": "sadness", "c.png": "anger"})
    preds = [
        Prediction("folder/unsplit/a.png", "happiness"),
        Prediction("folder/unsplit/b.png", "contempt"),  # outside the set
        Prediction("folder/unsplit/c.png", "anger"),  # right, but anger is not allowed
    ]
    metrics = evaluate_predictions("peer", records, preds, classes=("happiness", "sadness"))
    assert metrics.outside_classes == 2 and metrics.answered == 1
    assert metrics.accuracy == pytest.approx(1 / 3)
    assert metrics.confusion[EMOTIONS.index("sadness")][-1] == 1  # in the no-label column
    assert evaluate_predictions("peer", records, preds).outside_classes == 0


def test_rules_answer_with_their_best_allowed_emotion():
    scores = dict.fromkeys(EMOTIONS, 0.0) | {"anger": 0.5, "disgust": 0.3, "fear": 0.2}
    reading = RuleReading("anger", frozenset({"AU04"}), scores)
    assert reading.best(EMOTIONS) == "anger"
    assert reading.best(("fear", "disgust")) == "disgust"
    assert RuleReading(None, None, error="no face").best(("fear",)) is None


def _records(root: Path, labels: dict[str, str]) -> list[FaceRecord]:
    return [
        FaceRecord(f"folder/unsplit/{p}", "folder", "unsplit", root, p, lab)
        for p, lab in labels.items()
    ]


def test_csv_peer_matches_names_and_synonyms(tmp_path):
    table = tmp_path / "preds.csv"
    table.write_text("image,prediction\na/x.png,happy\ny.png,Angry\nz.png,pain\n")
    records = _records(
        tmp_path, {"a/x.png": "happiness", "b/y.png": "anger", "c/z.png": "fear", "d/w.png": "fear"}
    )
    preds = create_predictor("csv", path=str(table)).predict(records)
    assert [p.label for p in preds] == ["happiness", "anger", None, None]
    assert "unknown label 'pain'" in preds[2].error and "no prediction" in preds[3].error
    metrics = evaluate_predictions("csv", records, preds)
    assert metrics.accuracy == 0.5 and metrics.answered == 2


def test_csv_peer_carries_cot_texts_into_the_cot_metrics(tmp_path):
    cot = (
        "**Key Observations:** AU12 (lip corner puller) at 3.5/5.\n\n"
        "**Overall Emotional Interpretation:** A smile.\n\n"
        "**Conclusion:** The expression is **happiness**."
    )
    table = tmp_path / "cots.csv"
    with table.open("w", newline="") as fh:
        csv.writer(fh).writerows([["image_path", "label", "cot"], ["x.png", "", cot]])
    records = _records(tmp_path, {"x.png": "happiness"})
    preds = create_predictor("csv", path=str(table)).predict(records)
    assert preds[0].cot == cot and preds[0].label == "happiness"  # read from the Conclusion
    metrics = evaluate_predictions("csv", records, preds, [frozenset({"AU06"})])
    assert metrics.cot.faithfulness_mean == 0.0  # AU12 was not measured above threshold


def test_csv_peer_reports_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        create_predictor("csv", path=str(tmp_path / "missing.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("what,ever\n1,2\n")
    with pytest.raises(ValueError, match=r"bad.csv: no key column"):
        create_predictor("csv", path=str(bad))
    twice = tmp_path / "twice.csv"
    twice.write_text("name,label\nx.png,happy\nx.png,sad\n")
    with pytest.raises(ValueError, match=r"twice.csv:3: 'x.png' repeated"):
        create_predictor("csv", path=str(twice))


def test_gpt4v_reproduces_its_ferplus_figures(ferplus_dir, shared_dir):
    dataset = read_dataset(f"ferplus:{ferplus_dir}", split="test")
    assert len(dataset) == 3371
    predictor = create_predictor("gpt4v", path=str(shared_dir / "reference/gpt4v_ferplus_test.csv"))
    preds = predictor.predict(dataset.records)
    metrics = evaluate_predictions("gpt4v", dataset.records, preds)
    assert metrics.n == 3371 and metrics.answered == 3369  # one face absent, one says "pain"
    assert round(100 * metrics.accuracy, 2) == 65.86
    assert round(100 * metrics.uar, 1) == 49.8


@pytest.fixture(scope="module")
def table_shards(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    from flows.exp_cot import exp_cot

    root = tmp_path_factory.mktemp("rules")
    data = root / "data"
    data.mkdir()
    table = make_table_dataset(data, count=12)
    config = PipelineConfig(au_backend="table", au_options=(("path", str(table)),))
    with prefect_test_harness(server_startup_timeout=180):
        exp_cot(spec=f"folder:{data}", out=str(root / "shards"), config=config, shard_size=6)
    return data, table, root / "shards"


def test_rules_peer_from_shards_and_from_an_au_backend(table_shards):
    data, table, shards = table_shards
    records = read_dataset(f"folder:{data}").records
    from_shards = create_predictor("rules", shards=str(shards)).predict(records)
    assert [p.label for p in from_shards] == [r.label for r in records]
    assert all(p.seconds == 0 for p in from_shards)
    measured = create_predictor(
        "rules", au_backend="table", au_options={"path": str(table)}
    ).predict(records)
    assert [p.label for p in measured] == [r.label for r in records]
    assert all(p.error is None for p in measured)
    # measured or read back, a reading knows what a complete CoT cites
    live = RuleEvidence(au_backend="table", au_options={"path": str(table)}).read(records)
    stored = RuleEvidence(shards=str(shards)).read(records)
    assert all(r.cited and r.error is None for r in live)
    assert [[c for c, _ in r.cited] for r in live] == [[c for c, _ in r.cited] for r in stored]
    frame = pd.read_parquet(shards)
    assert set(frame["dominant_emotion"]) == {"happiness", "sadness"}
    with pytest.raises(FileNotFoundError, match="nowhere"):
        create_predictor("rules", shards=str(shards.parent / "nowhere"))


def test_nano_peer_runs_an_onnx_classifier(tmp_path):
    model = make_tiny_onnx(tmp_path / "model" / "nano_encoder.onnx")
    import cv2

    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.full((48, 48, 3), 200, np.uint8))
    (tmp_path / "c.png").write_bytes(b"")
    records = _records(tmp_path, {"a.png": "happiness", "b.png": "sadness", "c.png": "fear"})
    preds = create_predictor("nano", path=str(model.parent), batch_size=2).predict(records)
    assert [p.label for p in preds] == ["happiness", "happiness", None]
    assert "empty image file" in preds[2].error
    assert sum(preds[0].probabilities.values()) == pytest.approx(1.0)
    assert all(p.seconds > 0 for p in preds)
    with pytest.raises(FileNotFoundError, match="nano_encoder.onnx"):
        create_predictor("nano", path=str(tmp_path))


def test_expllm_peer_passes_the_class_set_to_generation(tmp_path, monkeypatch):
    """A stand-in model: the predictor batches faces, passes ``allowed_labels`` (None for all
    eight) and reads the label from the Conclusion."""
    import cv2

    import engine.model
    from engine.model.settings import DecodingSettings

    class Model:
        config = SimpleNamespace(decoding=DecodingSettings(), base="stub")
        face_margin = None  # VisionLM.face_margin: the pipeline's framing
        calls: list = []

        def to_device(self):
            return self

        def visual_inputs(self, faces):
            return faces

        def generate(self, visuals, max_new_tokens, decoding, allowed_labels=None):
            self.calls.append((len(visuals), allowed_labels))
            answer = allowed_labels[-1] if allowed_labels else "happiness"
            return [HAPPY_COT.replace("**happiness**", f"**{answer}**")] * len(visuals)

    monkeypatch.setattr(engine.model, "load_model", lambda path: Model())
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), np.full((48, 48, 3), 120, np.uint8))
    records = _records(tmp_path, {"a.png": "fear", "b.png": "sadness", "c.png": "fear"})
    predictor = create_predictor("expllm", path=str(tmp_path), batch_size=2)
    assert [p.label for p in predictor.predict(records)] == ["happiness"] * 3
    held = predictor.predict(records, ("sadness", "fear"))
    assert [p.label for p in held] == ["fear"] * 3 and all(p.cot for p in held)
    assert Model.calls == [(2, None), (1, None), (2, ["sadness", "fear"]), (1, ["sadness", "fear"])]


def test_nano_peer_checks_the_interface(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "wrong.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            torch.nn.Flatten(),
            torch.zeros(1, 1, 4, 4),
            str(path),
            input_names=["pixels"],
            output_names=["out"],
            dynamo=False,
        )
    with pytest.raises(ValueError, match="expected input 'image'"):
        create_predictor("nano", path=str(path))


def test_fer_peer_explains_a_missing_package():
    try:
        import fer.fer  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="fer package and TensorFlow"):
            create_predictor("fer")
    else:
        pytest.skip("fer is installed")


def test_shipped_nano_answers_within_two_classes_on_ferplus_faces(ferplus_dir):
    records = read_dataset(f"ferplus:{ferplus_dir}", split="test", limit=16).records
    predictor = create_predictor("nano", batch_size=8)  # the shipped engine/weights encoder
    free = predictor.predict(records)
    assert len({p.label for p in free}) > 2  # unrestricted, it uses more classes
    pair = ("happiness", "sadness")
    held = predictor.predict(records, pair)
    assert all(p.label in pair for p in held)
    for loose, tight in zip(free, held, strict=True):
        assert loose.probabilities == tight.probabilities
        if loose.label in pair:  # the argmax stays where it was allowed
            assert tight.label == loose.label


def test_records_written_by_csv_round_trip(tmp_path):
    rows = [{"relpath": "x.png", "label": "sad"}]
    with (tmp_path / "p.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["relpath", "label"])
        writer.writeheader()
        writer.writerows(rows)
    records = _records(tmp_path, {"x.png": "sadness"})
    assert create_predictor("csv", path=str(tmp_path / "p.csv")).predict(records)[0].label == (
        "sadness"
    )


def test_per_class_tables_show_the_classes_the_faces_have():
    """A set without neutral (CK+) has no neutral column, even where a predictor said it."""
    from engine.evaluation.report import Scored, tables

    truth = ["anger", "happiness", "fear"]
    metrics = classification_metrics(truth, ["anger", "neutral", "fear"], "m")
    by_title = {
        title: (header, rows) for title, header, rows in tables([Scored("m", "", [], metrics)])
    }
    for title in ("F1 per class (%)", "Recall per class (%)"):
        header, rows = by_title[title]
        assert header == ["predictor", "happiness", "anger", "fear"]
        assert rows[0][1] == "0.00" and rows[0][2] == "100.00"
