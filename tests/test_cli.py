"""The expllm command line: exp-cot, inspect (text and HTML), errors, demo."""

import os
import re
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from tests.test_flow import make_table_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    data.mkdir()
    table = make_table_dataset(data, count=20)
    out = root / "out"
    with prefect_test_harness(server_startup_timeout=180):
        code = main(
            [
                "exp-cot",
                f"folder:{data}",
                "--out",
                str(out),
                "--au-backend",
                "table",
                "--au-option",
                f"path={table}",
                "--shard-size",
                "6",
                "--quiet",
                "--embed-images",
            ]
        )
    assert code == 0
    return out


def test_inspect_prints_counts_and_samples(table_run, capsys):
    assert main(["inspect", str(table_run), "--samples", "2"]) == 0
    text = capsys.readouterr().out
    assert "records: 20 accepted, 0 rejected" in text
    assert re.search(r"happiness\s+10\s+10", text)
    assert "faithfulness: mean 1.000" in text
    assert text.count("**Key Observations:**") == 2
    assert "AU12" in text


def test_html_report_is_self_contained(table_run, tmp_path):
    from engine.store.inspection.page import embedded, unpack

    target = tmp_path / "report.html"
    assert main(["inspect", str(table_run), "--html", str(target), "--html-samples", "4"]) == 0
    page = target.read_text()
    records = unpack(embedded(page, "records-data"))  # gzip + base64, inflated by the page
    assert records["n"] == 20 and all("**Key Observations:**" in t for t in records["cot"])
    thumbs = embedded(page, "thumbs-data").split(" ")
    assert len(thumbs) == 20 and all(thumbs)  # from the shards' embedded image bytes
    assert '"page_size":4' in page
    assert not re.search(r"(src|href)=['\"]?https?:", page)  # nothing fetched from outside


def test_inspect_compare_prints_per_class_deltas(table_run, tmp_path, capsys):
    target = tmp_path / "compare.html"
    args = ["inspect", str(table_run), "--compare", str(table_run), "--html", str(target)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "matched by record_id: 20" in text and "dominant emotion changed on 0" in text
    assert re.search(r"happiness\s+10\s+10\s+(\S+)\s+\1\s+\+0\.0", text)  # A = B: no delta
    assert '"changed":0' in target.read_text()


def test_html_inside_output_folder_is_refused(table_run, capsys):
    assert main(["inspect", str(table_run), "--html", str(table_run / "report.html")]) == 2
    assert "read_parquet" in capsys.readouterr().err
    assert len(pd.read_parquet(table_run)) == 20


@pytest.mark.parametrize(
    "args, message",
    [
        (["exp-cot", "imagenet:/tmp", "--out", "x"], "unknown dataset kind 'imagenet'"),
        (["exp-cot", "ferplus:/nonexistent/fer", "--out", "x"], "/nonexistent/fer"),
        (["inspect", "/nonexistent/run"], "not an expllm output folder"),
        (
            ["evaluate", "--model", "m", "--data", "d:x", "--out", "o", "--model-option", "w"],
            "--model-option expects KEY=VALUE, got 'w'",
        ),
    ],
)
def test_spec_level_errors_stop_with_a_message(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("quiet", [True, False])
def test_quiet_evaluation_asks_hugging_face_libraries_for_no_bars(quiet, monkeypatch, capsys):
    """``--quiet`` sets ``HF_HUB_DISABLE_PROGRESS_BARS`` first thing (transformers reads it on
    import), also for a command that then fails; a value already set is kept."""
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    args = ["evaluate", "--model", "m", "--data", "d:x", "--out", "o", "--classes", "joy"]
    assert main(args + ["--quiet"] * quiet) == 2
    assert "joy" in capsys.readouterr().err
    assert os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == ("1" if quiet else None)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    main(args + ["--quiet"])
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"


def test_exp_cot_option_defaults_are_the_pipeline_config_defaults():
    from dataclasses import fields

    from engine.pipeline_config import PipelineConfig
    from flows.cli import build_parser

    args = build_parser().parse_args(["exp-cot", "folder:x", "--out", "o"])
    default = {f.name: f.default for f in fields(PipelineConfig)}
    options = {"model": "llm_model", "au_backend": "au_backend", "max_pixels": "max_pixels"}
    for name in ("writer", "base_url", "llm_concurrency", "llm_timeout", "llm_retries", "rewrite"):
        options[name] = name
    for name in ("reader", "max_rounds", "word_cap", "max_new_tokens", "fallback", "keep"):
        options[name] = name
    for option, field in options.items():
        assert getattr(args, option) == default[field], option
