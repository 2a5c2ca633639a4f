"""Shards -> conversations, the exports (paper, LLaVA, messages) and ``expllm export``."""

import argparse
import json

import pytest

from engine.model.conversations import (
    IMAGE_TOKEN,
    build_samples,
    dataset_root,
    parse_mix,
    prompts,
    read_rows,
    write_export,
)
from engine.pipeline import PipelineConfig
from tests.test_flow import make_table_dataset


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A 30-face Exp-CoT output folder (table AU back end), images embedded."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.exp_cot import exp_cot

    base = tmp_path_factory.mktemp("conv")
    data = base / "data"
    data.mkdir()
    table = make_table_dataset(data)
    config = PipelineConfig(
        au_backend="table", au_options=(("path", str(table)),), embed_images=True
    )
    with prefect_test_harness(server_startup_timeout=180):
        exp_cot(spec=f"folder:{data}", out=str(base / "out"), config=config, shard_size=16)
    return base / "out"


def test_samples_follow_the_paper_format_and_mix(shards):
    frame = read_rows(shards)
    samples = build_samples(frame, (3, 1))
    assert len(samples) == 30
    kinds = [s.kind for s in samples]
    assert 0 < kinds.count("cot") < kinds.count("fer")
    cot = next(s for s in samples if s.kind == "cot")
    roles = [m["role"] for m in cot.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert cot.messages[0]["content"] == prompts().system
    assert cot.messages[1]["content"].startswith(IMAGE_TOKEN + "\n")
    assert cot.messages[2]["content"].startswith("**Key Observations:**")  # CoT before label
    assert cot.messages[4]["content"] == cot.label
    fer = next(s for s in samples if s.kind == "fer")
    assert [m["role"] for m in fer.messages] == ["system", "user", "assistant"]
    assert fer.messages[2]["content"] == fer.label
    assert {s.kind for s in build_samples(frame, parse_mix("0:1"))} == {"cot"}
    assert build_samples(frame, (3, 1)) == samples  # deterministic


def test_parse_mix_rejects_bad_values():
    assert parse_mix("3:1") == (3, 1)
    for bad in ("3", "a:b", "0:0", "-1:2"):
        with pytest.raises(ValueError, match="FER:COT"):
            parse_mix(bad)


def test_exports(shards, tmp_path):
    samples = build_samples(read_rows(shards), (1, 1))
    root = dataset_root(shards)
    assert (root / samples[0].image).is_file()

    write_export(samples, "paper", tmp_path / "paper.jsonl")
    paper = [json.loads(line) for line in (tmp_path / "paper.jsonl").read_text().splitlines()]
    assert len(paper) == 30 and paper[0]["messages"][0]["role"] == "system"
    assert {"id", "image", "kind", "label", "messages"} <= set(paper[0])

    write_export(samples, "llava", tmp_path / "llava.json", root, tmp_path / "images")
    llava = json.loads((tmp_path / "llava.json").read_text())
    first = llava[0]["conversations"]
    assert first[0]["from"] == "human" and first[0]["value"].startswith("<image>\n")
    assert first[1]["from"] == "gpt"
    assert all((tmp_path / "images" / row["image"]).is_file() for row in llava)  # from bytes

    write_export(samples, "messages", tmp_path / "messages.jsonl")
    row = json.loads((tmp_path / "messages.jsonl").read_text().splitlines()[0])
    user = row["messages"][1]
    assert user["content"][0] == {"type": "image", "image": samples[0].image}
    assert user["content"][1]["type"] == "text"
    assert not user["content"][1]["text"].startswith(IMAGE_TOKEN)

    with pytest.raises(ValueError, match="unknown export format"):
        write_export(samples, "alpaca", tmp_path / "x.json")


def test_export_command(shards, tmp_path, capsys):
    from flows.cli_finetune import add_export_parser

    parser = argparse.ArgumentParser()
    add_export_parser(parser.add_subparsers())
    out = tmp_path / "llava.json"
    args = parser.parse_args(
        ["export", "--shards", str(shards), "--format", "llava", "--out", str(out)]
    )
    assert args.func(args) == 0
    assert len(json.loads(out.read_text())) == 30
    assert "wrote 30 llava samples" in capsys.readouterr().out


def test_read_rows_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an Exp-CoT output folder"):
        read_rows(tmp_path)


def test_cot_turns_come_from_verified_records_and_label_turns_from_every_record():
    import pandas as pd

    count = 40
    frame = pd.DataFrame(
        {
            "record_id": [f"r{i:02d}" for i in range(count)],
            "image_path": [f"{i}.png" for i in range(count)],
            "label": ["happiness"] * count,
            "cot_text": [
                "**Key Observations:** AU12.\n\n**Overall Emotional Interpretation:** happiness."
            ]
            * count,
            "verified": [i % 2 == 0 for i in range(count)],
        }
    )
    samples = build_samples(frame, (1, 3))
    assert len(samples) == count  # every record gives a sample
    kinds = {s.id.split("#")[0]: s.kind for s in samples}
    assert all(kinds[f"r{i:02d}"] == "fer" for i in range(1, count, 2))  # unverified: label only
    verified = [kinds[f"r{i:02d}"] for i in range(0, count, 2)]
    assert 0 < verified.count("fer") < verified.count("cot")  # the mix among verified ones
    everything = build_samples(frame, (1, 3), verified_cots=False)
    assert sum(s.kind == "cot" for s in everything) > verified.count("cot")
    fer = next(s for s in samples if s.kind == "fer")
    assert fer.messages[1]["content"] == prompts().label_prompt
