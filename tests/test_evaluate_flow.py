"""The evaluate flow end to end on a FER+ subset: a tiny nano model, GPT-4V and the rules."""

import argparse
import json

import pandas as pd
import pytest

from flows.cli_evaluate import add_evaluate_parser, parse_peers
from tests.test_evaluation import make_tiny_onnx


def test_parse_peers():
    peers = parse_peers(
        ["gpt4v=g.csv,fer", "rules=runs/x", "csv=preds/mine.csv"], ["rules.au_backend=table"]
    )
    assert peers == [
        ("gpt4v", "gpt4v", {"path": "g.csv"}),
        ("fer", "fer", {}),
        ("rules", "rules", {"shards": "runs/x", "au_backend": "table"}),
        ("csv:mine", "csv", {"path": "preds/mine.csv"}),
    ]
    with pytest.raises(ValueError, match="takes no value"):
        parse_peers(["fer=x"], [])
    with pytest.raises(ValueError, match="no peer 'fer'"):
        parse_peers(["rules"], ["fer.tflite=false"])


def test_evaluate_flow_writes_self_contained_reports(tmp_path, ferplus_dir, shared_dir):
    from prefect.testing.utilities import prefect_test_harness

    model = make_tiny_onnx(tmp_path / "model" / "nano_encoder.onnx", favour="neutral")
    parser = argparse.ArgumentParser()
    add_evaluate_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "eval"
    args = parser.parse_args(
        [
            "evaluate",
            "--model",
            str(model.parent),
            "--data",
            f"ferplus:{ferplus_dir}",
            "--limit",
            "24",
            "--out",
            str(out),
            "--chunk-size",
            "10",
            "--peers",
            f"gpt4v={shared_dir / 'reference/gpt4v_ferplus_test.csv'},rules",
            "--peer-option",
            "rules.au_backend=mesh",
        ]
    )
    with prefect_test_harness(server_startup_timeout=180):
        assert args.func(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 24 and metrics["model"] == "nano"
    assert metrics["au_source"] == {}  # no AU back end of its own: the rules' default
    assert list(metrics["predictors"]) == ["nano", "gpt4v", "rules"]
    nano = metrics["predictors"]["nano"]
    assert nano["per_class"]["neutral"]["recall"] == 1.0  # the tiny model always says neutral
    assert nano["accuracy"] == pytest.approx(nano["per_class"]["neutral"]["support"] / 24)
    assert (
        nano["faces_per_second"] > 0 and metrics["predictors"]["gpt4v"]["faces_per_second"] is None
    )
    frame = pd.read_csv(out / "predictions.csv")
    assert list(frame.columns) == ["record_id", "image_path", "label", "nano", "gpt4v", "rules"]
    assert len(frame) == 24 and (frame["nano"] == "neutral").all()
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    assert "src='http" not in page and "href=" not in page  # nothing fetched from elsewhere
    for name in ("nano", "gpt4v", "rules"):
        assert f"<td>{name}</td>" in page
    assert "| nano |" in (out / "report.md").read_text()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_evaluate_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["evaluate", *argv])


def test_a_bad_class_name_fails_before_the_flow_starts(tmp_path):
    args = _parse(
        ["--model", "m", "--data", "folder:x", "--out", str(tmp_path), "--classes", "joy"]
    )
    with pytest.raises(ValueError, match="class 'joy' in --classes"):
        args.func(args)
    assert not any(tmp_path.iterdir())


def test_evaluate_flow_within_two_classes(tmp_path, ferplus_dir, shared_dir, capsys):
    """The shipped nano classifier and GPT-4V held to happiness and sadness; a CSV peer with CoT
    texts for the wording checks."""
    from prefect.testing.utilities import prefect_test_harness

    from engine.data.datasets import read_dataset
    from engine.model.config import WEIGHTS
    from tests.test_cot_wording import GARBLED

    records = read_dataset(f"ferplus:{ferplus_dir}", split="test", limit=12).records
    cots = tmp_path / "cots.csv"
    pd.DataFrame({"image_path": [r.relpath for r in records], "label": "", "cot": GARBLED}).to_csv(
        cots, index=False
    )
    out = tmp_path / "eval"
    gpt4v = shared_dir / "reference/gpt4v_ferplus_test.csv"
    args = _parse(
        ["--model", str(WEIGHTS), "--data", f"ferplus:{ferplus_dir}", "--limit", "12"]
        + ["--out", str(out), "--classes", "Happiness,sadness", "--quiet"]
        + ["--peers", f"gpt4v={gpt4v},csv={cots}", "--au-backend", "mesh"]
    )
    with prefect_test_harness(server_startup_timeout=180):
        assert args.func(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["happiness", "sadness"]
    assert metrics["class_set"] == "Happiness,sadness"
    assert metrics["au_source"] == {"au_backend": "mesh"}
    frame = pd.read_csv(out / "predictions.csv")
    assert frame["nano"].isin(["happiness", "sadness"]).all()
    outside = (~frame["gpt4v"].isin(["happiness", "sadness"])).sum()  # kept as GPT-4V said
    assert outside > 0 and metrics["predictors"]["gpt4v"]["outside_classes"] == outside
    wording = metrics["predictors"]["csv:cots"]["cot"]
    assert wording["annotation_wording"] == 1.0 and wording["non_word_cots"] == 1.0
    summary = json.loads(capsys.readouterr().out.split("\nreport:")[0])
    assert summary["classes"] == ["happiness", "sadness"]
    assert summary["csv:cots"]["cot"]["annotation_wording"] == 1.0
    page = (out / "report.html").read_text()
    assert "Answers restricted to 2 classes (happiness, sadness" in page
    assert "conclusion = interpretation" in page and "cornerpullr" in page
    report = (out / "report.md").read_text()
    assert "Answers restricted to 2 classes" in report and "| outside the classes |" in report
