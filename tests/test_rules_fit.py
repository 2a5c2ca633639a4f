"""Rule tables fitted to data (engine/cot/rules_fit.py, ``expllm rules fit``) and the choice of
table per AU back end (``RuleBook.for_backend``, ``--rules``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engine.cot.rules import TABLE_CARD, RuleBook, fitted_dir
from engine.cot.rules_card import fit_command
from engine.cot.rules_fit import (
    FitOptions,
    anchor_faces,
    build_design,
    fit_table,
    prototype_check,
    readings,
)
from engine.resources import data_dir
from engine.types import EMOTIONS, AUReading
from flows.cli_rules import read_faces

#: Per class, the AUs its synthetic faces show (FACS prototypes) and a link FACS does not know.
SHOWN = {
    "neutral": [],
    "happiness": ["AU12", "AU25"],
    "surprise": ["AU01", "AU02", "AU05", "AU26"],
    "sadness": ["AU01", "AU04", "AU15", "AU43"],  # AU43 -> sadness: new, data-supported
    "anger": ["AU04", "AU07", "AU23"],
    "disgust": ["AU09", "AU10"],
    "fear": ["AU01", "AU04", "AU20"],
    "contempt": ["AU14"],
}
AUS = sorted({au for aus in SHOWN.values() for au in aus} | {"AU18"})


def synthetic_faces(count: int, seed: int, split: str, backend: str = "synthetic"):
    """Faces whose class shows its AUs (each with probability 0.7, intensity 1.6-4), AU18 at
    random in every class (no link to learn), everything else below threshold."""
    rng = np.random.default_rng(seed)
    weights = np.array([30, 25, 12, 12, 9, 4, 4, 4], dtype=float)
    labels = rng.choice(EMOTIONS, size=count, p=weights / weights.sum())
    rows = []
    for index, label in enumerate(labels):
        row = {code: float(rng.uniform(0, 1.0)) for code in AUS}
        for code in SHOWN[label]:
            if rng.random() < 0.7:
                row[code] = float(rng.uniform(1.6, 4.0))
        if rng.random() < 0.3:
            row["AU18"] = float(rng.uniform(1.6, 4.0))
        if label == "contempt":
            row["AU14_L"], row["AU14_R"] = row["AU14"], 0.0
        rows.append(
            {
                "record_id": f"{split}-{index:05d}",
                "dataset": "synthetic",
                "split": split,
                "label": label,
                "au_backend": backend,
                "au_model_version": "v1",
                **row,
            }
        )
    return pd.DataFrame(rows)


def write_shards(folder, frame: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "shard-00000.parquet", index=False)
    (folder / "_manifest.json").write_text(json.dumps({"config": {"spec": "synthetic:x"}}))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    write_shards(
        folder,
        pd.concat(
            [synthetic_faces(3000, 0, "train"), synthetic_faces(800, 1, "valid")],
            ignore_index=True,
        ),
    )
    return folder


@pytest.fixture(scope="module")
def fitted(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("table") / "synthetic"
    options = FitOptions(iterations=600)
    card = fit_command(
        read_faces([shards]), [shards], "train", out, options=options, command="expllm rules fit x"
    )
    return out, card


def test_the_fitted_table_is_readable_data(fitted):
    out, card = fitted
    for name in ("au_emotions.csv", "prototypes.csv", "priors.csv", "rules.json", TABLE_CARD):
        assert (out / name).is_file(), name
    text = (out / "CARD.md").read_text()
    assert "synthetic" in text and "expllm rules fit x" in text and "| valid |" in text
    book = RuleBook.load(out)
    assert book.backend == "synthetic" and book.card["fit_split"] == "train"
    assert card["au_backend"] == "synthetic" and card["dataset"] == "synthetic"
    assert set(card["agreement"]) == {"train", "valid"}
    links = pd.read_csv(out / "au_emotions.csv")
    assert (links["weight"] > 0).all() and links["source"].notna().all()
    priors = pd.read_csv(out / "priors.csv")
    assert (priors["weight"] >= 0).all() and priors["weight"].min() == 0
    prototypes = pd.read_csv(out / "prototypes.csv")
    hand = pd.read_csv(data_dir() / "prototypes.csv")
    assert list(prototypes["prototype"]) == list(hand["prototype"])  # kept by name
    assert (prototypes["weight"] >= hand["weight"] - 1e-9).all()


def test_links_are_facs_or_supported_by_the_data(fitted):
    out, card = fitted
    links = pd.read_csv(out / "au_emotions.csv")
    hand = pd.read_csv(data_dir() / "au_emotions.csv")
    known = set(zip(hand["au"], hand["emotion"], strict=True))
    new = links[[(a, e) not in known for a, e in zip(links["au"], links["emotion"], strict=True)]]
    assert ("AU43", "sadness") in set(zip(new["au"], new["emotion"], strict=True))
    assert new["source"].str.startswith("data: ").all()
    assert "AU18" not in set(links["au"])  # shown at random in every class: no link
    assert "neutral" not in set(links["emotion"])
    assert card["links"]["new"] == len(new)
    # sparse: far fewer links than AU x emotion pairs
    assert len(links) < 0.5 * len(AUS) * (len(EMOTIONS) - 1)


def test_fitting_beats_the_hand_set_table_and_keeps_the_prototypes(fitted):
    _, card = fitted
    fitted_valid = card["agreement"]["valid"]["agreement"]
    assert fitted_valid > card["agreement_hand_set"]["valid"]["agreement"] + 0.05
    assert fitted_valid > 0.6
    assert card["prototype_check"]["fitted"] >= 0.8


def test_the_fit_is_deterministic(shards):
    base = RuleBook.load()
    faces = read_faces([shards], ["train"]).head(600)
    design = build_design(base, list(faces["label"]), readings(faces))
    first = fit_table(base, design, FitOptions(iterations=200))
    again = fit_table(base, design, FitOptions(iterations=200))
    assert [(li.au, li.emotion, li.weight) for li in first.links] == [
        (li.au, li.emotion, li.weight) for li in again.links
    ]
    assert first.priors == again.priors


def test_anchor_faces_are_the_prototypes_whole_and_partial():
    base = RuleBook.load()
    reads, labels, names = anchor_faces(base)
    assert names[0] == "rest" and labels[0] == "neutral" and reads[0].intensities == {}
    assert "emfacs_sadness-without AU04" in names
    assert prototype_check(base)["agreement"] > 0.9


def test_the_pipeline_picks_the_table_of_its_back_end(fitted, tmp_path):
    out, _ = fitted
    mesh = RuleBook.for_backend("mesh")
    assert fitted_dir("mesh") == data_dir() / "rules" / "mesh"
    assert mesh.backend == "mesh" and mesh.table_id.startswith("data/rules/mesh@")
    assert mesh.card["fit_split"] == "train" and "command" in mesh.card
    hand = RuleBook.for_backend("no-such-back-end")
    assert hand.backend is None and hand.table_id.startswith("data@")
    assert RuleBook.for_backend("synthetic", out).backend == "synthetic"
    with pytest.raises(ValueError, match="fitted on the 'synthetic' AU back end.*'mesh'"):
        RuleBook.for_backend("mesh", out)
    # a hand-set table (no table.json) is back-end neutral
    assert RuleBook.for_backend("mesh", data_dir()).backend is None


def test_a_fitted_table_is_read_by_evaluate(fitted):
    out, _ = fitted
    book = RuleBook.load(out)
    sad = book.evaluate(AUReading({"AU01": 3.0, "AU04": 3.0, "AU15": 3.0, "AU43": 3.0}, "s", "v"))
    assert sad.dominant == "sadness" and sad.contributions["AU43"]["sadness"] > 0
    rest = book.evaluate(AUReading({}, "s", "v"))
    assert rest.dominant == "neutral" and rest.prior_share["neutral"] > 0


def test_rules_fit_command(shards, tmp_path, capsys):
    from flows.cli import main

    out = tmp_path / "cli-table"
    code = main(["rules", "fit", str(shards), "--split", "train", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "au_supports_label fitted" in printed and "valid" in printed
    card = json.loads((out / TABLE_CARD).read_text())
    assert card["command"].startswith("expllm ") and card["fit_split"] == "train"
    assert main(["rules", "fit", str(shards), "--split", "test", "--out", str(out)]) == 2
    mixed = tmp_path / "mixed"
    write_shards(
        mixed,
        pd.concat(
            [synthetic_faces(50, 2, "train"), synthetic_faces(50, 3, "train", backend="other")]
        ),
    )
    assert main(["rules", "fit", str(mixed), "--out", str(tmp_path / "x")]) == 2
    assert "several AU back ends" in capsys.readouterr().err


def _contrary_dataset(root):
    """A folder dataset whose AU table shows 4 happy faces smiling, 2 sad faces smiling (the
    AUs do not support their label) and 2 sad faces with the sadness prototype."""
    import csv

    import cv2

    rng = np.random.default_rng(0)
    rows = []
    for index in range(8):
        label = "happy" if index < 4 else "sad"
        relpath = f"{label}/img{index:03d}.png"
        (root / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / relpath), rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
        smile = index < 6
        aus = {"AU06": 2.5, "AU12": 3.5} if smile else {"AU01": 2, "AU04": 2.5, "AU15": 3}
        rows.append({"relpath": relpath, **aus})
    table = root.parent / "aus.csv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["relpath", "AU01", "AU04", "AU06", "AU12", "AU15"], restval=0)
        writer.writeheader()
        writer.writerows(rows)
    return table


def _run(tmp_path, name, **options):
    from engine.data.datasets import read_dataset
    from engine.pipeline import ExpCoTPipeline, PipelineConfig
    from engine.store.shards import ShardStore
    from engine.store.stats import shard_stats

    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        _contrary_dataset(data)
    config = PipelineConfig(
        au_backend="table", au_options=(("path", str(tmp_path / "aus.csv")),), **options
    )
    records = read_dataset(f"folder:{data}").records
    result = ExpCoTPipeline(config).run(records)
    out = tmp_path / name
    store = ShardStore(out, {"spec": f"folder:{data}", "pipeline": config.to_dict()})
    store.open()
    store.write_shard("shard-00000", result.rows, result.rejected, {"records": len(records)})
    return result, out, shard_stats(out)


def test_keep_all_or_supported(tmp_path):
    from engine.store.report import text_summary

    result, out, stats = _run(tmp_path, "all")
    assert len(result.rows) == 8 and not result.rejected
    contrary = [r for r in result.rows if not r["au_supports_label"]]
    assert len(contrary) == 2 and all(r["label"] == "sadness" for r in contrary)
    for row in contrary:  # the interpretation reasons towards sadness from the measured cues
        assert "The strongest contrary cue is AU12" in row["cot_interpretation"]
        assert "Consistent with sadness is AU06" in row["cot_interpretation"]
        assert row["verified"] and row["inferred_label"] == "sadness" and row["complete"]
    assert stats["au_supports_label_share"] == pytest.approx(0.75)
    assert stats["not_supported_dropped"] == 0 and stats["complete_share"] == 1.0
    assert stats["per_class_checks"]["sadness"]["au_supports_label"] == pytest.approx(0.5)
    summary = text_summary(out, samples=0)
    assert "AU evidence supports the label: 6 of 8 (75.0%)" in summary
    assert "does not: 2 (25.0%), kept (--keep all)" in summary
    assert "Des2Exp" in summary and "complete: 100.0%" in summary

    result, out, stats = _run(tmp_path, "supported", keep="supported")
    assert len(result.rows) == 6 and all(r["au_supports_label"] for r in result.rows)
    assert [r["stage"] for r in result.rejected] == ["keep", "keep"]
    assert "favour happiness, not sadness" in result.rejected[0]["reason"]
    assert stats["not_supported_dropped"] == 2
    assert stats["au_supports_label_share_all"] == pytest.approx(0.75)
    summary = text_summary(out, samples=0)
    assert "does not: 2 (25.0%), 2 left out by --keep supported" in summary


def test_a_table_fitted_on_another_back_end_is_refused(tmp_path, fitted):
    table, _ = fitted
    with pytest.raises(ValueError, match="'synthetic' AU back end, but this run measures AUs "):
        _run(tmp_path, "mismatch", rules=str(table))
    _, _, _ = _run(tmp_path, "hand", rules=str(data_dir()))  # hand-set: back-end neutral
    with pytest.raises(ValueError, match="--keep"):
        from engine.pipeline import PipelineConfig

        PipelineConfig(keep="some")


def test_exp_cot_refuses_a_table_of_another_back_end_before_running(tmp_path, fitted, capsys):
    from flows.cli import main

    table, _ = fitted
    out = tmp_path / "out"
    code = main(
        [
            "exp-cot",
            f"folder:{tmp_path}",
            "--out",
            str(out),
            "--au-backend",
            "table",
            "--au-option",
            f"path={tmp_path / 'none.csv'}",
            "--rules",
            str(table),
        ]
    )
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "fitted on the 'synthetic' AU back end" in err and "'table'" in err


def test_rules_fit_threshold(shards, tmp_path):
    out = tmp_path / "t1"
    card = fit_command(
        read_faces([shards]),
        [shards],
        "train",
        out,
        options=FitOptions(iterations=100, threshold=1.0),
    )
    assert RuleBook.load(out).active_threshold == 1.0 and card["active_threshold"] == 1.0
    assert card["options"]["threshold"] == 1.0
