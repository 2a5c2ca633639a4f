"""The exp_cot Prefect flow: shards, rejected records, resume, and a SIGKILLed run."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from engine.pipeline import PipelineConfig
from engine.store.shards import MANIFEST, REJECTED_DIR, STATS

REPO = Path(__file__).resolve().parents[1]
LANDMARKER = "models/face_landmarker.task"


def make_table_dataset(root: Path, count: int = 30) -> Path:
    """A folder dataset of small PNGs and an AU table keyed by relpath (happy vs sad faces)."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        label = "happy" if index % 2 else "sad"
        relpath = f"{label}/img{index:03d}.png"
        (root / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / relpath), rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
        aus = (
            {"AU06": 2.5, "AU12": 3.5} if label == "happy" else {"AU01": 2, "AU04": 2.5, "AU15": 3}
        )
        rows.append({"relpath": relpath, **aus})
    table = root.parent / "aus.csv"
    columns = ["relpath", "AU01", "AU04", "AU06", "AU12", "AU15"]
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, restval=0.0)
        writer.writeheader()
        writer.writerows(rows)
    return table


def test_flow_writes_shards_and_resumes(tmp_path, prefect_harness):
    from flows.exp_cot import exp_cot

    data = tmp_path / "data"
    data.mkdir()
    table = make_table_dataset(data)
    config = PipelineConfig(au_backend="table", au_options=(("path", str(table)),))
    out = tmp_path / "out"
    stats = exp_cot(spec=f"folder:{data}", out=str(out), config=config, shard_size=8)
    assert stats["records"] == 30 and stats["rejected"] == 0
    assert stats["per_class"]["happiness"] == 15 and stats["per_class"]["sadness"] == 15
    assert stats["verified_share"] == 1.0 and stats["faithfulness_min"] == 1.0
    frame = pd.read_parquet(out)
    assert len(frame) == 30 and frame["record_id"].is_unique
    assert (frame["dominant_emotion"] == frame["label"]).all()
    manifest = json.loads((out / MANIFEST).read_text())["config"]
    assert manifest["pipeline"]["au_backend"] == "table"
    assert "precomputed table" in manifest["au_licence"]
    assert sorted(p.name for p in out.glob("shard-*.parquet")) == [
        f"shard-0000{i}.parquet" for i in range(4)
    ]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    again = exp_cot(spec=f"folder:{data}", out=str(out), config=config, shard_size=8)
    assert again["records"] == 30
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")} == before
    with pytest.raises(Exception, match="another configuration"):
        exp_cot(spec=f"folder:{data}", out=str(out), config=config, shard_size=5)


def test_bad_inputs_are_rejected_and_the_run_goes_on(
    tmp_path, ferplus_dir, shared_dir, prefect_harness
):
    from flows.exp_cot import exp_cot

    data = tmp_path / "data"
    good = sorted((ferplus_dir / "FER2013Test").glob("*.png"))[:6]
    for index, source in enumerate(good):
        (data / "happy").mkdir(parents=True, exist_ok=True)
        (data / "happy" / f"good{index}.png").write_bytes(source.read_bytes())
    bad = data / "sad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("not an image at all")
    (bad / "truncated.png").write_bytes(good[0].read_bytes()[:200])
    cv2.imwrite(str(bad / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(bad / "blank.png"), np.full((96, 96, 3), 127, np.uint8))
    config = PipelineConfig(
        au_backend="blendshapes",
        au_options=(("model_path", str(shared_dir / LANDMARKER)),),
        face_mode="aligned",
    )
    out = tmp_path / "out"
    stats = exp_cot(spec=f"folder:{data}", out=str(out), config=config, shard_size=4)
    rejected = pd.read_parquet(out / REJECTED_DIR).set_index("image_path")
    for name in ("empty", "text", "truncated", "tiny"):
        reason = rejected.loc[f"sad/{name}.png", "reason"]
        assert rejected.loc[f"sad/{name}.png", "stage"] == "read", reason
        assert f"sad/{name}.png" in reason
    assert rejected.loc["sad/blank.png", "stage"] == "aus"
    accepted = pd.read_parquet(out)
    assert stats["records"] == len(accepted) >= 5
    assert stats["records"] + stats["rejected"] == 11
    assert json.loads((out / STATS).read_text())["rejected_by_stage"]["read"] == 4


def test_label_rows_naming_missing_files_are_rejected(tmp_path, ferplus_dir, prefect_harness):
    from flows.exp_cot import exp_cot

    lines = (ferplus_dir / "FER2013Test" / "label.csv").read_text().splitlines()[:6]
    test_dir = tmp_path / "ferplus" / "FER2013Test"
    test_dir.mkdir(parents=True)
    for line in lines[:5]:
        name = line.split(",")[0]
        (test_dir / name).write_bytes((ferplus_dir / "FER2013Test" / name).read_bytes())
    missing = lines[5].split(",")[0]
    (test_dir / "label.csv").write_text("\n".join(lines) + "\n")
    for split in ("Train", "Valid"):
        (tmp_path / "ferplus" / f"FER2013{split}").mkdir()
        (tmp_path / "ferplus" / f"FER2013{split}" / "label.csv").write_text("")
    data = tmp_path / "aus.csv"
    data.write_text("image,AU12\n" + "".join(f"{line.split(',')[0]},0.5\n" for line in lines))
    config = PipelineConfig(au_backend="table", au_options=(("path", str(data)),))
    out = tmp_path / "out"
    exp_cot(
        spec=f"ferplus:{tmp_path / 'ferplus'}",
        out=str(out),
        split="test",
        config=config,
        protocol="plurality",
    )
    rejected = pd.read_parquet(out / REJECTED_DIR)
    assert rejected["image_path"].tolist() == [f"FER2013Test/{missing}"]
    assert rejected["stage"].tolist() == ["read"]
    assert "not found" in rejected["reason"].item() or "missing" in rejected["reason"].item()
    assert len(pd.read_parquet(out)) == 5


def _run_cli(args, env, log: Path):
    """Start the CLI in its own process group, output to ``log`` (a pipe could fill and block)."""
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *args],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.slow
def test_sigkilled_run_resumes_without_loss_or_duplicates(tmp_path, ferplus_dir, shared_dir):
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "EXPLLM_MODEL_DIR": str(shared_dir / "models"),
    }
    common = [
        "exp-cot",
        f"ferplus:{ferplus_dir}",
        "--split",
        "test",
        "--limit",
        "240",
        "--shard-size",
        "20",
        "--au-backend",
        "blendshapes",
        "--workers",
        "2",
        "--quiet",
    ]
    killed_out = tmp_path / "killed"
    log = tmp_path / "cli.log"
    proc = _run_cli([*common, "--out", str(killed_out)], env, log)
    deadline = time.time() + 240
    while time.time() < deadline and not list(killed_out.glob("shard-*.parquet")):
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = json.loads((killed_out / MANIFEST).read_text())["shards"]
    assert 0 < len(finished_before) < 12, "the kill should land mid-run"
    resumed = _run_cli([*common, "--out", str(killed_out)], env, log)
    assert resumed.wait(timeout=600) == 0, log.read_text()[-3000:]
    clean_out = tmp_path / "clean"
    clean = _run_cli([*common, "--out", str(clean_out)], env, log)
    assert clean.wait(timeout=600) == 0, log.read_text()[-3000:]

    def records(folder):
        frame = pd.read_parquet(folder).drop(columns=["seconds"])
        return frame.sort_values("record_id").reset_index(drop=True)

    got, want = records(killed_out), records(clean_out)
    assert got["record_id"].is_unique and len(got) == len(want)
    pd.testing.assert_frame_equal(got, want)
    manifest = json.loads((killed_out / MANIFEST).read_text())["shards"]
    for name, entry in finished_before.items():
        assert manifest[name] == entry, "finished shards must not be rewritten"


def test_dask_task_runner_on_a_local_cluster(tmp_path, prefect_harness):
    pytest.importorskip("prefect_dask")
    from flows.exp_cot import exp_cot, task_runner_for

    data = tmp_path / "data"
    data.mkdir()
    table = make_table_dataset(data, count=12)
    config = PipelineConfig(au_backend="table", au_options=(("path", str(table)),))
    run = exp_cot.with_options(task_runner=task_runner_for("dask", 2))
    stats = run(spec=f"folder:{data}", out=str(tmp_path / "out"), config=config, shard_size=4)
    assert stats["records"] == 12
    assert len(pd.read_parquet(tmp_path / "out")) == 12
